"""Static-shape ONNX export for either head, with the metadata the host decode needs."""

from __future__ import annotations

import copy
import json
import threading
import warnings
from pathlib import Path
from typing import Literal

import onnx
import torch

from npuyolo.deploy.npu_head import NPUHeadModel, output_names
from npuyolo.npu.onnxfile import ExportError, onnx_metadata, set_metadata, written_by_npuyolo
from npuyolo.errors import storage_error
from npuyolo.paths import atomic_path, check_output_file
from npuyolo.ultra import Detect
from npuyolo.variants.checkpoint import default_head, load_weights, model_meta

__all__ = ["MAX_IMGSZ", "ExportError", "check_imgsz", "default_head", "export_onnx", "load_weights", "onnx_metadata", "set_metadata", "written_by_npuyolo"]

Head = Literal["npu", "ultralytics"]
OPSET = 17
# torch.onnx.export keeps process-wide state (GLOBALS.in_onnx_export) and asserts it is not re-entered: two threads
# exporting at once (Workspace.export from a thread pool) fail. One export at a time per process, then.
_EXPORT_LOCK = threading.Lock()


MAX_IMGSZ = 4096  # px per side, as `npu compile` takes (compilers.compile.MAX_SIDE): 16384 px would allocate many GB


def check_imgsz(imgsz: int, param: str = "imgsz", error: type[Exception] = ExportError) -> int:
    """The one size check of every command and API method (export, npu check, quantize, plan, predict): a multiple of
    32 from 32 to MAX_IMGSZ, refused before anything is allocated for it."""
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 32 or imgsz % 32:
        raise error(f"{param} must be a positive multiple of 32 (the model's largest stride), got {imgsz!r}", param=param)
    if imgsz > MAX_IMGSZ:
        raise error(f"{param} must be at most {MAX_IMGSZ} px, got {imgsz} (a {imgsz} px input would need many GB)", param=param)
    return imgsz


def export_onnx(model: torch.nn.Module, out: str | Path, imgsz: int = 640, head: Head | None = None, simplify: bool = True,
                class_sigmoid: bool = True, force: bool = False, registry_path: str | Path | None = None) -> Path:
    """Write a batch-1, static-shape ONNX file; `head='npu'` cuts the graph before DFL and decode.

    `class_sigmoid=False` (NPU head only) leaves the class sigmoid to the host decode, for targets without one.
    `out` may replace an earlier npuyolo ONNX file; anything else already there (or a symlink) only with `force`,
    and never the registry (see `npuyolo.paths.check_output_file`).
    """
    check_imgsz(imgsz)
    head = head or default_head(model)
    if head not in ("npu", "ultralytics"):
        raise ExportError(f"head must be npu or ultralytics, got {head!r}", param="head")
    model = copy.deepcopy(model).float().eval()
    model.fuse(verbose=False) if hasattr(model, "fuse") else None
    detect = model.model[-1]
    if not isinstance(detect, Detect):
        raise ExportError(f"last layer is {type(detect).__name__}, not a Detect head")
    strides = [int(s) for s in detect.stride.tolist()]
    if head == "npu":
        net, outputs = NPUHeadModel(model, class_sigmoid=class_sigmoid), output_names(strides)
    else:
        detect.export, detect.format, detect.dynamic = True, "onnx", False
        net, outputs = model, ["output0"]
    out = check_out_file(out, force=force, registry_path=registry_path)
    im = torch.zeros(1, 3, imgsz, imgsz)
    try:
        with _EXPORT_LOCK, atomic_path(out) as tmp:  # a killed export never leaves a metadata-less file under the final name
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net(im)  # builds anchors; also fails early on shape errors
                torch.onnx.export(net, im, str(tmp), opset_version=OPSET, input_names=["images"], output_names=outputs, dynamo=False)
            proto = onnx.load(str(tmp))
            if simplify:
                import onnxslim

                proto = onnxslim.slim(proto)
            from npuyolo.npu.normalize import slices_to_split

            slices_to_split(proto)  # C3k2's chunk as one Split, whatever this torch's exporter wrote
            names = getattr(model, "names", None) or {i: f"class{i}" for i in range(detect.nc)}
            meta = {
                "npuyolo_head": head,
                "variant": model_meta(model).get("variant", "ultralytics"),
                "imgsz": json.dumps([imgsz, imgsz]),
                "strides": json.dumps(strides),
                "reg_max": str(detect.reg_max),
                "nc": str(detect.nc),
                "class_sigmoid": "in_graph" if head != "npu" or class_sigmoid else "host",
                "names": json.dumps({int(k): v for k, v in names.items()}),
            }
            set_metadata(proto, meta)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    except OSError as e:  # full disk, a path the OS refuses
        said = storage_error(e, out, writing=True)  # "cannot write PATH: disk full": the place, not a flag the caller
        if said is not None:                        # may never have given (npu check, quantize and plan have no --out)
            raise said from None
        raise ExportError(f"out {out}: cannot write ({e.strerror or e})", param="out") from None
    return out


def check_out_file(out: str | Path, force: bool = False, registry_path: str | Path | None = None) -> Path:
    """An output .onnx path that may be written: `npuyolo.paths.check_output_file` with ONNX files npuyolo wrote as ours."""
    return check_output_file(out, registry_path=registry_path, force=force, ours=written_by_npuyolo, label="out", error=ExportError)
