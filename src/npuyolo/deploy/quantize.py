"""Static INT8 post-training quantization with ONNX Runtime (QDQ), calibrated on training images only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from npuyolo.data.check import IMAGE_SUFFIXES, load_data_yaml, split_images
from npuyolo.deploy.evaluate import DeployError
from npuyolo.deploy.export import onnx_metadata, set_metadata
from npuyolo.paths import atomic_path

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 image -> [3, size, size] float32 RGB in [0, 1], aspect kept, grey (114) padding like Ultralytics."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))  # a 2x3000 image must not round to 0 rows
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    canvas = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def calibration_images(data: str | Path, count: int, seed: int = 0) -> list[Path]:
    """`count` training images drawn deterministically; validation images are never candidates."""
    if count < 1:
        raise DeployError("--calib must be at least 1 image")
    cfg, root, _ = load_data_yaml(data)
    train = [p for p in split_images(root, cfg["train"], Path(data), "train") if p.suffix.lower() in IMAGE_SUFFIXES]
    val = set(split_images(root, cfg["val"], Path(data), "val"))
    train = sorted(p for p in train if p not in val)
    if not train:
        raise DeployError(f"{data}: no training images to calibrate on")
    rng = np.random.default_rng(seed)
    return [train[i] for i in sorted(rng.choice(len(train), size=min(count, len(train)), replace=False))]


class ImageReader(CalibrationDataReader):
    """Feeds letterboxed images to ONNX Runtime's calibrator; `rewind()` makes it reusable."""

    def __init__(self, paths: list[Path], imgsz: int, input_name: str = "images"):
        self.paths, self.imgsz, self.input_name = paths, imgsz, input_name
        self._it: Iterator[Path] = iter(paths)

    def get_next(self) -> dict | None:
        path = next(self._it, None)
        if path is None:
            return None
        image = cv2.imread(str(path))
        if image is None:
            raise DeployError(f"calibration image unreadable: {path}")
        return {self.input_name: letterbox(image, self.imgsz)[None]}

    def rewind(self) -> None:
        self._it = iter(self.paths)


def sensitive_nodes(fp32: Path, int8: Path, reader: ImageReader, count: int, workdir: Path) -> list[dict]:
    """The `count` Conv nodes whose quantized outputs drift most from float (lowest SQNR), per ORT's QDQ debugger."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching, modify_model_output_intermediate_tensors)

    aug_f, aug_q = workdir / "debug_fp32.onnx", workdir / "debug_int8.onnx"
    acts = ["Conv", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Mul", "HardSwish"]
    modify_model_output_intermediate_tensors(fp32, aug_f, op_types_for_saving=acts)
    modify_model_output_intermediate_tensors(int8, aug_q, op_types_for_saving=[*acts, "DequantizeLinear"])
    reader.rewind()
    float_acts = collect_activations(str(aug_f), reader)
    reader.rewind()
    quant_acts = collect_activations(str(aug_q), reader)
    errors = compute_activation_error(create_activation_matching(quant_acts, float_acts))
    nodes = list(onnx.load(str(fp32)).graph.node)
    made_by = {out: n for n in nodes for out in n.output}

    def conv_of(tensor: str):
        """The Conv behind a tensor: itself, or through the activation the quantizer fused after it."""
        node = made_by.get(tensor)
        if node is not None and node.op_type != "Conv" and node.input:
            node = made_by.get(node.input[0]) if node.op_type in ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSwish", "Mul") else None
        return node.name if node is not None and node.op_type == "Conv" else None

    producer = {t: conv_of(t) for t in errors if conv_of(t)}
    ranked = sorted(((e["xmodel_err"], t) for t, e in errors.items() if t in producer and "xmodel_err" in e))
    seen, unique = set(), []
    for s, t in ranked:
        if producer[t] not in seen:
            seen.add(producer[t])
            unique.append((s, t))
    ranked = unique
    for f in (aug_f, aug_q):
        f.unlink(missing_ok=True)
    return [{"node": producer[t], "tensor": t, "sqnr_db": float(s)} for s, t in ranked[:count]]


def quantize_onnx(fp32: Path, out: Path, data: str | Path, calib: int = 200, method: str = "minmax", per_channel: bool = False,
                  keep_float: list[str] | None = None, auto_float: int = 0, seed: int = 0, cle: bool = False) -> dict:
    """Quantize `fp32` to INT8 QDQ; returns what was done (calibration files, nodes kept float, ...)."""
    if method not in METHODS:
        raise DeployError(f"--method must be one of {', '.join(METHODS)}")
    if auto_float < 0:
        raise DeployError(f"--auto-float must be 0 or more Conv nodes, got {auto_float}")
    meta = onnx_metadata(fp32)
    if "imgsz" not in meta:
        raise DeployError(f"{fp32}: no npuyolo metadata; quantize an export written by npuyolo")
    imgsz = json.loads(meta["imgsz"])[0]
    paths = calibration_images(data, calib, seed)
    reader = ImageReader(paths, imgsz)
    prepared = out.with_name(out.stem + ".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    equalized = 0
    if cle:  # exact in FP32 (ReLU/LeakyReLU are positively homogeneous); evens per-channel ranges for INT8
        from npuyolo.deploy.equalize import equalize

        model = onnx.load(str(prepared))
        equalized = equalize(model)
        onnx.save(model, str(prepared))
    names = {n.name for n in onnx.load(str(prepared)).graph.node}
    keep = list(keep_float or [])
    missing = [k for k in keep if k not in names]
    if missing:
        raise DeployError(f"--keep-float: no node named {missing[0]!r} in {fp32.name}")

    def run(exclude: list[str], dst: Path) -> None:
        reader.rewind()
        quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=METHODS[method],
                        nodes_to_exclude=exclude or None, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})

    chosen: list[dict] = []
    if auto_float:
        probe = out.with_name(out.stem + ".probe.onnx")
        run(keep, probe)
        chosen = sensitive_nodes(prepared, probe, ImageReader(paths[: min(8, len(paths))], imgsz), auto_float, out.parent)
        probe.unlink(missing_ok=True)
        keep += [c["node"] for c in chosen if c["node"] not in keep]
    with atomic_path(out) as tmp:  # the INT8 tag and the weights appear under the final name together, or not at all
        run(keep, tmp)
        model = onnx.load(str(tmp))
        props = {p.key: p.value for p in model.metadata_props} | meta | {
            "npuyolo_quant": json.dumps({"method": method, "calib": len(paths), "per_channel": per_channel, "keep_float": keep,
                                         "cle_pairs": equalized})}
        set_metadata(model, props)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    prepared.unlink(missing_ok=True)
    return {"int8": str(out), "calibration_images": [str(p) for p in paths], "method": method, "per_channel": per_channel,
            "keep_float": keep, "auto_float": chosen, "cle_pairs": equalized}
