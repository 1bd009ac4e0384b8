"""Graph normalisations that make placement independent of the exporter's spelling.

C3k2's `chunk` exports as one Split with older torch exporters and as a pair of Slices with newer ones (torch
2.14). Vendors treat the two differently (DX-COM supports a rank-4 Split but only height-axis Slices), so the
same model would score differently by exporter version. `slices_to_split` rewrites every group of constant,
unit-step Slices that tile one axis of one tensor exactly into the Split an older exporter would have written:
same tensors, same values.

An INT8 QDQ artefact (`deploy quantize`, `deploy qat`) wraps every tensor in QuantizeLinear/DequantizeLinear.
NPU compilers fuse those pairs into their integer kernels; they are not operators that run anywhere.
`fold_qdq` removes them (weights dequantized back into float initializers), so an INT8 file is placed like
the graph it quantizes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["dequantize_constant", "fold_qdq", "slices_to_split"]

_INT64_MAX = np.iinfo(np.int64).max


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def _dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return dims


def slices_to_split(model: onnx.ModelProto) -> int:
    """Rewrite, in place, Slice groups that tile an axis into one Split; returns how many Splits were made."""
    consts, dims = _constants(model), _dims(model)
    groups: dict[tuple[str, int], list[tuple[int, int, onnx.NodeProto]]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type != "Slice" or len(node.input) < 4:
            continue
        starts, ends, axes = (consts.get(n) for n in node.input[1:4])
        steps = consts.get(node.input[4]) if len(node.input) > 4 and node.input[4] else np.array([1])
        if any(v is None or v.size != 1 for v in (starts, ends, axes, steps)) or int(steps.reshape(-1)[0]) != 1:
            continue
        shape = dims.get(node.input[0])
        if not shape:
            continue
        axis = int(axes.reshape(-1)[0]) % len(shape)
        size = shape[axis]
        if size <= 0:
            continue
        start, end = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
        start, end = (start + size if start < 0 else start), (size if end >= _INT64_MAX // 2 else (end + size if end < 0 else end))
        groups[(node.input[0], axis)].append((start, min(end, size), node))
    made = 0
    for (tensor, axis), parts in groups.items():
        parts.sort(key=lambda p: p[0])
        size = dims[tensor][axis]
        tiles = len(parts) >= 2 and parts[0][0] == 0 and parts[-1][1] == size and all(
            a[1] == b[0] for a, b in zip(parts, parts[1:])) and all(p[1] > p[0] for p in parts)
        if not tiles:
            continue
        nodes = [p[2] for p in parts]
        name = f"{nodes[0].name or tensor}_as_split"
        sizes = numpy_helper.from_array(np.array([p[1] - p[0] for p in parts], dtype=np.int64), f"{name}_sizes")
        model.graph.initializer.append(sizes)
        split = helper.make_node("Split", [tensor, sizes.name], [n.output[0] for n in nodes], name=name, axis=axis)
        position = min(i for i, n in enumerate(model.graph.node) if n in nodes)
        kept = [n for n in model.graph.node if n not in nodes]
        kept.insert(position, split)
        del model.graph.node[:]
        model.graph.node.extend(kept)
        made += 1
    return made


QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def dequantize_constant(dq: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The float value a DequantizeLinear of constant codes computes: (q - zero_point) * scale, per-axis or per-tensor."""
    q = numpy_helper.to_array(consts[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(consts[dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(consts[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] in consts else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and scale.size > 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), (np.reshape(zero, shape) if np.ndim(zero) else zero)
    return (q - zero) * scale


def fold_qdq(model: onnx.ModelProto) -> int:
    """Remove every QuantizeLinear/DequantizeLinear in place (any domain); returns how many nodes were removed."""
    qdq = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    if not qdq:
        return 0
    consts = {init.name: init for init in model.graph.initializer}
    source: dict[str, str] = {}  # tensor a Q/DQ wrote -> the float tensor it stands for
    for node in qdq:
        source[node.output[0]] = node.input[0]
    # a DQ of a constant (weights, bias): becomes a float initializer under the DQ's output name
    for node in qdq:
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            value = dequantize_constant(node, consts).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            source.pop(node.output[0])

    def resolve(name: str) -> str:
        while name in source:
            name = source[name]
        return name

    graph_outputs = {o.name for o in model.graph.output}
    kept = [n for n in model.graph.node if n.op_type not in QDQ_OPS]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    for out in model.graph.output:  # an output written by a DQ: the float tensor under it takes the output's name
        real = resolve(out.name)
        if real != out.name:
            for node in kept:
                node.output[:] = [out.name if o == real else o for o in node.output]
                node.input[:] = [out.name if i == real else i for i in node.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {i for n in kept for i in n.input} | graph_outputs
    alive = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(alive)
    del model.graph.value_info[:]  # types of removed tensors (uint8/int16) no longer hold
    return len(qdq)
