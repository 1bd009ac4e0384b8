"""A plan's records: what a candidate is, how it was placed and scored, the advice its rows imply, and the plan's
constants (the deployment threshold, the accuracy guard)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from npuyolo.compilers.registry import COMPILERS
from npuyolo.deploy.errors import DeployError
from npuyolo.stats.matched import MatchedStats

DEPLOY_CONF = 0.25  # what NPU runtimes bake in; mAP at 0.001 overstates what ships
ACCURACY_GUARD_PP = 1.0  # without per-image statistics (plans recorded before them): the fixed margin the guard used
PLAN_BOOTSTRAP = 400  # paired resamples of the val images behind the accuracy guard's interval (mAP50 only: ~0.3 s a file)
RETRAIN_ABOVE_PP = 0.5  # a re-sloped model losing more than this (FP32 mAP50 points) is worth retraining at that slope
VELA_U55_REWRITE_COST = 2.54  # issue 22: Vela's estimate of relu-decomp against native LeakyReLU on Ethos-U55
REWRITES = ("relu-decomp", "relu-exact", "max")
MOSTLY_ON_NPU = 0.5  # below this share for every candidate, the plan says where the best one is cut off the NPU
# profile name -> (compiler, its platform name), the registry's compilers as this module found them (a plan asks the
# registry itself, `serving`); a bundle reads which targets run only what a compiler built
COMPILER_OF = {profile: (s.name, platform) for s in COMPILERS.values() for platform, profile in s.platforms.items()}


class PlanError(DeployError):
    """A plan that cannot be made as asked (bad threshold, no target)."""



# -- records --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One artefact to build: a model (`export` = the model as given, `relu-twin` = its series' ReLU twin), an exact
    rewrite or a re-slope of its graph, and an INT8 route."""

    source: str  # export | relu-twin
    graph: str | None  # None (as exported) | relu-decomp | relu-exact | max | slope<value>
    route: str  # int8 (whole graph, the plan's calibration) | int8-ends-int16 | int8-ends-float (first/output Convs wider)

    @property
    def name(self) -> str:
        return "+".join([self.source] + ([self.graph] if self.graph else []) + [self.route])

    @property
    def slope(self) -> float | None:
        return float(self.graph[5:]) if self.graph and self.graph.startswith("slope") else None


@dataclass
class Accuracy:
    precision: float
    recall: float
    map50: float
    map50_95: float

    @classmethod
    def of(cls, result: dict) -> Accuracy:
        """From a validation result (`validate`, `deploy eval`): its P, R, mAP50, mAP50-95."""
        return cls(result["precision"], result["recall"], result["map50"], result["map50_95"])


@dataclass
class Placement:
    share_nodes: float
    nodes_total: int
    nodes_cpu: int
    nodes_unknown: int
    partitions_host: int
    fallback_ops: dict[str, int]
    unknown_ops: dict[str, int]
    compiler: str | None = None  # "rknn 2.3.0", or None when no compiler exists for the target
    compiler_status: str | None = None  # "compiled" | "compiler not installed" | "failed: ..."
    compiler_cpu_ops: int | None = None
    npu_ms: float | None = None  # the compiler's estimate
    compiled_file: str | None = None  # what the compiler built (.rknn, or the int8 .tflite behind a Vela build)
    first_off_npu: str | None = None  # the first node the profile keeps off the NPU, and why (where a graph is cut)

    @property
    def off_npu(self) -> int:
        """Ops not on the NPU: the compiler's count when it ran, else the profile's CPU and unknown nodes."""
        return self.compiler_cpu_ops if self.compiler_cpu_ops is not None else self.nodes_cpu + self.nodes_unknown

    @property
    def host_partitions(self) -> int:
        """Host partitions: none when the compiler ran and kept every op on the NPU (it overrules a profile that does
        not know an op: Vela ran the `max` rewrite's 83 Max ops on U55, the profile counted 83 partitions), else the
        profile's count."""
        return 0 if self.compiler_cpu_ops == 0 else self.partitions_host


@dataclass
class VendorInt8:
    """The vendor's own quantized model of a candidate, scored like ours (`deploy eval` of the compiled file)."""

    runtime: str  # e.g. "rknn-toolkit2 simulator"
    int8: Accuracy
    int8_at_conf: Accuracy


@dataclass
class Row:
    """A verified candidate for one target."""

    target: str
    candidate: Candidate
    fp32_path: str
    int8_path: str
    placement: Placement
    fp32: Accuracy
    int8: Accuracy
    fp32_at_conf: Accuracy
    int8_at_conf: Accuracy
    conf: float
    vendor: VendorInt8 | None = None  # the vendor's INT8 of this candidate, when asked for and its compiler is installed
    vendor_error: str | None = None  # why the vendor's INT8 was asked for and could not be scored (the row ranks by ours)
    # FP32 - the INT8 that ships, mAP50 points: [value, 95% low, high] over paired resamples of the val images
    int8_drop_pp: list[float] | None = None
    int8_stats: MatchedStats | None = field(default=None, repr=False, compare=False)  # per image, for the guard's interval
    vendor_stats: MatchedStats | None = field(default=None, repr=False, compare=False)

    @property
    def shipped_stats(self) -> MatchedStats | None:
        """Per-image statistics of the INT8 that ships (the vendor's where it was scored), at mAP's threshold."""
        return self.vendor_stats if self.vendor is not None else self.int8_stats

    @property
    def shipped_int8(self) -> Accuracy:
        """The INT8 accuracy that ships: the vendor's own quantized model when it was scored, else our QDQ model's."""
        return self.vendor.int8 if self.vendor is not None else self.int8

    @property
    def retention(self) -> dict[str, float | None]:
        """INT8 that ships, at the deployment threshold, against FP32 at the same threshold (1.0 = nothing lost)."""
        at_conf = self.vendor.int8_at_conf if self.vendor is not None else self.int8_at_conf
        return {m: (getattr(at_conf, m) / getattr(self.fp32_at_conf, m) if getattr(self.fp32_at_conf, m) else None)
                for m in ("precision", "recall", "map50")}

    def as_dict(self) -> dict:
        d = asdict(replace(self, int8_stats=None, vendor_stats=None))  # statistics stay out of plan.json
        del d["int8_stats"], d["vendor_stats"]
        d["candidate"] = {**d["candidate"], "name": self.candidate.name}
        d["placement"]["off_npu"] = self.placement.off_npu
        d["placement"]["host_partitions"] = self.placement.host_partitions
        d["retention"] = self.retention
        return d


@dataclass(frozen=True)
class Advice:
    """One thing the verified rows imply beyond the ranking, as data (a report words it in its own language) and as an
    English note (`text`, what the CLI and plan.json print)."""

    kind: str  # reslope | little_on_npu | rewrite_cost | rewrite_cost_unmeasured
    values: dict

    @property
    def text(self) -> str:
        v = self.values
        if self.kind == "reslope":
            advice = (f"retraining at that slope is advised (train {v['train']})" if v["retrain"]
                      else f"within {v['threshold_pp']:g} points: no retraining needed")
            return (f"re-sloped to {v['slope']!r} without retraining: FP32 mAP50 {v['change_pp']:+.1f} points (measured on "
                    f"val); " + advice)
        if self.kind == "little_on_npu":
            where = f"; the first node off the NPU there: {v['first_off_npu']}" if v["first_off_npu"] else ""
            return f"no candidate runs even half its nodes on the NPU (best: {v['share']:.1%}, {v['candidate']}){where}"
        if self.kind == "rewrite_cost":
            verdict = "keep native LeakyReLU" if v["ratio"] > 1 else "the rewrite is not slower here"
            return (f"the fastest rewrite ({v['graph']}) takes {v['ratio']:.2f}× the NPU time of native LeakyReLU "
                    f"(Vela's estimate, measured here): {verdict}")
        if self.kind == "rewrite_cost_unmeasured":
            return (f"the rewrites' NPU time against native LeakyReLU is not measured here (Vela not installed); an "
                    f"earlier Vela estimate on U55 put relu-decomp at {v['ratio']}× native LeakyReLU: keep native "
                    f"LeakyReLU there unless a measurement says otherwise")
        raise ValueError(f"unknown advice kind {self.kind!r}")
