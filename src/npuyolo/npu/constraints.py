"""Constraint checks a profile rule can name; each returns None when satisfied, else why not."""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx

from npuyolo.npu.graph import DTYPE_NAMES, Graph, attr, kernel_shape, node_axes, resize_scales

Check = Callable[[object, onnx.NodeProto, Graph, str], "str | None"]


def _kernel_max(v, node, g, dtype):
    k = kernel_shape(node, g)
    return f"kernel {k} exceeds {v}" if k and max(k) > v else None


def _kernel_in(v, node, g, dtype):
    k = kernel_shape(node, g)
    return f"kernel {k} not in {v}" if k and any(d not in v for d in k) else None


def _stride_max(v, node, g, dtype):
    s = attr(node, "strides") or [1]
    return f"stride {list(s)} exceeds {v}" if max(s) > v else None


def _group_max(v, node, g, dtype):
    group = attr(node, "group", 1)
    return f"group {group} exceeds {v}" if group > v else None


def _depthwise_kernel_in(v, node, g, dtype):
    group, cin = attr(node, "group", 1), (g.shapes.get(node.input[0]) or [0, 0])[1]
    k = kernel_shape(node, g)
    if group > 1 and group == cin and any(d not in v for d in k):
        return f"depthwise kernel {k} not in {v}"
    return None


def _axis_in(v, node, g, dtype):
    rank = len(g.shapes.get(node.input[0], [])) or 4
    allowed = {a % rank for a in v}
    axes = node_axes(node, g)
    return f"axis {axes} not in {sorted(allowed)} (rank {rank})" if any(a not in allowed for a in axes) else None


def _axis_length_max(v, node, g, dtype):
    shape = g.shapes.get(node.input[0], [])
    lengths = [shape[a] for a in node_axes(node, g) if a < len(shape)]
    return f"axis length {max(lengths)} exceeds {v}" if lengths and max(lengths) > v else None


def _string_attr_in(name: str, default: bytes) -> Check:
    """A check that a string attribute (e.g. Resize's mode) takes one of the listed values; ONNX's default if absent."""

    def check(v, node, g, dtype):
        value = attr(node, name, default)
        value = value.decode() if isinstance(value, bytes) else value
        return f"{name} {value!r} not in {v}" if value not in v else None

    return check


_resize_mode_in = _string_attr_in("mode", b"nearest")
_resize_coord_in = _string_attr_in("coordinate_transformation_mode", b"half_pixel")


def _resize_scale(v, node, g, dtype):
    scales = resize_scales(node, g)
    if not scales:
        return "scale unknown (no constant scales/sizes)"
    if v == "integer" and any(s != int(s) for s in scales):
        return f"scale {scales} not integer"
    if v == "power_of_2" and (len(set(scales)) > 1 or any(s != int(s) or int(s) & (int(s) - 1) for s in scales)):
        return f"scale {scales} not the same power of 2 on H and W"
    return None


def _resize_scale_max(v, node, g, dtype):
    scales = resize_scales(node, g)
    return f"scale {scales} exceeds {v}" if not scales or max(scales) > v else None


def _slice_const_len(v, node, g, dtype):
    """TIDL: starts/ends/axes (and steps) as constants with one value per dimension."""
    lengths = [len(g.constants[n].reshape(-1)) if n in g.constants else None for n in node.input[1:4]]
    return None if all(n == v for n in lengths) else f"slice parameters have {lengths} values, not {v} constants each"


def _resize_scale_in(v, node, g, dtype):
    scales = resize_scales(node, g)
    return f"scale {scales} not in {v}" if not scales or any(s not in v for s in scales) else None


def _slope_in(v, node, g, dtype):
    alpha = attr(node, "alpha", 0.01)
    return f"slope {alpha:g} not in {v}" if not any(math.isclose(alpha, s, rel_tol=1e-6) for s in v) else None


def _clip_bounds(node, g) -> tuple[float, float]:
    lo, hi = attr(node, "min", -math.inf), attr(node, "max", math.inf)
    if len(node.input) > 1 and node.input[1] in g.constants:
        lo = float(g.constants[node.input[1]])
    if len(node.input) > 2 and node.input[2] in g.constants:
        hi = float(g.constants[node.input[2]])
    return lo, hi


def _clip_ranges(v, node, g, dtype):
    lo, hi = _clip_bounds(node, g)
    ok = any((lo == a or math.isclose(lo, a)) and (hi == b or math.isclose(hi, b)) for a, b in v)
    return None if ok else f"clip range ({lo:g}, {hi:g}) not in {v}"


def _clip_min_le_zero_lt_max(v, node, g, dtype):
    lo, hi = _clip_bounds(node, g)
    return None if lo <= 0 < hi else f"clip range ({lo:g}, {hi:g}) needs min <= 0 < max"


def _dtype_in(v, node, g, dtype):
    return f"data type {dtype} not in {v}" if dtype not in v else None


def _const_input(v, node, g, dtype):
    """Input number `v` must be a constant (an initializer or a Constant node), e.g. a Div by a fixed number."""
    name = node.input[v] if len(node.input) > v else ""
    return None if name in g.constants else f"input {v} ({name or 'absent'}) is not a constant"


CONSTRAINTS: dict[str, Check] = {
    "kernel_max": _kernel_max,
    "kernel_in": _kernel_in,
    "stride_max": _stride_max,
    "group_max": _group_max,
    "depthwise_kernel_in": _depthwise_kernel_in,
    "axis_in": _axis_in,
    "axis_length_max": _axis_length_max,
    "resize_mode_in": _resize_mode_in,
    "resize_scale": _resize_scale,
    "resize_scale_in": _resize_scale_in,
    "resize_scale_max": _resize_scale_max,
    "resize_coord_in": _resize_coord_in,
    "slice_const_len": _slice_const_len,
    "slope_in": _slope_in,
    "clip_ranges": _clip_ranges,
    "clip_min_le_zero_lt_max": _clip_min_le_zero_lt_max,
    "dtype_in": _dtype_in,
    "const_input": _const_input,
    "requires_fusion": lambda v, node, g, dtype: None,  # decided after fusion detection (analyze.py)
}


def effective_dtype(node: onnx.NodeProto, g: Graph, deploy_dtype: str) -> str:
    """The type the op will run in: the tensor's own if already integer (QDQ graph), else the target's default."""
    name = DTYPE_NAMES.get(g.dtypes.get(node.input[0], onnx.TensorProto.FLOAT), "float32")
    return name if name.startswith(("int", "uint")) else deploy_dtype
