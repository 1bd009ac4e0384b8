"""ONNX Runtime's quantizer, minus its quadratic Python: the same graphs and the same thresholds, in less time.

Measured on a plan (cProfile, `bench/deploy_plan.py`, 320 px YOLO11n): a third of every `quantize_static` call is
`ONNXModel.replace_input_of_all_nodes` (a Python loop over every input of every node, once per inserted Q/DQ pair) and
`quant_utils.find_by_name` (a list of every initializer built per lookup); and the entropy calibration's threshold
search (`HistogramCollector.get_entropy_threshold`) is a Python loop over single bins (`sum()` of numpy elements).
The functions here compute exactly what ORT's do (tests compare the bytes of the quantized files and the thresholds),
in C-level scans and numpy array sums. They are installed only for the length of one call (`fast_qdq`), or on one
calibrator (`fast_entropy`), never for the process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
from onnxruntime.quantization import base_quantizer, onnx_model, onnx_quantizer, qdq_quantizer
from onnxruntime.quantization.calibrate import entropy
from onnxruntime.quantization.onnx_model import ONNXModel
from onnxruntime.quantization.quant_utils import smooth_distribution

__all__ = ["entropy_threshold", "fast_entropy", "fast_qdq", "find_by_name", "replace_input_of_all_nodes"]

# the modules that imported ORT's `find_by_name` by name (each holds its own reference)
_FIND_BY_NAME_USERS = (base_quantizer, onnx_model, onnx_quantizer, qdq_quantizer)


def find_by_name(item_name, item_list):
    """ORT's `find_by_name` (the first item called `item_name`, else None), stopping at the first match."""
    for item in item_list:
        if item.name == item_name:
            return item
    return None


def replace_input_of_all_nodes(self: ONNXModel, old_input_name: str, new_input_name: str) -> None:
    """ORT's `ONNXModel.replace_input_of_all_nodes`: a node is rewritten only when it reads `old_input_name` (a C-level
    membership test), instead of comparing every input of every node in Python."""
    for node in self.model.graph.node:
        if old_input_name in node.input:
            ONNXModel.replace_node_input(node, old_input_name, new_input_name)


_PATCHING = threading.Lock()  # one patched block at a time: two threads never restore each other's patch
# the ORT releases whose `get_entropy_threshold` `entropy_threshold` was checked against (tests/test_ort_fast.py)
AUDITED_ENTROPY = ("1.32.",)


@contextlib.contextmanager
def fast_qdq() -> Iterator[None]:
    """For the length of the block, ORT's quantizer uses the two functions above (restored after, even on error)."""
    with _PATCHING:
        saved = [(m, m.find_by_name) for m in _FIND_BY_NAME_USERS]
        saved_replace = ONNXModel.replace_input_of_all_nodes
        try:
            for module, _ in saved:
                module.find_by_name = find_by_name
            ONNXModel.replace_input_of_all_nodes = replace_input_of_all_nodes
            yield
        finally:
            for module, original in saved:
                module.find_by_name = original
            ONNXModel.replace_input_of_all_nodes = saved_replace


def entropy_threshold(histogram, num_quantized_bins: int):
    """ORT's `HistogramCollector.get_entropy_threshold` (ORT 1.32), with its per-bin Python loops as array sums.

    Same candidate thresholds, same reference `p` and expanded `q` (integer counts: every sum is exact in any order;
    `q`'s float quotients are truncated to int64 as ORT's assignment truncates them), the same ORT `smooth_distribution`
    and `entropy` on each, so the same KL divergences and the same chosen threshold."""
    hist, hist_edges = histogram[0], histogram[1]
    num_bins = hist.size
    zero_bin_index = num_bins // 2
    num_half_quantized_bin = num_quantized_bins // 2
    dtype = hist_edges.dtype
    kl_divergence = np.zeros(zero_bin_index - num_half_quantized_bin + 1)
    thresholds = [(np.array(0, dtype=dtype), np.array(0, dtype=dtype)) for _ in range(kl_divergence.size)]
    for i in range(num_half_quantized_bin, zero_bin_index + 1):
        start_index = zero_bin_index - i
        end_index = min(zero_bin_index + i + 1, num_bins)
        thresholds[i - num_half_quantized_bin] = (hist_edges[start_index], hist_edges[end_index])
        sliced = hist[start_index:end_index].copy()
        p = sliced.copy()
        p[0] += hist[:start_index].sum()
        p[-1] += hist[end_index:].sum()
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // num_quantized_bins
        whole = num_quantized_bins * merged
        quantized_bins = np.zeros(num_quantized_bins, dtype=np.int64)
        quantized_bins[:] = sliced[:whole].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized_bins[-1] += sliced[whole:].sum()
        norm = nonzeros[:whole].reshape(num_quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        spread = np.zeros(num_quantized_bins, dtype=np.float64)
        filled = norm != 0
        spread[filled] = quantized_bins[filled] / norm[filled]
        q[:whole] = np.repeat(spread, merged)  # float -> int64 truncates, as ORT's `q[start:end] = x / norm` does
        p, q = smooth_distribution(p), smooth_distribution(q)
        div = np.array(np.inf, dtype=dtype) if p is None or q is None else np.array(entropy(p, q), dtype=dtype)
        kl_divergence[i - num_half_quantized_bin] = div
    optimal = thresholds[int(np.argmin(kl_divergence))]
    min_value, max_value = histogram[2], histogram[3]
    if optimal[0] < min_value:
        optimal = (min_value, optimal[1])
    if optimal[1] > max_value:
        optimal = (optimal[0], max_value)
    return optimal


def fast_entropy(calibrator) -> None:
    """Make one ORT entropy calibrator (after `collect_data`, before `compute_data`) search thresholds with
    `entropy_threshold`."""
    import onnxruntime

    if calibrator.collector is not None and onnxruntime.__version__.startswith(AUDITED_ENTROPY):
        calibrator.collector.get_entropy_threshold = entropy_threshold  # elsewhere ORT's own search: slower, never other
