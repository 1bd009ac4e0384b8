"""A vendor compiler's placement beside ours: what every build record holds (`Build`), and the comparison, node by
node where its log maps back to our nodes (RKNN), else on the whole graph (Vela's operator counts, IMX500's pass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from npuyolo.npu.analyze import TargetReport

__all__ = ["Agreement", "Build", "agreement", "imx_agreement"]


@runtime_checkable
class Build(Protocol):
    """What every vendor's build record holds (RknnBuild, VelaBuild, Imx500Build), whatever else it adds: the
    registry record, the tables and the agreement read only these."""

    compiler: str
    version: str
    platform: str
    onnx: str
    log: str
    seconds: float
    mappings: list  # per node of ours, where the compiler's log could be mapped back (RKNN); else empty
    rows: list
    notes: list[str]
    rknn_file: str | None

    def summary(self) -> dict: ...

    def as_dict(self) -> dict: ...


@dataclass
class Agreement:
    """Our profile's placement beside the compiler's, on the nodes the compiler's log could be mapped to."""

    target: str
    compiler: str
    version: str
    nodes: int
    mapped: int
    agree: int
    share: float | None  # agree / mapped; with basis "whole graph": 1.0 when both sides agree on all-NPU or not
    disagreements: list[dict] = field(default_factory=list)
    unmapped: list[dict] = field(default_factory=list)
    basis: str = "nodes"  # "nodes" (RKNN: node by node) | "whole graph" (Vela: TFLite operators are not our nodes)
    verdict: str | None = None


def agreement(ours: TargetReport, build) -> Agreement:
    """Per node: our npu/cpu/unknown vs the compiler's NPU/CPU; unknown never agrees (we did not decide).

    A compiler without per-node mappings (Vela) is compared on the whole graph: does each side put everything on
    the NPU? The verdict says both counts."""
    theirs = {m.node: m for m in build.mappings}
    work = [p for p in ours.placements if p.placement != "n/a"]
    network = getattr(build, "network", None)
    if not theirs and network is not None:
        ours_all = ours.nodes_cpu == 0 and ours.nodes_unknown == 0
        cpu = network.get("cpu_ops", 0)
        verdict = (f"profile: {ours.nodes_cpu} CPU and {ours.nodes_unknown} unknown of {len(work)} nodes; "
                   f"{build.compiler}: {cpu} CPU of {cpu + network.get('npu_ops', 0)} operators")
        return Agreement(target=ours.target, compiler=build.compiler, version=build.version, nodes=len(work), mapped=0, agree=0,
                         share=1.0 if ours_all == (cpu == 0) else 0.0, basis="whole graph", verdict=verdict)
    mapped, disagreements, unmapped = 0, [], []
    for p in work:
        m = theirs.get(p.name)
        if m is None or m.target is None:
            unmapped.append({"node": p.name, "op": p.op, "ours": p.placement})
            continue
        mapped += 1
        if p.placement != m.target.lower():
            disagreements.append({"node": p.name, "op": p.op, "ours": p.placement, "our_reason": p.reason, "source": p.source,
                                  "compiler": m.target, "compiler_row": m.row, "mapped_via": m.via})
    agree = mapped - len(disagreements)
    return Agreement(target=ours.target, compiler=build.compiler, version=build.version, nodes=len(work), mapped=mapped, agree=agree,
                     share=agree / mapped if mapped else None, disagreements=disagreements, unmapped=unmapped)


def imx_agreement(ours: TargetReport, build) -> Agreement:
    """IMX500 runs a whole model on the sensor or nothing: our "all on the NPU" against the converter's pass (and its
    memory fit). A build that failed before the converter ran (Ultralytics' own model gate) decides nothing: share None."""
    work = [p for p in ours.placements if p.placement != "n/a"]
    ours_all = ours.nodes_cpu == 0 and ours.nodes_unknown == 0
    fits = build.memory.get("fits")
    verdict = (f"profile: {ours.nodes_cpu} CPU and {ours.nodes_unknown} unknown of {len(work)} nodes; imx500: "
               + ("compiled" + (f", {build.memory['used_mb']:.2f} of {build.memory['available_mb']:.2f} MB"
                                if {"used_mb", "available_mb"} <= build.memory.keys() else "")
                  + ("" if fits is not False else ", does NOT fit the sensor")
                  if build.ok else f"failed ({build.error})"))
    share = None if not build.ok and not build.converter_ran else 1.0 if ours_all == (build.ok and fits is not False) else 0.0
    return Agreement(target=ours.target, compiler=build.compiler, version=build.version, nodes=len(work), mapped=0, agree=0,
                     share=share, basis="whole graph", verdict=verdict)
