"""Bias correction (Nagel et al., 2019, §4.2): cancel the mean shift that rounding the weights adds to each Conv.

Rounding W to INT8 changes a Conv's output by (W_q - W) x. Its expectation, (W_q - W) E[x], is a per-channel
constant that per-channel scales do not remove and that adds up through the network; subtracting it from the
bias removes it exactly on average. E[x] (per input channel) comes from the FP32 model on calibration images —
training images only, like the calibration itself. Weights are untouched, so the quantizer rounds them the same
way again and the corrected bias matches the weights it was computed for.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["conv_input_means", "correct_biases"]


def correct_biases(model: onnx.ModelProto, quantized: dict[str, np.ndarray], input_means: dict[str, np.ndarray]) -> int:
    """Subtract (W_q - W) E[x] from every Conv bias in place; returns how many Convs were corrected."""
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    corrected = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in quantized or node.name not in input_means or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        wq = quantized[node.name]
        if wq.shape != w.shape:
            continue
        mean = np.asarray(input_means[node.name], np.float64)
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_ch, in_per_group = w.shape[0], w.shape[1]
        if mean.shape != (in_per_group * groups,):
            continue
        # E[x] of the input channels each output channel sees: group g reads channels g*in_per_group ...
        per_out = mean.reshape(groups, in_per_group)[np.arange(out_ch) // (out_ch // groups)]  # [out, in_per_group]
        shift = ((wq - w).reshape(out_ch, in_per_group, -1).sum(axis=2) * per_out).sum(axis=1)
        if len(node.input) > 2 and node.input[2] in inits:
            b = numpy_helper.to_array(inits[node.input[2]])
            fixed = (b.astype(np.float64) - shift).astype(b.dtype)
            if uses.get(node.input[2], 0) > 1:  # a bias tensor shared by several Convs: this Conv gets its own copy
                name = f"{node.name}_bias_corrected"
                model.graph.initializer.append(numpy_helper.from_array(fixed, name))
                uses[node.input[2]] -= 1
                node.input[2] = name
            else:
                inits[node.input[2]].CopyFrom(numpy_helper.from_array(fixed, node.input[2]))
        else:
            name = f"{node.name}_bias_corrected"
            model.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
        corrected += 1
    return corrected


def conv_input_means(model: onnx.ModelProto, reader, limit: int = 32) -> dict[str, np.ndarray]:
    """Conv name -> mean of its input per channel, over up to `limit` images from `reader` (FP32, ONNX Runtime)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    convs = [n for n in probe.graph.node if n.op_type == "Conv"]
    existing = {o.name for o in probe.graph.output}
    tensors = sorted({n.input[0] for n in convs})
    for t in tensors:
        if t not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=t))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every probed tensor
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    seen = 0
    reader.rewind()
    while seen < limit and (feed := reader.get_next()) is not None:
        values = sess.run(tensors, feed)
        for t, v in zip(tensors, values):
            m = v.astype(np.float64).mean(axis=(0, 2, 3)) if v.ndim == 4 else None
            if m is not None:
                sums[t] = sums.get(t, 0) + m
        seen += 1
    reader.rewind()
    if not seen:
        return {}
    return {n.name: sums[n.input[0]] / seen for n in convs if n.input[0] in sums}
