"""An ONNX file's npuyolo metadata: read, written, recognised. Below every stage that reads ONNX files (npu, compilers,
deploy), so none of them imports the exporter to learn what a file is."""

from __future__ import annotations

from pathlib import Path

import onnx

from npuyolo.errors import NpuyoloError
from npuyolo.paths import file_problem

__all__ = ["ExportError", "onnx_metadata", "set_metadata", "written_by_npuyolo"]


class ExportError(NpuyoloError, ValueError):
    """A model or setting that cannot be exported (bad image size, unknown head...), or an ONNX file that cannot be read."""


def written_by_npuyolo(path: Path) -> bool:
    """An ONNX file npuyolo wrote: its metadata has npuyolo's keys (`npuyolo_head` from export, `npuyolo_rewrite`)."""
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    try:
        return any(k in ("npuyolo_head", "npuyolo_rewrite") for k in onnx_metadata(path))
    except ExportError:
        return False


def set_metadata(proto: onnx.ModelProto, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata; a missing or unreadable file is one clear error."""
    path = Path(path)
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise ExportError(f"ONNX file not found: {path}" if why == "not found" else f"{path} {why}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends: not an ONNX model at all
        raise ExportError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e
    return {p.key: p.value for p in proto.metadata_props}
