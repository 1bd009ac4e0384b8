"""`<compiled file>.npuyolo.json`: what scoring a compiled model later needs (`deploy eval`, deploy/eval/vendor.py).

A .rknn file cannot be run by RKNN's simulator (only a fresh build can), and a Vela build's TFLite file does not say
which ONNX file it came from. So each build records, beside the file it writes, the ONNX file the compiler was given
and, for RKNN, the target, calibration list and disabled rules that rebuild it. Paths are relative to its folder.
It also records the built file's size and sha256: RKNN's simulator rebuilds from the manifest and never reads the
.rknn file, so `deploy eval` refuses a file that changed since (cut to 10 bytes, it would score like the build).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from npuyolo.paths import write_text

__all__ = ["MANIFEST_SUFFIX", "file_digest", "manifest_path", "write_manifest"]

MANIFEST_SUFFIX = ".npuyolo.json"


def manifest_path(compiled: Path) -> Path:
    return compiled.with_name(compiled.name + MANIFEST_SUFFIX)


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def write_manifest(compiled: Path, kind: str, onnx: Path, **extra) -> Path:
    folder = compiled.parent.resolve()

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p)

    size, sha256 = file_digest(compiled)
    record = {"kind": kind, "onnx": rel(onnx), "size": size, "sha256": sha256,
              **{k: rel(v) if isinstance(v, Path) else v for k, v in extra.items()}}
    return write_text(manifest_path(compiled), json.dumps(record, indent=1) + "\n")
