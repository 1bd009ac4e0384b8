"""ONNX graph facts the analyzer needs: validated loading, shapes, attributes, constant inputs, MACs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from npuyolo.errors import NpuyoloError
from npuyolo.paths import file_problem


class GraphError(NpuyoloError, ValueError):
    """Not an ONNX model we can analyze: unreadable, truncated, invalid or dynamic-shaped."""


@dataclass
class Graph:
    model: onnx.ModelProto
    path: str | None
    shapes: dict[str, list[int]] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return list(self.model.graph.node)

    @property
    def outputs(self) -> set[str]:
        return {o.name for o in self.model.graph.output}


def load_graph(path: str | Path | onnx.ModelProto) -> Graph:
    """Load, check and shape-infer; every failure is one GraphError naming the file and the reason."""
    name = None if isinstance(path, onnx.ModelProto) else str(path)
    if isinstance(path, onnx.ModelProto):
        model = path
    else:
        p = Path(path)
        why = file_problem(p, empty_ok=False)
        if why is not None:
            raise GraphError(f"{p}: file not found" if why == "not found" else f"{p} {why}")
        try:
            model = onnx.load(str(p))
        except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-free; keep the message
            raise GraphError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise GraphError(f"{name or 'model'}: not an ONNX model (empty graph; truncated file?)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise GraphError(f"{name or 'model'}: invalid ONNX model ({str(e).splitlines()[0]})") from None
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise GraphError(f"{name or 'model'}: input {inp.name!r} has a dynamic shape {shape}; export with a static shape "
                             "(npuyolo export writes static shapes)")
    inferred = shape_inference.infer_shapes(model)
    g = Graph(model=model, path=name)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        g.dtypes[vi.name] = t.elem_type
        if t.HasField("shape"):
            g.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        g.constants[init.name] = arr
        g.shapes[init.name] = list(arr.shape)
        g.dtypes[init.name] = init.data_type
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    g.constants[node.output[0]] = numpy_helper.to_array(a.t)
        for out in node.output:
            g.producer[out] = i
        for inp in node.input:
            if inp:
                g.consumers.setdefault(inp, []).append(i)
    return g


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def kernel_shape(node: onnx.NodeProto, g: Graph) -> list[int]:
    ks = attr(node, "kernel_shape")
    if ks is None and node.op_type == "Conv" and node.input[1] in g.shapes:
        ks = g.shapes[node.input[1]][2:]
    return list(ks or [])


def node_axes(node: onnx.NodeProto, g: Graph) -> list[int]:
    """The axes an op works along, normalised to >= 0 (axis attribute, or Slice's axes input)."""
    rank = len(g.shapes.get(node.input[0], [])) or 4
    if node.op_type == "Slice":
        axes = g.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        values = list(axes.tolist()) if axes is not None else list(range(len(g.constants.get(node.input[1], []))))
    else:
        values = [attr(node, "axis", 1 if node.op_type in ("Concat", "Softmax") else 0)]
        if node.op_type == "Softmax" and attr(node, "axis") is None:
            values = [-1]  # opset >= 13 default
    return [int(a) % rank for a in values]


def resize_scales(node: onnx.NodeProto, g: Graph) -> list[float]:
    """Spatial scale factors of a Resize, from its scales or sizes input."""
    if len(node.input) > 2 and node.input[2] in g.constants and g.constants[node.input[2]].size:
        return [float(s) for s in g.constants[node.input[2]].tolist()[2:]]
    if len(node.input) > 3 and node.input[3] in g.constants:
        sizes = g.constants[node.input[3]].tolist()
        src = g.shapes.get(node.input[0], [])
        if len(src) == len(sizes):
            return [s / max(1, i) for s, i in zip(sizes[2:], src[2:])]
    out, src = g.shapes.get(node.output[0]), g.shapes.get(node.input[0])
    if out and src:
        return [o / max(1, i) for o, i in zip(out[2:], src[2:])]
    return []


def macs(node: onnx.NodeProto, g: Graph) -> int:
    """Multiply-accumulates of compute ops (Conv, MatMul, Gemm); 0 for the rest."""
    out = g.shapes.get(node.output[0])
    if not out or any(d <= 0 for d in out):
        return 0
    if node.op_type == "Conv":
        w = g.shapes.get(node.input[1])
        return int(np.prod(out)) * int(np.prod(w[1:])) if w else 0
    if node.op_type in ("MatMul", "Gemm"):
        a = g.shapes.get(node.input[0])
        k = a[-1] if a and not (node.op_type == "Gemm" and attr(node, "transA", 0)) else (a[-2] if a else 0)
        return int(np.prod(out)) * int(k)
    return 0


DTYPE_NAMES = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT16: "int16",
               onnx.TensorProto.UINT16: "uint16", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.FLOAT: "float32",
               onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64"}
