"""manifest.json of a bundle: everything the board-side runner and the C post-processor read, as typed records.

The runner (`npuyolo_infer.py`) trusts nothing it is not told here: input size, strides, reg_max, class names,
thresholds, the input contract and each output's layout and quantization. `manifest_sha256` is the sha256 of the rest
in canonical JSON, so a hand edit is refused on the board instead of silently giving wrong boxes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

__all__ = ["FORMAT", "BundleManifest", "InputSpec", "OutputSpec", "PlanFigures", "manifest_checksum"]

FORMAT = "npuyolo-bundle/1"


def manifest_checksum(manifest: dict) -> str:
    """The same canonical hash as the runner's `manifest_checksum` (keep the two identical)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


@dataclass(frozen=True)
class InputSpec:
    """How the runtime wants the letterboxed image. `quantization`: "runtime" when the model's input is integer and
    its scale/zero point are read from the runtime (TFLite), else None."""

    name: str
    shape: list[int]
    layout: str  # NCHW | NHWC
    channels: str  # RGB | BGR
    scale: str  # "0-1" | "0-255"
    dtype: str  # float32 | uint8 | int8
    quantization: str | None = None
    letterbox: dict = field(default_factory=lambda: {"pad": 114, "centre": True, "auto": False, "scaleup": True,
                                                     "size": "long side to imgsz, the other ceil(side * imgsz / long side)"
                                                             " (Ultralytics' training and validation loader)",
                                                     "resize": "bilinear (OpenCV INTER_LINEAR)"})


@dataclass(frozen=True)
class OutputSpec:
    """One output as the reference ONNX graph gives it. `role`: box (4*reg_max DFL logits) | cls (class scores) |
    decoded (Ultralytics' [1, 4 + nc, anchors]); `quantization`: None (float), or "runtime" (read from the runtime:
    TFLite's int8 outputs, which may also come NHWC and reordered: the runner matches them by shape)."""

    name: str
    shape: list[int]
    dtype: str
    role: str
    stride: int | None
    layout: str = "NCHW"
    quantization: str | None = None


@dataclass(frozen=True)
class PlanFigures:
    """What `deploy plan` measured for the shipped artefact: what to expect on the board."""

    run_id: int
    run_name: str
    target: str
    candidate: str
    plan_json: str
    conf: float
    fp32_map50: float
    int8_map50: float
    int8_map50_at_conf: float
    retention_map50: float | None
    int8_scored_by: str  # "npuyolo QDQ (ONNX Runtime)" or the vendor's runtime
    share_nodes: float
    off_npu: int
    npu_ms: float | None
    compiler: str | None


@dataclass(frozen=True)
class BundleManifest:
    npuyolo_version: str
    target: str
    runtime: str  # onnxruntime | rknnlite | tflite | picamera2 (IMX500)
    artefact: dict  # file, sha256, bytes, kind, source
    head: str  # npu | ultralytics (IMX500: Ultralytics' head, then the sensor's NMS)
    imgsz: int
    strides: list[int]
    reg_max: int
    class_sigmoid: str  # in_graph | host
    names: dict[str, str]
    conf: float
    iou: float
    max_det: int
    input: InputSpec
    outputs: list[OutputSpec]
    plan: PlanFigures | None = None
    format: str = FORMAT
    device: dict | None = None  # IMX500: the sensor's NMS (op, thresholds), the host model and the package to convert

    def as_dict(self) -> dict:
        d = asdict(self)
        d["manifest_sha256"] = manifest_checksum(d)
        return d
