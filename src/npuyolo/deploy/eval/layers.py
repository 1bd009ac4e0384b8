"""Per-layer INT8 error: which layer the vendor's quantizer hurts, beside what npuyolo's own QDQ model does there.

RKNN-Toolkit2's `accuracy_analysis` prints, per tensor, the cosine between its float ("golden") and simulated INT8
outputs: "entire" (errors accumulated from the input) and "single" (that layer alone, fed float inputs). The same
image through npuyolo's FP32 and QDQ ONNX models (ONNX Runtime's QDQ debugger saves every Conv and activation output)
gives our accumulated cosine and SQNR per tensor. Both are joined on the Conv node that makes the tensor (directly, or
through the activation fused after it), so a user sees where the two quantizers part ways.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from npuyolo.deploy.eval.evaluate import DeployError
from npuyolo.paths import file_problem

__all__ = ["LayerError", "LayerRow", "check_qdq", "compare_layers", "parse_error_analysis", "qdq_layer_errors"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROW = re.compile(r"^\[(?P<op>[^\]]+)\]\s+(?P<name>\S+)\s+(?P<ec>[-\d.]+)\s*\|\s*(?P<ee>[-\d.]+)\s+(?P<sc>[-\d.]+)\s*\|\s*(?P<se>[-\d.]+)")
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSwish", "Mul")


@dataclass(frozen=True)
class LayerError:
    """One tensor of RKNN's error_analysis.txt."""

    op: str
    tensor: str
    cos_entire: float
    euc_entire: float
    cos_single: float
    euc_single: float


def parse_error_analysis(text: str) -> list[LayerError]:
    """Rows of RKNN's `error_analysis.txt` (ANSI colour codes, header and rows without figures skipped)."""
    rows = []
    for line in _ANSI.sub("", text).splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows.append(LayerError(m["op"], m["name"], float(m["ec"]), float(m["ee"]), float(m["sc"]), float(m["se"])))
    return rows


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na and nb else float(na == nb)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(((ref.astype(np.float64) - got) ** 2).sum())
    return 10 * float(np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise)) if noise > 0 else 99.0


def _producers(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> the Conv node behind it: its own output, or the output of the activation that follows it."""
    made_by = {out: n for n in model.graph.node for out in n.output}
    result = {}
    for tensor, node in made_by.items():
        if node.op_type in ACTIVATIONS and node.input:
            node = made_by.get(node.input[0])
        if node is not None and node.op_type == "Conv":
            result[tensor] = node.name
    return result


SAME_WEIGHTS = 0.99  # cosine of a Conv's FP32 weights and its INT8 ones (per-channel INT8: above 0.999)


def _conv_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Conv node name -> its float weights: the initializer, or what the DequantizeLinear in front of it gives back."""
    inits = {i.name: i for i in model.graph.initializer}
    made_by = {out: n for n in model.graph.node for out in n.output}
    weights = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in inits:
            weights[node.name] = numpy_helper.to_array(inits[name]).astype(np.float64)
            continue
        dq = made_by.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or not all(x in inits for x in dq.input[:2]):
            continue
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] in inits else 0.0
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
        weights[node.name] = (q - zero) * scale
    return weights


def check_qdq(fp32: Path, qdq: Path) -> None:
    """`qdq` is a loadable ONNX model quantized from the graph `fp32`: every Conv of that graph is in it, with the same
    weights up to INT8 rounding. Else one DeployError: another model's QDQ file would blame our quantizer for a
    difference of models."""
    why = file_problem(qdq, empty_ok=False)
    if why is not None:
        raise DeployError(f"QDQ model {qdq} {why}")
    try:
        model = onnx.load(str(qdq), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
        raise DeployError(f"QDQ model {qdq} is not a readable ONNX model ({' '.join(str(e).split())[:120] or type(e).__name__})") from None
    ours = _conv_weights(onnx.load(str(fp32), load_external_data=False))
    theirs = _conv_weights(model)
    missing = [c for c in ours if c not in theirs]
    if not ours or len(missing) == len(ours):
        raise DeployError(f"QDQ model {qdq} is not quantized from {Path(fp32).name}: none of its Conv layers are there")
    differ = [c for c in ours if c in theirs and (ours[c].shape != theirs[c].shape or _cosine(ours[c], theirs[c]) < SAME_WEIGHTS)]
    if missing or differ:
        first = (missing + differ)[0]
        raise DeployError(f"QDQ model {qdq} is not quantized from {Path(fp32).name}: {len(missing)} of its {len(ours)} Conv "
                          f"layers missing, {len(differ)} with other weights (first: {first}); give the QDQ file of this "
                          "graph, or leave `qdq` out to quantize it here", param="qdq")


def qdq_layer_errors(fp32: Path, int8: Path, image: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per Conv-made tensor of the FP32 graph: (cosine, SQNR dB) of our QDQ model against FP32 on `image`."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    acts = ["Conv", *ACTIVATIONS]
    with tempfile.TemporaryDirectory() as tmp:
        aug_f, aug_q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(aug_f), op_types_for_saving=acts)
        modify_model_output_intermediate_tensors(str(int8), str(aug_q), op_types_for_saving=[*acts, "DequantizeLinear"])
        # collect_activations iterates its reader (a CalibrationDataReader is iterable); one feed each
        matching = create_activation_matching(collect_activations(str(aug_q), [{name: image}]),
                                              collect_activations(str(aug_f), [{name: image}]))
    out = {}
    for tensor, pair in matching.items():
        if pair.get("float") and pair.get("post_qdq"):  # as ORT's own xmodel_err: float vs after Q/DQ
            ref, got = pair["float"][0], pair["post_qdq"][0]
            out[tensor] = (_cosine(ref, got), _sqnr(ref, got))
    return out


@dataclass(frozen=True)
class LayerRow:
    """One Conv: the vendor's accumulated cosine beside ours (and our SQNR), on the same image."""

    conv: str
    tensor: str
    vendor_cos: float
    vendor_single_cos: float
    ours_cos: float | None
    ours_sqnr_db: float | None


def compare_layers(fp32: Path, vendor: list[LayerError], ours: dict[str, tuple[float, float]]) -> list[LayerRow]:
    """RKNN's rows and ours joined per Conv node, worst vendor cosine first. The Conv's last tensor on each side is
    used (the activation's output when one follows), as both quantizers fuse Conv and activation."""
    producers = _producers(onnx.load(str(fp32), load_external_data=False))
    vendor_by_conv: dict[str, LayerError] = {}
    for row in vendor:
        conv = producers.get(row.tensor)
        if conv is not None:
            vendor_by_conv[conv] = row  # later rows (the activation after the Conv) win
    ours_by_conv: dict[str, tuple[str, tuple[float, float]]] = {}
    for tensor, figures in ours.items():
        conv = producers.get(tensor)
        if conv is not None and (conv not in ours_by_conv or tensor != f"{conv}_output_0"):
            ours_by_conv[conv] = (tensor, figures)
    rows = []
    for conv, v in vendor_by_conv.items():
        mine = ours_by_conv.get(conv, (None, (None, None)))[1]
        rows.append(LayerRow(conv, v.tensor, v.cos_entire, v.cos_single, mine[0], mine[1]))
    return sorted(rows, key=lambda r: r.vendor_cos)
