"""Cross-layer equalization (Nagel et al., 2019) on an FP32 ONNX graph, before INT8 quantization.

For Conv1 -> ReLU/LeakyReLU -> Conv2 where Conv1's output feeds only that activation and the activation only
Conv2, output channel i of Conv1 can be divided by s_i and input channel i of Conv2 multiplied by s_i without
changing the function, because ReLU and LeakyReLU are positively homogeneous (f(x / s) = f(x) / s for s > 0).
Choosing s_i = sqrt(r1_i / r2_i) (r = per-channel weight range) gives both layers the same per-channel range,
which per-tensor weight quantization then represents far better. SiLU and HardSwish are not homogeneous: their
chains are left alone.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["equalize"]

HOMOGENEOUS = {"Relu", "LeakyRelu"}


def equalize(model: onnx.ModelProto, iterations: int = 2, eps: float = 1e-8) -> int:
    """Equalize every eligible Conv pair in place; returns how many pairs were rescaled (per pass, last pass)."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for conv1 in model.graph.node:
        if conv1.op_type != "Conv" or len(conv1.input) < 2 or conv1.input[1] not in inits:
            continue
        act = consumers.get(conv1.output[0], [])
        if len(act) != 1 or act[0].op_type not in HOMOGENEOUS or conv1.output[0] in outputs:
            continue
        nxt = consumers.get(act[0].output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv" or act[0].output[0] in outputs:
            continue
        conv2 = nxt[0]
        if conv2.input[0] != act[0].output[0] or conv2.input[1] not in inits or _group(conv2) != 1 or _group(conv1) != 1:
            continue
        pairs.append((conv1, conv2))
    count = 0
    for _ in range(iterations):
        count = 0
        for conv1, conv2 in pairs:
            w1 = numpy_helper.to_array(inits[conv1.input[1]]).astype(np.float64)
            w2 = numpy_helper.to_array(inits[conv2.input[1]]).astype(np.float64)
            if w1.shape[0] != w2.shape[1]:
                continue
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = np.abs(w2).transpose(1, 0, 2, 3).reshape(w2.shape[1], -1).max(axis=1)
            ok = (r1 > eps) & (r2 > eps)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            w1 /= s[:, None, None, None]
            w2 *= s[None, :, None, None]
            _store(inits[conv1.input[1]], w1)
            _store(inits[conv2.input[1]], w2)
            if len(conv1.input) > 2 and conv1.input[2] in inits:
                b1 = numpy_helper.to_array(inits[conv1.input[2]]).astype(np.float64) / s
                _store(inits[conv1.input[2]], b1)
            count += 1
    return count


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _store(init: onnx.TensorProto, value: np.ndarray) -> None:
    dtype = numpy_helper.to_array(init).dtype
    init.CopyFrom(numpy_helper.from_array(value.astype(dtype), init.name))
