"""Place every ONNX node on a target (NPU / CPU / unknown, with the rule and reason) and summarise.

Shares are reported three ways: by node count, by node count with activations fused into their Conv
(one node, as the NPU compiler sees it), and by MACs. Partitions and transitions are counted on the
graph itself, so a fallback in the middle of the network costs more than one at its end.
"""

from __future__ import annotations

import re

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from npuyolo.npu.constraints import CONSTRAINTS, effective_dtype
from npuyolo.npu.graph import Graph, macs
from npuyolo.npu.profiles import TargetProfile

SKIP_OPS = {"Constant", "Identity"}  # not work; neither placed nor counted


@dataclass
class NodePlacement:
    name: str
    op: str
    placement: str
    reason: str
    source: str | None
    macs: int
    fused_into: str | None = None


@dataclass
class TargetReport:
    target: str
    title: str
    fallback: str
    nodes_total: int
    nodes_npu: int
    nodes_cpu: int
    nodes_unknown: int
    share_nodes: float
    share_nodes_fused: float
    share_macs: float
    partitions_npu: int
    partitions_host: int
    transitions: int
    crossing_tensors: list[dict]
    fallback_ops: dict[str, int]
    unknown_ops: dict[str, int]
    macs_total: int
    placements: list[NodePlacement] = field(repr=False)

    def as_dict(self, with_nodes: bool = True) -> dict:
        d = asdict(self)
        if not with_nodes:
            d.pop("placements")
        return d


def _place(node: onnx.NodeProto, g: Graph, profile: TargetProfile) -> tuple[str, str, str | None]:
    rule = profile.rule(node.op_type)
    if rule is None:
        return "unknown", f"no rule for {node.op_type} in {profile.name}", None
    if rule.place != "npu":
        return rule.place, f"{node.op_type} runs on {rule.place.upper()} on {profile.name}", rule.source
    if profile.max_tensor_elems is not None:
        for out in node.output:
            shape = g.shapes.get(out)
            elems = int(np.prod(shape)) if shape and all(isinstance(d, int) and d > 0 for d in shape) else 0
            if elems > profile.max_tensor_elems:
                return "cpu", (f"output {'x'.join(map(str, shape))} ({elems} values) is larger than the largest activation"
                               f" documented to map ({profile.max_tensor_elems})"), profile.max_tensor_source
    dtype = effective_dtype(node, g, profile.deploy_dtype)
    for key, value in rule.constraints.items():
        why = CONSTRAINTS[key](value, node, g, dtype)
        if why:
            return "cpu", f"constraint {key}: {why}", rule.source
    return "npu", "supported", rule.source


def _fusions(g: Graph, placed: list[NodePlacement], profile: TargetProfile) -> None:
    """Mark activations the target fuses into the Conv before them (single consumer, both on the NPU)."""
    nodes = g.nodes
    fusable = set(profile.fusable_activations)

    def conv_feeding(i: int) -> int | None:
        src = g.producer.get(nodes[i].input[0])
        if src is not None and nodes[src].op_type == "Conv" and placed[src].placement == "npu":
            return src
        return None

    for i, node in enumerate(nodes):
        if placed[i].placement != "npu" or placed[i].fused_into:
            continue
        conv = conv_feeding(i)
        if conv is None:
            continue
        consumers = g.consumers.get(nodes[conv].output[0], [])
        if node.op_type in fusable and consumers == [i]:
            placed[i].fused_into = nodes[conv].name
        elif node.op_type == "Sigmoid" and "Swish" in fusable and len(consumers) == 2:
            mul = next((j for j in consumers if j != i and nodes[j].op_type == "Mul"), None)
            if mul is not None and set(nodes[mul].input) == {nodes[conv].output[0], node.output[0]} and placed[mul].placement == "npu":
                placed[i].fused_into = placed[mul].fused_into = nodes[conv].name
    for i, node in enumerate(nodes):
        rule = profile.rule(node.op_type)
        if rule and rule.constraints.get("requires_fusion") and placed[i].placement == "npu" and not placed[i].fused_into:
            placed[i].placement, placed[i].reason = "cpu", "constraint requires_fusion: only supported fused after a Conv"


def _host_follow(g: Graph, placed: list[NodePlacement], profile: TargetProfile) -> None:
    """Layout ops whose every consumer runs on the CPU run there too (RKNN puts the DFL Reshape/Transpose with the
    CPU Softmax on rk3566). Walked backwards so a Reshape -> Transpose -> CPU chain moves whole."""
    follow = set(profile.host_follow_ops)
    nodes = g.nodes
    for i in reversed(range(len(nodes))):
        p = placed[i]
        if p.op not in follow or p.placement != "npu":
            continue
        consumers = [j for out in nodes[i].output for j in g.consumers.get(out, [])]
        if consumers and all(placed[j].placement == "cpu" for j in consumers):
            p.placement, p.fused_into = "cpu", None
            p.reason = f"{p.op} feeding only CPU ops ({', '.join(sorted({placed[j].op for j in consumers}))}) runs with them on the CPU"
            p.source = profile.host_follow_source


def _after_end_nodes(g: Graph, placed: list[NodePlacement], profile: TargetProfile) -> None:
    """Everything downstream of the vendor's end nodes runs on the host; an activation the target fuses into an end
    node (its only consumer, e.g. Hailo's output sigmoid) stays on the chip with it."""
    patterns = [re.compile(p) for p in profile.end_nodes]
    nodes = g.nodes
    ends = {i for i, n in enumerate(nodes) if any(p.search(n.name) for p in patterns)}
    if not ends:
        return
    fused = set()
    for i in ends:
        consumers = g.consumers.get(nodes[i].output[0], [])
        if len(consumers) == 1 and nodes[consumers[0]].op_type in profile.fusable_activations:
            fused.add(consumers[0])
    frontier = [j for i in ends | fused for out in nodes[i].output for j in g.consumers.get(out, []) if j not in fused]
    seen: set[int] = set()
    while frontier:
        j = frontier.pop()
        if j in seen or j in ends:
            continue
        seen.add(j)
        frontier += [k for out in nodes[j].output for k in g.consumers.get(out, [])]
    for j in seen:
        p = placed[j]
        if p.placement == "n/a":
            continue
        p.placement, p.fused_into, p.source = "cpu", None, profile.end_nodes_source
        p.reason = "after the vendor's end nodes: host post-processing"


def _single_subgraph(placed: list[NodePlacement]) -> None:
    """Edge TPU: one accelerator subgraph; everything after the first unmapped op leaves the TPU."""
    blocker: NodePlacement | None = None
    for p in placed:
        if p.op in SKIP_OPS:
            continue
        if blocker is None:
            if p.placement != "npu":
                blocker = p
            continue
        if p.placement == "npu":
            p.placement = blocker.placement  # cpu, or unknown when the blocker itself is unknown
            p.reason = f"after {blocker.op} '{blocker.name}': only one accelerator subgraph is allowed"
            p.fused_into = None


def analyze(g: Graph, profile: TargetProfile) -> TargetReport:
    nodes = g.nodes
    placed = []
    for node in nodes:
        if node.op_type in SKIP_OPS:
            placed.append(NodePlacement(node.name, node.op_type, "n/a", "not work", None, 0))
            continue
        where, reason, source = _place(node, g, profile)
        placed.append(NodePlacement(node.name, node.op_type, where, reason, source, macs(node, g)))
    _fusions(g, placed, profile)
    if profile.host_follow_ops:
        _host_follow(g, placed, profile)
    if profile.end_nodes:
        _after_end_nodes(g, placed, profile)
    if profile.fallback == "single_subgraph":
        _single_subgraph(placed)

    work = [p for p in placed if p.placement != "n/a"]
    npu = [p for p in work if p.placement == "npu"]
    unfused = [p for p in work if not p.fused_into]
    macs_total = sum(p.macs for p in work)

    # partitions: connected groups of same-side nodes (side = npu | host); transitions: tensors crossing sides
    side = {i: ("npu" if p.placement == "npu" else "host") for i, p in enumerate(placed) if p.placement != "n/a"}
    parent = {i: i for i in side}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    crossing = []
    for tensor, src in g.producer.items():
        if src not in side:
            continue
        sides = set()
        for dst in g.consumers.get(tensor, []):
            if dst not in side:
                continue
            if side[dst] == side[src]:
                parent[find(dst)] = find(src)
            else:
                sides.add(side[dst])
        if sides:
            crossing.append({"tensor": tensor, "from": side[src], "to": sorted(sides)[0], "shape": g.shapes.get(tensor)})
    roots = {find(i): side[i] for i in side}
    return TargetReport(
        target=profile.name, title=profile.title, fallback=profile.fallback,
        nodes_total=len(work), nodes_npu=len(npu), nodes_cpu=sum(p.placement == "cpu" for p in work),
        nodes_unknown=sum(p.placement == "unknown" for p in work),
        share_nodes=len(npu) / len(work) if work else 0.0,
        share_nodes_fused=sum(p.placement == "npu" for p in unfused) / len(unfused) if unfused else 0.0,
        share_macs=sum(p.macs for p in npu) / macs_total if macs_total else 0.0,
        partitions_npu=sum(s == "npu" for s in roots.values()), partitions_host=sum(s == "host" for s in roots.values()),
        transitions=len(crossing), crossing_tensors=crossing,
        fallback_ops=dict(Counter(p.op for p in work if p.placement == "cpu").most_common()),
        unknown_ops=dict(Counter(p.op for p in work if p.placement == "unknown").most_common()),
        macs_total=macs_total, placements=placed,
    )
