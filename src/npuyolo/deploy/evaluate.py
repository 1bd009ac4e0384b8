"""Evaluate what is deployed: an ONNX model in ONNX Runtime, decoded on the host, scored by Ultralytics' metrics.

The loop is Ultralytics' own validator (dataset, letterbox, NMS, matching, AP) with only the forward
pass swapped, so an FP32 export and the PyTorch model it came from are scored identically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import torch

from npuyolo.deploy.decode import decode_npu_outputs
from npuyolo.deploy.export import onnx_metadata
from npuyolo.errors import NpuyoloError
from npuyolo.paths import file_problem
from npuyolo.ultra import DetectionValidator, check_det_dataset

Predict = Callable[[torch.Tensor], torch.Tensor]  # [B, 3, H, W] in [0, 1] -> [B, 4 + nc, anchors]


class DeployError(NpuyoloError, ValueError):
    """An artefact or data set the deploy tools cannot use."""


def check_metadata(path, meta: dict[str, str]) -> None:
    """npuyolo's metadata must parse as it was written; a hand-edited or damaged file is one clear error."""
    try:
        size = json.loads(meta["imgsz"])
        names = json.loads(meta["names"])
        strides = json.loads(meta.get("strides", "[8, 16, 32]"))
        ok = (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 32 for v in size)
              and isinstance(names, dict) and all(str(k).lstrip("-").isdigit() for k in names)
              and isinstance(strides, list) and strides and int(meta.get("reg_max", 16)) > 0)
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise DeployError(f"{path}: damaged npuyolo metadata (imgsz/names/strides); export it again with `npuyolo export`")


def max_threads() -> int:
    """More intra-op threads than 4 per core only slows ONNX Runtime down; 100000 of them hung the machine."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads()):
        raise DeployError(f"--threads must be 1..{max_threads()} (4 per CPU core), got {threads!r}")
    return threads


def session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    check_threads(threads)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_predictor(path: str | Path, threads: int | None = None) -> tuple[Predict, dict]:
    """A batch-agnostic predict function for a static batch-1 export of either head."""
    meta = onnx_metadata(path)
    if "npuyolo_head" not in meta:
        raise DeployError(f"{path}: no npuyolo metadata; export it with `npuyolo export` (or `deploy quantize`)")
    check_metadata(path, meta)
    sess = session(path, threads)
    outputs = [o.name for o in sess.get_outputs()]
    head = meta["npuyolo_head"]
    if head == "npu" and len(outputs) % 2:
        raise DeployError(f"{path}: expected box/score output pairs for the NPU head, got {outputs}")
    if head != "npu" and len(outputs) != 1:
        raise DeployError(f"{path}: expected one output for the Ultralytics head, got {outputs}")
    strides, reg_max = json.loads(meta["strides"]), int(meta["reg_max"])
    sigmoid_in_graph = meta.get("class_sigmoid", "in_graph") == "in_graph"
    name = sess.get_inputs()[0].name

    def predict(images: torch.Tensor) -> torch.Tensor:
        out = []
        for im in images.numpy().astype(np.float32):
            raw = sess.run(None, {name: im[None]})
            out.append(decode_npu_outputs(raw, strides, reg_max, sigmoid_in_graph) if head == "npu" else raw[0])
        return torch.from_numpy(np.concatenate(out))

    return predict, meta


def torch_predictor(model: torch.nn.Module) -> Predict:
    model = model.float().eval()

    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        y = model(images)
        return y[0] if isinstance(y, (tuple, list)) else y

    return predict


def validate(predict: Predict, data: str | Path, imgsz: int, names: dict[int, str], batch: int = 8,
             conf: float = 0.001, iou: float = 0.7) -> dict:
    """P, R, mAP50, mAP50-95 and per-class values on the val split, Ultralytics' validator doing the scoring."""
    data = Path(data)
    if not data.is_file():
        raise DeployError(f"data yaml not found: {data}")
    v = DetectionValidator(args=dict(data=str(data), imgsz=imgsz, batch=batch, conf=conf, iou=iou, rect=False, plots=False,
                                     split="val", workers=0, save_json=False, verbose=False, task="detect", mode="val"))
    v.data = check_det_dataset(str(data))
    if v.data["nc"] != len(names):
        raise DeployError(f"model predicts {len(names)} classes but {data} has {v.data['nc']}")
    v.device, v.stride, v.names = torch.device("cpu"), 32, names
    v.dataloader = v.get_dataloader(v.data["val"], batch)
    v.init_metrics(SimpleNamespace(names=names))
    for b in v.dataloader:
        b = v.preprocess(b)
        v.update_metrics(v.postprocess(predict(b["img"])), b)
    stats = v.get_stats()
    per_class = {}
    for i, c in enumerate(v.metrics.ap_class_index):
        p, r, ap50, ap = v.metrics.class_result(i)
        per_class[names[int(c)]] = {"precision": float(p), "recall": float(r), "map50": float(ap50), "map50_95": float(ap)}
    return {
        "precision": float(stats["metrics/precision(B)"]), "recall": float(stats["metrics/recall(B)"]),
        "map50": float(stats["metrics/mAP50(B)"]), "map50_95": float(stats["metrics/mAP50-95(B)"]),
        "images": len(v.dataloader.dataset), "imgsz": imgsz, "per_class": per_class,
    }


def evaluate_onnx(path: str | Path, data: str | Path, batch: int = 8, threads: int | None = None) -> dict:
    path = Path(path)
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise DeployError(f"artefact not found: {path}" if why == "not found" else f"{path} {why}")
    predict, meta = onnx_predictor(path, threads)
    names = {int(k): v for k, v in json.loads(meta["names"]).items()}
    imgsz = json.loads(meta["imgsz"])[0]
    return {"artefact": str(path), "head": meta["npuyolo_head"], **validate(predict, data, imgsz, names, batch)}
