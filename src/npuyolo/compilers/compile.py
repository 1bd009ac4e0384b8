"""A vendor compiler as a referee: which of our profiles each compiler target checks, how its placement compares with
ours (per node, or for the whole graph), and the registry record. The export-then-compile wiring of `npu compile` is
`npuyolo.deploy.compile` (the layer that owns the exporter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from npuyolo.compilers.calibration import calibration_arrays, write_calibration
from npuyolo.compilers.envs import CompilerError
from npuyolo.npu.analyze import TargetReport

__all__ = ["MAX_SIDE", "PROFILES", "Agreement", "Build", "CompileResult", "agreement", "calibration_arrays", "imx_agreement",
           "input_side", "profile_for", "record", "write_calibration"]

# compiler -> {its target name: our profile}
PROFILES = {"rknn": {"rk3588": "rknn-rk3588", "rk3566": "rknn-rk3566"},
            "vela": {"ethos-u55-128": "ethos-u55", "ethos-u85-256": "ethos-u85"},
            "imx500": {"imx500": "imx500"}}


def profile_for(compiler: str, target: str) -> tuple[str, str]:
    """(compiler's platform name, our profile name) from either spelling: rk3588 or rknn-rk3588."""
    if compiler not in PROFILES:
        raise CompilerError(f"compiler must be one of {', '.join(PROFILES)}, got {compiler!r}", param="compiler")
    for platform, profile in PROFILES[compiler].items():
        if target in (platform, profile):
            return platform, profile
    names = ", ".join(PROFILES[compiler])
    raise CompilerError(f"target {target!r} is not a {compiler} target; {compiler} targets: {names}", param="target")


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


@dataclass
class CompileResult:
    model_ref: str
    run_id: int | None
    profile: str
    build: Build
    calibration: str
    ours: TargetReport
    agreement: Agreement

    def as_dict(self, with_nodes: bool = False) -> dict:
        from dataclasses import asdict

        build = self.build.as_dict()
        if not with_nodes:
            build.pop("rows")
            build.pop("mappings")
        return {"model_ref": self.model_ref, "run_id": self.run_id, "profile": self.profile, "calibration": self.calibration,
                "onnx": self.build.onnx, "build": build, "agreement": asdict(self.agreement),
                "ours": self.ours.as_dict(with_nodes=False)}


MAX_SIDE = 4096  # px per side; calibration images are made at the input's size (100000² would be 30 GB each)


def input_side(onnx_path: Path) -> int:
    """The side of the ONNX file's static, square-sized input, refused (before anything is allocated for it) when it is
    symbolic or beyond MAX_SIDE: a file may declare any size."""
    import onnx

    dims = [d.dim_value if d.HasField("dim_value") else 0
            for d in onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
    h, w = dims[-2:] if len(dims) == 4 else (0, 0)
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        shown = "x".join(str(d or "?") for d in dims) or "no shape"
        raise CompilerError(f"{Path(onnx_path).name}: input {shown}; npu compile needs a static [1, 3, H, W] input with "
                            f"sides up to {MAX_SIDE} px")
    return int(w)


def record(result: CompileResult, registry) -> int:
    """One registry row per compile (per-node placement inside); for a run, the log also becomes a run artefact."""
    b = result.build
    row = registry.add_compiler_run(run_id=result.run_id, model_ref=result.model_ref, onnx_path=b.onnx, compiler=b.compiler,
                                    version=b.version, target=result.profile, log_path=b.log,
                                    result=result.as_dict(with_nodes=True))
    if result.run_id is not None:
        registry.add_artifact(result.run_id, f"compiler/{b.compiler}/{b.platform}/log", b.log,
                              {"version": b.version, "agreement": result.agreement.share})
    return row
