"""Reading QDQ graphs: which nodes still compute in float, which Convs sit at the ends, and the weights INT8 really uses.

Pure functions over `onnx.ModelProto`, so the quantizer, the bench and the tests judge a graph by one definition.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from npuyolo.npu.normalize import dequantize_constant

__all__ = ["decode_tail", "end_convs", "float_compute_nodes", "is_full_integer", "quantized_conv_weights"]

QDQ = {"QuantizeLinear", "DequantizeLinear"}
# ops that only pass values through (no arithmetic): fed by DQ and feeding Q they are integer by construction
_PASS_THROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Gather", "Constant"}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: n for n in model.graph.node for out in n.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def float_compute_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes an integer-only NPU could not run as they stand: some activation input or output is a float tensor.

    A node counts as integer when each of its non-constant inputs comes from a DequantizeLinear and each of its
    outputs goes only into QuantizeLinear — the QDQ pattern ONNX Runtime and the NPU compilers fuse into an integer
    kernel. Ultralytics' Conv-only INT8 leaves its activations, Adds and Concats outside that pattern.
    """
    inits = {i.name for i in model.graph.initializer}
    made_by, users = _producers(model), _consumers(model)
    graph_outputs = {o.name for o in model.graph.output}
    found = []
    for node in model.graph.node:
        if node.op_type in QDQ or node.op_type in _PASS_THROUGH:
            continue
        inputs = [i for i in node.input if i and i not in inits and not (made_by.get(i) and made_by[i].op_type == "Constant")]
        in_ok = all(made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear" for i in inputs)
        out_ok = all(o not in graph_outputs and users.get(o) and all(u.op_type == "QuantizeLinear" for u in users[o])
                     for o in node.output if o)
        if not (in_ok and out_ok):
            found.append(node)
    return found


def is_full_integer(model: onnx.ModelProto) -> bool:
    return not float_compute_nodes(model)


def end_convs(model: onnx.ModelProto) -> list[str]:
    """The first Conv (it reads the image) and the Convs that write the outputs (through a Sigmoid at most).

    These are the layers whose INT8 error reaches the boxes and scores undiluted; a target with a wider integer or
    a float type keeps them there.
    """
    made_by = _producers(model)
    inputs = {i.name for i in model.graph.input}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[0] in inputs:
            names.append(node.name)
    for out in model.graph.output:
        node = made_by.get(out.name)
        while node is not None and node.op_type in ("Sigmoid", "Identity", "Reshape", "DequantizeLinear", "QuantizeLinear"):
            node = made_by.get(node.input[0])
        if node is not None and node.op_type == "Conv" and node.name not in names:
            names.append(node.name)
    return names


def decode_tail(model: onnx.ModelProto) -> list[str]:
    """The nodes of Ultralytics' in-graph decode: everything between the head's last Convs and the output.

    That tail joins pixel boxes (0..imgsz) and class scores (0..1) into one output: one INT8 scale for both rounds
    every score to 0 (mAP 0). An NPU runs the Convs and leaves the decode to the host in float (the NPU head cut), so
    an INT8 model of the Ultralytics head keeps this tail float. Walked back from the outputs, stopping at each Conv
    except DFL's (its input is the Softmax over the distance bins: decode arithmetic with fixed weights).
    """
    made_by = _producers(model)
    tail: set[str] = set()
    todo = [made_by[o.name] for o in model.graph.output if o.name in made_by]
    while todo:
        node = todo.pop()
        if node.name in tail:
            continue
        if node.op_type == "Conv":
            source = made_by.get(node.input[0])
            if source is None or source.op_type != "Softmax":
                continue
        tail.add(node.name)
        todo += [made_by[i] for i in node.input if i in made_by]
    return [n.name for n in model.graph.node if n.name in tail]


def quantized_conv_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Conv name -> the float weight its QDQ graph actually computes with (int8 codes times scale)."""

    inits = {i.name: i for i in model.graph.initializer}
    made_by = _producers(model)
    weights = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        dq = made_by.get(node.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            weights[node.name] = dequantize_constant(dq, inits)
    return weights
