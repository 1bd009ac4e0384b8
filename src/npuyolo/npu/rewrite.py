"""Graph rewrites that make a model run on ReLU-only NPUs without retraining.

LeakyRelu(x, a) has exact equivalents built from ops such NPUs run:
- relu-decomp: a*x + (1-a)*Relu(x)              (Mul, Relu, Mul, Add; equal up to float rounding)
- relu-exact:  Relu(x) - a*Relu(-x)             (Relu, Mul, Relu, Mul, Sub; bit-exact in IEEE floats)
- max:         Max(x, a*x)                       (Mul, Max; exact for 0 < a < 1; needs an NPU Max)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from npuyolo.errors import NpuyoloError
from npuyolo.npu.graph import load_graph
from npuyolo.npu.onnxfile import written_by_npuyolo
from npuyolo.paths import atomic_path, check_output_file

Method = Literal["relu-decomp", "relu-exact", "max"]
METHODS: tuple[str, ...] = ("relu-decomp", "relu-exact", "max")
_PARTS = {"relu-decomp": ("relu", "ax", "br", "add"), "relu-exact": ("pos", "negx", "neg", "aneg", "sub"), "max": ("ax", "max")}


class RewriteError(NpuyoloError, ValueError):
    """A rewrite that does not apply (unknown method, nothing to rewrite)."""


def _const(graph: onnx.GraphProto, cache: dict[float, str], value: float, fresh) -> str:
    if value not in cache:
        name = fresh(f"npuyolo_const_{len(cache)}")
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        cache[value] = name
    return cache[value]


def _name_factory(graph: onnx.GraphProto):
    """`fresh(name)`: `name`, or `name_2`, `name_3`... if the graph already has a tensor or node called that.

    Generated names follow the LeakyRelu's name (`n/relu`); a graph may already hold such a name (an earlier
    tool's output, a hand edit), and ONNX requires each tensor to be produced once.
    """
    taken = {i.name for i in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
    for n in graph.node:
        taken.update([n.name, *n.input, *n.output])

    def fresh(name: str) -> str:
        candidate, i = name, 1
        while candidate in taken:
            i += 1
            candidate = f"{name}_{i}"
        taken.add(candidate)
        return candidate

    return fresh


def _replacement(node: onnx.NodeProto, method: str, const, fresh) -> list[onnx.NodeProto]:
    alpha = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "alpha"), 0.01)
    x, y, base = node.input[0], node.output[0], node.name or node.output[0]
    t = {part: fresh(f"{base}/{part}") for part in _PARTS.get(method, ())}  # new tensor and node names, unique in the graph
    if method == "relu-decomp":
        return [
            helper.make_node("Relu", [x], [t["relu"]], name=t["relu"]),
            helper.make_node("Mul", [x, const(alpha)], [t["ax"]], name=t["ax"]),
            helper.make_node("Mul", [t["relu"], const(1.0 - alpha)], [t["br"]], name=t["br"]),
            helper.make_node("Add", [t["ax"], t["br"]], [y], name=t["add"]),
        ]
    if method == "relu-exact":
        return [
            helper.make_node("Relu", [x], [t["pos"]], name=t["pos"]),
            helper.make_node("Mul", [x, const(-1.0)], [t["negx"]], name=t["negx"]),
            helper.make_node("Relu", [t["negx"]], [t["neg"]], name=t["neg"]),
            helper.make_node("Mul", [t["neg"], const(alpha)], [t["aneg"]], name=t["aneg"]),
            helper.make_node("Sub", [t["pos"], t["aneg"]], [y], name=t["sub"]),
        ]
    if method == "max":
        return [
            helper.make_node("Mul", [x, const(alpha)], [t["ax"]], name=t["ax"]),
            helper.make_node("Max", [x, t["ax"]], [y], name=t["max"]),
        ]
    raise RewriteError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")


def rewrite_leaky(model: onnx.ModelProto, method: str = "relu-decomp") -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every LeakyRelu replaced; returns it and how many were replaced."""
    if method not in METHODS:
        raise RewriteError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts: dict[float, str] = {}
    fresh = _name_factory(g)
    new_nodes, count = [], 0
    for node in g.node:
        if node.op_type == "LeakyRelu":
            new_nodes += _replacement(node, method, lambda v: _const(g, consts, float(v), fresh), fresh)
            count += 1
        else:
            new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    meta = {p.key: p for p in out.metadata_props}
    if "npuyolo_rewrite" in meta:
        meta["npuyolo_rewrite"].value += f",leaky:{method}"
    else:
        out.metadata_props.add(key="npuyolo_rewrite", value=f"leaky:{method}")
    onnx.checker.check_model(out)
    return out, count


def rewrite_file(src: str | Path, dst: str | Path | None = None, method: str = "relu-decomp", force: bool = False,
                 registry_path: str | Path | None = None) -> tuple[Path, int]:
    """Rewrite `src` into `dst` [default: beside it, SRC.<method>.onnx]: written under a temporary name, then renamed.

    `dst` follows `npuyolo.paths.check_output_file` (an earlier npuyolo ONNX may be replaced; another file or a
    symlink only with `force`; never the registry); a full disk or a refused write is one RewriteError.
    """

    src = Path(src)
    g = load_graph(src)  # same validation as `npu check`
    model, count = rewrite_leaky(g.model, method)
    if count == 0:
        raise RewriteError(f"{src}: no LeakyRelu nodes to rewrite")
    label = "out" if dst else "output"
    dst = check_output_file(dst or src.with_name(f"{src.stem}.{method}.onnx"), registry_path=registry_path, force=force,
                            ours=written_by_npuyolo, label=label, error=RewriteError)
    try:
        with atomic_path(dst) as tmp:
            onnx.save(model, str(tmp))
    except OSError as e:  # full disk, a place the OS refuses
        raise RewriteError(f"{label} {dst}: cannot write ({e.strerror or e})", param="out" if label == "out" else None) from None
    return dst, count
