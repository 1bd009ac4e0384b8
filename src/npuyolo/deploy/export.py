"""Static-shape ONNX export for either head, with the metadata the host decode needs."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Literal

import onnx
import torch

from npuyolo.deploy.npu_head import NPUHeadModel, output_names
from npuyolo.offline import install_guards

install_guards()

from ultralytics.nn.modules import Detect  # noqa: E402
from ultralytics.nn.tasks import load_checkpoint  # noqa: E402

Head = Literal["npu", "ultralytics"]
OPSET = 17


def load_weights(path: str | Path) -> torch.nn.Module:
    """A DetectionModel from a .pt checkpoint (EMA weights when present), in float32 on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    model, _ = load_checkpoint(str(path), device="cpu")
    if hasattr(model, "student_model"):  # a distillation checkpoint: the student is the model
        model = model.student_model
    return model.float()


def default_head(model: torch.nn.Module) -> Head:
    return (getattr(model, "yaml", {}) or {}).get("npuyolo", {}).get("head", "ultralytics")


def export_onnx(model: torch.nn.Module, out: str | Path, imgsz: int = 640, head: Head | None = None, simplify: bool = True,
                class_sigmoid: bool = True) -> Path:
    """Write a batch-1, static-shape ONNX file; `head='npu'` cuts the graph before DFL and decode.

    `class_sigmoid=False` (NPU head only) leaves the class sigmoid to the host decode, for targets without one.
    """
    head = head or default_head(model)
    model = copy.deepcopy(model).float().eval()
    model.fuse(verbose=False) if hasattr(model, "fuse") else None
    detect = model.model[-1]
    if not isinstance(detect, Detect):
        raise ValueError(f"last layer is {type(detect).__name__}, not a Detect head")
    strides = [int(s) for s in detect.stride.tolist()]
    if head == "npu":
        net, outputs = NPUHeadModel(model, class_sigmoid=class_sigmoid), output_names(strides)
    else:
        detect.export, detect.format, detect.dynamic = True, "onnx", False
        net, outputs = model, ["output0"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    im = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net(im)  # builds anchors; also fails early on shape errors
        torch.onnx.export(net, im, str(out), opset_version=OPSET, input_names=["images"], output_names=outputs, dynamo=False)
    proto = onnx.load(str(out))
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    names = getattr(model, "names", None) or {i: f"class{i}" for i in range(detect.nc)}
    meta = {
        "npuyolo_head": head,
        "variant": (model.yaml.get("npuyolo") or {}).get("variant", "ultralytics"),
        "imgsz": json.dumps([imgsz, imgsz]),
        "strides": json.dumps(strides),
        "reg_max": str(detect.reg_max),
        "nc": str(detect.nc),
        "class_sigmoid": "in_graph" if head != "npu" or class_sigmoid else "host",
        "names": json.dumps({int(k): v for k, v in names.items()}),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def onnx_metadata(path: str | Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
