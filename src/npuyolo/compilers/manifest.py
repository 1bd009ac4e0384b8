"""`<compiled file>.npuyolo.json`: what scoring a compiled model later needs (`deploy eval`, deploy/vendor.py).

A .rknn file cannot be run by RKNN's simulator (only a fresh build can), and a Vela build's TFLite file does not say
which ONNX file it came from. So each build records, beside the file it writes, the ONNX file the compiler was given
and, for RKNN, the target, calibration list and disabled rules that rebuild it. Paths are relative to its folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from npuyolo.paths import write_text

__all__ = ["MANIFEST_SUFFIX", "manifest_path", "write_manifest"]

MANIFEST_SUFFIX = ".npuyolo.json"


def manifest_path(compiled: Path) -> Path:
    return compiled.with_name(compiled.name + MANIFEST_SUFFIX)


def write_manifest(compiled: Path, kind: str, onnx: Path, **extra) -> Path:
    folder = compiled.parent.resolve()

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p)

    record = {"kind": kind, "onnx": rel(onnx), **{k: rel(v) if isinstance(v, Path) else v for k, v in extra.items()}}
    return write_text(manifest_path(compiled), json.dumps(record, indent=1) + "\n")
