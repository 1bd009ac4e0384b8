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

__all__ = ["LayerError", "LayerRow", "compare_layers", "parse_error_analysis", "qdq_layer_errors"]

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
