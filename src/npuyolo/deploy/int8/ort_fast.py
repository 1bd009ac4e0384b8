"""ONNX Runtime's quantizer, minus its quadratic Python: the same graphs and the same thresholds, in less time.

Measured on a plan (cProfile, `bench/deploy_plan.py`, 320 px YOLO11n): a third of every `quantize_static` call is
`ONNXModel.replace_input_of_all_nodes` (a Python loop over every input of every node, once per inserted Q/DQ pair),
`quant_utils.find_by_name` and `ONNXModel.get_initializer`/`add_initializer` (a scan of every initializer per lookup),
and `ONNXModel.initializer_extend` (a check of every initializer per added one); and the entropy calibration's
threshold search (`HistogramCollector.get_entropy_threshold`) is a Python loop over single bins (`sum()` of numpy
elements). Inside `fast_qdq` the lookups go through two indexes of the graph being quantized: each name's first
initializer, and each tensor's possible readers (every candidate checked before it is rewritten), kept up to date as
ORT appends initializers and nodes and renames inputs through `ONNXModel`, and dropped whenever an `ONNXModel` method
removes from or rebuilds the graph. The functions here compute exactly what ORT's do (tests compare the bytes of the
quantized files, the answers of ORT's scans while a graph changes, and the thresholds). They are installed only for
the length of one call (`fast_qdq`), or on one calibrator (`fast_entropy`), never for the process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import onnx
from onnxruntime.quantization import base_quantizer, onnx_model, onnx_quantizer, qdq_quantizer
from onnxruntime.quantization.calibrate import entropy
from onnxruntime.quantization.onnx_model import ONNXModel
from onnxruntime.quantization.quant_utils import smooth_distribution

__all__ = ["entropy_threshold", "fast_entropy", "fast_entropy_collector", "fast_histogram_collector", "fast_qdq", "find_by_name",
           "histogram_on_edges", "replace_input_of_all_nodes"]

# the modules that imported ORT's `find_by_name` by name (each holds its own reference)
_FIND_BY_NAME_USERS = (base_quantizer, onnx_model, onnx_quantizer, qdq_quantizer)
_FLOAT8 = onnx.TensorProto.FLOAT8E4M3FN


class _Initializers:
    """The first position of each name in one graph's initializer field, and whether any is float8 (the only type
    ORT's `_check_init` looks at), kept up to date as the field grows at its end (ORT's quantizer only appends to it;
    whatever removes from it or rebuilds a graph drops every index, `_forget`)."""

    def __init__(self, field):
        self.field, self.first, self.length, self.float8 = field, {}, 0, 0

    def sync(self) -> None:
        n = len(self.field)
        if n < self.length:  # shrunk behind our back: read again
            self.first, self.length, self.float8 = {}, 0, 0
        for i in range(self.length, n):
            item = self.field[i]
            self.first.setdefault(item.name, i)
            self.float8 += item.data_type == _FLOAT8
        self.length = n

    def find(self, name: str):
        self.sync()
        i = self.first.get(name)
        if i is None:
            return None
        item = self.field[i]
        if item.name != name:  # moved behind our back: read again, then scan as ORT does
            self.first, self.length, self.float8 = {}, 0, 0
            return _scan(name, self.field)
        return item


class _Readers:
    """Tensor name -> the nodes of one graph that may read it (a superset: each is checked before it is rewritten),
    kept up to date as nodes are appended and inputs renamed through ONNXModel."""

    def __init__(self, field):
        self.field, self.readers, self.length, self.known = field, {}, 0, set()

    def sync(self) -> None:
        n = len(self.field)
        if n < self.length:
            self.readers, self.length, self.known = {}, 0, set()
        for i in range(self.length, n):
            node = self.field[i]
            self.known.add(id(node))  # the node objects are held by `readers`: their ids stay theirs
            for name in dict.fromkeys(node.input):
                self.readers.setdefault(name, []).append(node)
        self.length = n

    def renamed(self, node, new_name: str) -> None:
        if id(node) in self.known:
            self.readers.setdefault(new_name, []).append(node)


_INDEXES: dict[int, _Initializers | _Readers] = {}  # id(field) -> its index, while fast_qdq is on


def _index(field, kind):
    index = _INDEXES.get(id(field))
    if index is None or index.field is not field or not isinstance(index, kind):
        index = _INDEXES[id(field)] = kind(field)
    return index


def _forget(*_args) -> None:
    _INDEXES.clear()


def _scan(item_name, item_list):
    for item in item_list:
        if item.name == item_name:
            return item
    return None


def find_by_name(item_name, item_list):
    """ORT's `find_by_name` (the first item called `item_name`, else None): a graph's initializers by their index,
    anything else scanned, stopping at the first match."""
    if _ACTIVE and type(item_list).__name__ == "RepeatedCompositeContainer" and item_list and hasattr(
            item_list[0], "data_type"):
        return _index(item_list, _Initializers).find(item_name)
    return _scan(item_name, item_list)


def get_initializer(self: ONNXModel, name):
    """ORT's `ONNXModel.get_initializer`: the first initializer called `name`, else None."""
    return find_by_name(name, self.model.graph.initializer)


def add_initializer(self: ONNXModel, tensor):
    """ORT's `ONNXModel.add_initializer`: appended unless one of that name exists."""
    if find_by_name(tensor.name, self.model.graph.initializer) is None:
        self._check_init(tensor)
        self.model.graph.initializer.extend([tensor])


def initializer_extend(self: ONNXModel, inits):
    """ORT's `ONNXModel.initializer_extend`: its check of every initializer already there ("gain") can only fail on a
    float8 one, so it runs only where the index has seen one."""
    if len(inits) == 0:
        raise ValueError("Can add an empty list.")
    index = _index(self.model.graph.initializer, _Initializers)
    index.sync()
    if index.float8:
        for init in self.initializer():
            self._check_init(init, "gain")
    for init in inits:
        self._check_init(init)
        self.model.graph.initializer.append(init)


def replace_node_input(node, old_input_name: str, new_input_name: str) -> None:
    """ORT's `ONNXModel.replace_node_input`, telling the index which node now reads `new_input_name`."""
    assert isinstance(old_input_name, str) and isinstance(new_input_name, str)
    changed = False
    for j in range(len(node.input)):
        if node.input[j] == old_input_name:
            node.input[j] = new_input_name
            changed = True
    if changed and _ACTIVE:
        for index in list(_INDEXES.values()):
            if isinstance(index, _Readers):
                index.renamed(node, new_input_name)


def replace_input_of_all_nodes(self: ONNXModel, old_input_name: str, new_input_name: str) -> None:
    """ORT's `ONNXModel.replace_input_of_all_nodes`: only the nodes that read `old_input_name` are rewritten. Inside
    `fast_qdq` they are found by an index of the graph's readers (each candidate checked); elsewhere by a C-level
    membership test over every node, instead of comparing every input of every node in Python."""
    if not _ACTIVE:
        for node in self.model.graph.node:
            if old_input_name in node.input:
                ONNXModel.replace_node_input(node, old_input_name, new_input_name)
        return
    index = _index(self.model.graph.node, _Readers)
    index.sync()
    for node in index.readers.pop(old_input_name, []):
        if old_input_name in node.input:
            replace_node_input(node, old_input_name, new_input_name)


_PATCHING = threading.Lock()  # one patched block at a time: two threads never restore each other's patch
_ACTIVE = False
# the ORT releases whose `get_entropy_threshold` `entropy_threshold` was checked against (tests/test_ort_fast.py)
AUDITED_ENTROPY = ("1.32.",)
# ORT's methods that remove from or rebuild a graph's initializers or nodes: each drops every index first and after
_REBUILDS = ("remove_initializer", "remove_initializers", "remove_node", "remove_nodes", "clean_initializers",
             "topological_sort", "replace_gemm_with_matmul", "remove_unused_constant")
_FAST = {"get_initializer": get_initializer, "add_initializer": add_initializer,
         "initializer_extend": initializer_extend, "replace_input_of_all_nodes": replace_input_of_all_nodes}


def _forgetting(method):
    def wrapper(*args, **kwargs):
        _forget()
        try:
            return method(*args, **kwargs)
        finally:
            _forget()

    return wrapper


@contextlib.contextmanager
def fast_qdq() -> Iterator[None]:
    """For the length of the block, ORT's quantizer uses the functions above (restored after, even on error)."""
    global _ACTIVE
    with _PATCHING:
        saved = [(m, m.find_by_name) for m in _FIND_BY_NAME_USERS]
        methods = {name: ONNXModel.__dict__[name] for name in (*_FAST, *_REBUILDS, "replace_node_input")
                   if name in ONNXModel.__dict__}
        helper = onnx_model._clean_initializers_helper
        try:
            for module, _ in saved:
                module.find_by_name = find_by_name
            for name, fast in _FAST.items():
                setattr(ONNXModel, name, fast)
            for name in _REBUILDS:
                if name in methods:
                    setattr(ONNXModel, name, _forgetting(methods[name]))
            ONNXModel.replace_node_input = staticmethod(replace_node_input)
            onnx_model._clean_initializers_helper = _forgetting(helper)
            _ACTIVE = True
            yield
        finally:
            _ACTIVE = False
            _forget()
            for module, original in saved:
                module.find_by_name = original
            for name, original in methods.items():
                setattr(ONNXModel, name, original)
            onnx_model._clean_initializers_helper = helper


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
    if calibrator.collector is not None:
        fast_entropy_collector(calibrator.collector)


def fast_entropy_collector(collector) -> None:
    """The same for one ORT `HistogramCollector` (before `compute_collection_result`)."""
    import onnxruntime

    if onnxruntime.__version__.startswith(AUDITED_ENTROPY):
        collector.get_entropy_threshold = entropy_threshold  # elsewhere ORT's own search: slower, never other


def histogram_on_edges(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, bins=edges)[0]` for nearly even edges, without numpy's sort of every value.

    Given an array of edges numpy sorts the values and counts them between edges (`searchsorted`): bin i holds
    edges[i] <= v < edges[i+1], the last bin also v == edges[-1]; values outside the edges and NaNs are not counted.
    Here each value's bin is first computed from the even spacing, then the values that the same comparisons with the
    real edges place elsewhere are moved, a bin at a time, until none is left, so every value ends in the bin numpy
    puts it in (the edges only need to be monotonic; uneven edges, where values would move far, fall back to numpy)."""
    n = edges.size - 1
    first, last = edges[0], edges[-1]
    if n < 1 or not (last > first) or np.any(edges[1:] < edges[:-1]):
        return np.histogram(values, bins=edges)[0]
    upper = edges[1:].copy()
    upper[-1] = np.inf  # the last bin holds its right edge
    counts = np.zeros(n, np.intp)
    for start in range(0, values.size, _BLOCK):  # blocks that stay in cache: 6x faster than whole arrays here
        counts += _count_block(values[start:start + _BLOCK], edges, upper)
    return counts


_BLOCK = 1 << 16


def _count_block(values: np.ndarray, edges: np.ndarray, upper: np.ndarray) -> np.ndarray:
    n, first, last = edges.size - 1, edges[0], edges[-1]
    inside = values[(values >= first) & (values <= last)]  # NaN compares False both ways
    index = ((inside - first) * (n / (float(last) - float(first)))).astype(np.intp)  # an estimate; checked below
    np.minimum(index, n - 1, out=index)
    moving = np.flatnonzero((inside < edges[index]) | (inside >= upper[index]))
    for _ in range(8):
        if not moving.size:
            return np.bincount(index, minlength=n)
        v, i = inside[moving], index[moving]
        i = i - (v < edges[i]) + (v >= upper[i])
        index[moving] = i
        moving = moving[(v < edges[i]) | (v >= upper[i])]
    return np.histogram(values, bins=edges)[0]


def _collect_absolute_value(self, name_to_arr) -> None:
    """ORT's `HistogramCollector.collect_absolute_value` (ORT 1.32: the percentile calibration's histograms), its
    merge of a later chunk counted by `histogram_on_edges` instead of `np.histogram` on the grown edges."""
    for tensor, data_arr in name_to_arr.items():
        if isinstance(data_arr, list):
            for arr in data_arr:
                assert isinstance(arr, np.ndarray), f"Unexpected type {type(arr)} for tensor={tensor!r}"
            dtypes = {a.dtype for a in data_arr}
            assert len(dtypes) == 1, f"The calibration expects only one element type but got {dtypes} for tensor={tensor!r}"
            data = np.asarray(data_arr)
        elif not isinstance(data_arr, np.ndarray):
            raise ValueError(f"Unexpected type {type(data_arr)} for tensor={tensor!r}")
        else:
            data = data_arr
        data = data.flatten()
        if data.size > 0:
            min_value, max_value = np.nanmin(data), np.nanmax(data)
        else:
            min_value = max_value = np.array(0, dtype=data.dtype)
        data = np.absolute(data)
        assert data.dtype != np.float64, "only float32 or float16 is supported, every constant must be explicitly typed"
        if tensor not in self.histogram_dict:
            hist, edges = np.histogram(data, bins=self.num_bins)  # even bins: numpy counts without sorting
            self.histogram_dict[tensor] = (hist, edges.astype(data.dtype), min_value, max_value)
            continue
        old_hist, old_edges, old_min, old_max = self.histogram_dict[tensor]
        top = np.nanmax(data)
        if top > old_edges[-1]:
            width = old_edges[1] - old_edges[0]
            old_edges = np.hstack((old_edges, np.arange(old_edges[-1] + width, top + width, width)))
        hist = histogram_on_edges(data, np.asarray(old_edges))
        hist[: len(old_hist)] += old_hist
        self.histogram_dict[tensor] = (hist, np.asarray(old_edges).astype(data.dtype), min(old_min, min_value),
                                       max(old_max, max_value))


AUDITED_HISTOGRAM = ("1.32.",)


def fast_histogram_collector(collector) -> None:
    """Make one ORT `HistogramCollector` merge its percentile histograms with `histogram_on_edges` (the same counts;
    numpy's sort of every value of every tensor in every chunk was most of a plan's time when the sweep chose a
    percentile). Other ORT versions keep their own method."""
    import onnxruntime

    if onnxruntime.__version__.startswith(AUDITED_HISTOGRAM):
        collector.collect_absolute_value = _collect_absolute_value.__get__(collector)
