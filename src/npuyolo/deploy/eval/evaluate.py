"""Evaluate what is deployed: an ONNX model in ONNX Runtime, decoded on the host, scored by Ultralytics' metrics.

The loop is Ultralytics' own validator (dataset, letterbox, NMS, matching, AP) with only the forward
pass swapped, so an FP32 export and the PyTorch model it came from are scored identically.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from npuyolo.data.check import load_data_yaml
from npuyolo.deploy.decode import decode_npu_outputs
from npuyolo.deploy.export import onnx_metadata
from npuyolo.deploy.runtime import DeployError, session
from npuyolo.paths import file_problem
from npuyolo.stats.matched import MatchedStats
from npuyolo.ultra import DetectionValidator, check_det_dataset

Predict = Callable[[torch.Tensor], torch.Tensor]  # [B, 3, H, W] in [0, 1] -> [B, 4 + nc, anchors]


def check_metadata(path, meta: dict[str, str]) -> None:
    """npuyolo's metadata must parse as it was written; a hand-edited or damaged file is one clear error.

    Strides must be positive whole numbers that divide the input size and reg_max a positive whole number: the
    host decode multiplies and reshapes by them, so anything else ends in a NumPy error or silently wrong boxes.
    """
    def positive_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    try:
        size = json.loads(meta["imgsz"])
        names = json.loads(meta["names"])
        strides = json.loads(meta.get("strides", "[8, 16, 32]"))
        reg_max = json.loads(meta.get("reg_max", "16"))
        ok = (isinstance(size, list) and len(size) == 2 and all(positive_int(v) and v >= 32 for v in size)
              and isinstance(names, dict) and all(str(k).lstrip("-").isdigit() for k in names)
              and isinstance(strides, list) and strides and all(positive_int(s) and size[0] % s == 0 == size[1] % s for s in strides)
              and positive_int(reg_max))
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise DeployError(f"{path}: damaged npuyolo metadata (imgsz/names/strides/reg_max); export it again with `npuyolo export`")


@dataclass
class Deployable:
    """A checked npuyolo ONNX file in an ONNX Runtime session, with the metadata the host decode needs, parsed."""

    path: Path
    sess: ort.InferenceSession
    meta: dict[str, str]
    head: str
    imgsz: int
    strides: list[int]
    reg_max: int
    names: dict[int, str]
    sigmoid_in_graph: bool
    input_name: str

    def decode(self, raw: list[np.ndarray]) -> np.ndarray:
        """Session outputs -> [B, 4 + nc, anchors], as Ultralytics' Detect gives them."""
        return decode_npu_outputs(raw, self.strides, self.reg_max, self.sigmoid_in_graph) if self.head == "npu" else raw[0]


def _ort_message(e: Exception) -> str:
    """ONNX Runtime's reason, without its '[ONNXRuntimeError] : 1 : FAIL : Load model from X failed:' preamble."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from .* failed:", "", text).strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _dims(shape) -> list:
    return [d if isinstance(d, int) else "?" for d in shape]


def _fits(dims: list, expected: list[int]) -> bool:
    """A tensor shape matches the expected one; a symbolic dimension ('?') matches anything."""
    return len(dims) == len(expected) and all(d in (e, "?") for d, e in zip(dims, expected))


def load_deployable(path: str | Path, threads: int | None = None) -> Deployable:
    """The one loader for an ONNX file to run (eval, bench, predict): every way it can be unusable is one DeployError.

    Checks, in order: the file and npuyolo's metadata (export.onnx_metadata, check_metadata); that ONNX Runtime
    can load it (external data outside its folder, cycles, dangling inputs, unsupported opsets are refused there);
    then that the graph is what the metadata describes: one 1x3xSxS input at the recorded size, and for the NPU
    head one box/score pair per stride with 4*reg_max box channels on the stride's grid.
    """
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"artefact not found: {path}")
    meta = onnx_metadata(path)
    if "npuyolo_head" not in meta:
        raise DeployError(f"{path}: no npuyolo metadata; export it with `npuyolo export` (or `deploy quantize`)")
    head = meta["npuyolo_head"]
    if head not in ("npu", "ultralytics"):
        raise DeployError(f"{path}: damaged npuyolo metadata (unknown head {head[:40]!r}); export it again with `npuyolo export`")
    check_metadata(path, meta)
    try:
        sess = session(path, threads)
    except Exception as e:  # ONNX Runtime's own exception types (Fail, InvalidGraph, InvalidArgument...) have no common base
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        raise DeployError(f"{path}: ONNX Runtime cannot load it ({_ort_message(e)})") from None
    imgsz = json.loads(meta["imgsz"])[0]
    strides, reg_max = json.loads(meta.get("strides", "[8, 16, 32]")), json.loads(meta.get("reg_max", "16"))
    names = {int(k): v for k, v in json.loads(meta["names"]).items()}
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1:
        raise DeployError(f"{path}: expected one image input, got {len(inputs)} ({', '.join(i.name for i in inputs)[:80]})")
    expected = [1, 3, imgsz, imgsz]
    if not _fits(_dims(inputs[0].shape), expected):
        raise DeployError(f"{path}: its input is {'x'.join(map(str, _dims(inputs[0].shape)))} but its metadata says "
                          f"{'x'.join(map(str, expected))}; export it again with `npuyolo export`")
    if head == "npu":
        nc = int(meta["nc"]) if meta.get("nc", "").isdigit() else len(names)
        want = [shape for s in strides for shape in ([1, 4 * reg_max, imgsz // s, imgsz // s], [1, nc, imgsz // s, imgsz // s])]
        got = [_dims(o.shape) for o in outputs]
        if len(got) != len(want) or not all(_fits(g, w) for g, w in zip(got, want)):
            raise DeployError(f"{path}: its outputs do not match its metadata (expected box/score output pairs for strides"
                              f" {strides}, reg_max {reg_max}, {nc} classes); export it again with `npuyolo export`")
    elif len(outputs) != 1:
        raise DeployError(f"{path}: expected one output for the Ultralytics head, got {[o.name for o in outputs]}")
    return Deployable(path, sess, meta, head, imgsz, strides, reg_max, names,
                      meta.get("class_sigmoid", "in_graph") == "in_graph", inputs[0].name)


def onnx_predictor(path: str | Path, threads: int | None = None) -> tuple[Predict, dict]:
    """A batch-agnostic predict function for a static batch-1 export of either head."""
    model = load_deployable(path, threads)

    def predict(images: torch.Tensor) -> torch.Tensor:
        out = []
        for im in images.numpy().astype(np.float32):
            out.append(model.decode(model.sess.run(None, {model.input_name: im[None]})))
        return torch.from_numpy(np.concatenate(out))

    return predict, model.meta


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
    return validate_matched(predict, data, imgsz, names, batch, conf, iou)[0]


def validate_matched(predict: Predict, data: str | Path, imgsz: int, names: dict[int, str], batch: int = 8,
                     conf: float = 0.001, iou: float = 0.7) -> tuple[dict, MatchedStats]:
    """`validate`, and the per-image matched statistics it was computed from (for intervals, without re-running).

    The validator gets a temporary folder of its own: left to itself it creates `./runs/detect/val-N` in the working
    folder on every call (empty, since plots and JSON are off)."""
    data = Path(data)
    if not data.is_file():
        raise DeployError(f"data yaml not found: {data}")

    load_data_yaml(data)  # bounded parse first: Ultralytics' own loader would expand an alias bomb
    with tempfile.TemporaryDirectory(prefix="npuyolo-val-") as scratch:
        v = DetectionValidator(save_dir=Path(scratch),
                               args=dict(data=str(data), imgsz=imgsz, batch=batch, conf=conf, iou=iou, rect=False, plots=False,
                                         split="val", workers=0, save_json=False, verbose=False, task="detect", mode="val"))
        v.data = check_det_dataset(str(data))
        if v.data["nc"] != len(names):
            raise DeployError(f"model predicts {len(names)} classes but {data} has {v.data['nc']}")
        v.device, v.stride, v.names = torch.device("cpu"), 32, names
        v.dataloader = v.get_dataloader(v.data["val"], batch)
        v.init_metrics(SimpleNamespace(names=names))
        files: list[str] = []
        for b in v.dataloader:
            files.extend(b["im_file"])
            b = v.preprocess(b)
            v.update_metrics(v.postprocess(predict(b["img"])), b)
        matched = MatchedStats.from_validator(v.metrics.stats, files, names, "letterbox",
                                              meta={"imgsz": imgsz, "conf": conf, "iou": iou, "data": str(data)})
        stats = v.get_stats()  # clears v.metrics.stats
    per_class = {}
    for i, c in enumerate(v.metrics.ap_class_index):
        p, r, ap50, ap = v.metrics.class_result(i)
        per_class[names[int(c)]] = {"precision": float(p), "recall": float(r), "map50": float(ap50), "map50_95": float(ap)}
    return {
        "precision": float(stats["metrics/precision(B)"]), "recall": float(stats["metrics/recall(B)"]),
        "map50": float(stats["metrics/mAP50(B)"]), "map50_95": float(stats["metrics/mAP50-95(B)"]),
        "images": len(v.dataloader.dataset), "imgsz": imgsz, "per_class": per_class,
    }, matched


SCORES = ("precision", "recall", "map50", "map50_95")


@dataclass(frozen=True, kw_only=True)
class FileScore:
    """One file scored on a data set's val split: P, R, mAP50, mAP50-95 over `images` at `imgsz`, per class. The fields
    `OnnxScore` and `EvalResult` share, stated once (keyword-only, so a subclass may add fields with or without
    defaults)."""

    artefact: str
    head: str  # "npu" (cut, host decode) or "ultralytics"
    precision: float
    recall: float
    map50: float
    map50_95: float
    images: int
    imgsz: int
    per_class: dict[str, dict[str, float]]


@dataclass(frozen=True, kw_only=True)
class OnnxScore(FileScore):
    """An ONNX file scored on a data set's val split (`evaluate_onnx`): P, R, mAP50, mAP50-95, per class."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class EvalResult(FileScore):
    """What `deploy eval` found for one artefact (`services.deploy.evaluate`).

    For an ONNX file (`kind` fp32 or int8): its scores, the run's best.pt through the same pipeline (`pt`, when the
    evaluation was recorded on a run), and for a run's INT8 file its FP32 twin with the drop, per class, and its paired
    interval. For a vendor-compiled model (`kind` rknn, tflite, onnx for MCT's model): the runtime that scored it, the FP32
    file it was compiled from (`onnx`) and that file's scores, the input contract checked and its per-output cosines."""

    kind: str  # fp32 | int8 (an ONNX file npuyolo wrote) | rknn | tflite | onnx (a compiled model)
    run_id: int | None  # the run the artefact belongs to (None: none known)
    data_fingerprint: str  # which val set (`deploy/eval/compare.val_fingerprint`)
    head: str | None = None  # an ONNX file's head (a compiled model has none)
    recorded: bool = False  # recorded on its run (then `pt` is asked for)
    pt: dict | None = None  # the run's best.pt scored through the same letterbox pipeline (None: no weights on disk)
    fp32: dict | None = None  # the FP32 twin's (or the compiled model's source file's) scores
    drop_pp: dict[str, float] | None = None  # FP32 minus this, in points
    drop_pp_per_class: dict[str, float] | None = None
    drop_interval: dict[str, dict] | None = None  # the paired 95% interval of each drop over the val images
    runtime: str | None = None  # a compiled model: what scored it
    onnx: str | None = None  # a compiled model: the FP32 file it was compiled from
    contract: str | None = None  # a compiled model: its input contract, checked on a training photo
    cosine: list[float | None] | None = None  # a compiled model: per output, against FP32
    seconds: float | None = None
    layers: list[dict] | None = None  # RKNN's per-layer errors beside our QDQ model's (`layers`)
    qdq: str | None = None  # our QDQ model those were compared with
    deploy_conf: float | None = None
    at_conf: dict | None = None
    fp32_at_conf: dict | None = None
    retention: dict | None = None

    @property
    def compiled(self) -> bool:
        return self.runtime is not None

    def scores(self) -> dict[str, Any]:
        """The scores as recorded in a deploy-eval row of an ONNX file."""
        return {m: getattr(self, m) for m in (*SCORES, "images", "imgsz", "per_class", "data_fingerprint")}

    def as_dict(self) -> dict:
        """The shape `deploy eval --json` prints (and a compiled model's deploy-eval row records, less `fp32`): only
        what was found, in the order it has always had."""
        if not self.compiled:
            out = {"kind": self.kind, "run_id": self.run_id, "artefact": self.artefact, "head": self.head, **self.scores()}
            if self.recorded:
                out["pt"] = self.pt
            if self.fp32 is not None:
                out |= {"fp32": self.fp32, "drop_pp": self.drop_pp, "drop_pp_per_class": self.drop_pp_per_class,
                        "drop_interval": self.drop_interval}
            return out
        out = {"run_id": self.run_id, "kind": self.kind, "artefact": self.artefact, "runtime": self.runtime, "onnx": self.onnx,
               "contract": self.contract, "cosine": self.cosine, **self.scores(), "fp32": self.fp32, "drop_pp": self.drop_pp,
               "drop_pp_per_class": self.drop_pp_per_class, "seconds": self.seconds}
        if self.layers is not None:
            out |= {"layers": self.layers, "qdq": self.qdq}
        if self.at_conf is not None:
            out |= {"deploy_conf": self.deploy_conf, "at_conf": self.at_conf, "fp32_at_conf": self.fp32_at_conf,
                    "retention": self.retention}
        if self.drop_interval is not None:
            out["drop_interval"] = self.drop_interval
        return out


def evaluate_onnx(path: str | Path, data: str | Path, batch: int = 8, threads: int | None = None) -> OnnxScore:
    return evaluate_onnx_matched(path, data, batch, threads)[0]


def evaluate_onnx_matched(path: str | Path, data: str | Path, batch: int = 8, threads: int | None = None) -> tuple[OnnxScore, MatchedStats]:
    """`evaluate_onnx`, and the per-image statistics its figures come from."""
    path = Path(path)
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise DeployError(f"artefact not found: {path}" if why == "not found" else f"{path} {why}")
    predict, meta = onnx_predictor(path, threads)
    names = {int(k): v for k, v in json.loads(meta["names"]).items()}
    imgsz = json.loads(meta["imgsz"])[0]
    result, stats = validate_matched(predict, data, imgsz, names, batch)
    return OnnxScore(artefact=str(path), head=meta["npuyolo_head"], **result), stats
