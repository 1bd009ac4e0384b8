"""`deploy plan`: for each NPU target, every artefact that could serve it, verified, then chosen.

The advice a report used to print was inferred from rules ("rewrite LeakyReLU, then it all runs on the NPU"). A plan
builds each candidate and measures it instead: placement on the profile (and the vendor compiler when installed),
FP32 and INT8 accuracy on val, and the same at the confidence threshold an NPU runtime bakes in.

The core is pure: `candidates()` says what to build for a target, `rank()` chooses among verified rows,
`target_advice()` says what the numbers imply. Building and measuring (export, rewrite, quantize, evaluate, compile) is
`build_plan`, at the edge.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from npuyolo.compilers.envs import CompilerError, installed
from npuyolo.data.check import check_dataset
from npuyolo.deploy.check import check_model, sigmoid_on_npu
from npuyolo.deploy.compile import compile_model, record
from npuyolo.deploy.runtime import DeployError
from npuyolo.deploy.export import check_imgsz
from npuyolo.deploy.plan.work import QuantizeSettings, build_files, worker_pool
from npuyolo.deploy.int8.quantize import ENDS
from npuyolo.errors import NpuyoloError
from npuyolo.npu.graph import load_graph
from npuyolo.npu.profiles import target as get_target
from npuyolo.npu.rewrite import rewrite_leaky
from npuyolo.paths import (FileReadError, atomic_path, file_problem, make_dir, read_regular_file, safe_join, sha256_file, slug,
                           write_text)
from npuyolo.registry.schema import RunStatus
from npuyolo.resolve import ModelRef
from npuyolo.stats.bootstrap import map50_samples
from npuyolo.stats.compare import Estimate
from npuyolo.stats.matched import MatchedStats
from npuyolo.train.series import variant_of
from npuyolo.variants.spec import parse_variant

DEPLOY_CONF = 0.25  # what NPU runtimes bake in; mAP at 0.001 overstates what ships
ACCURACY_GUARD_PP = 1.0  # without per-image statistics (plans recorded before them): the fixed margin the guard used
PLAN_BOOTSTRAP = 400  # paired resamples of the val images behind the accuracy guard's interval (mAP50 only: ~0.3 s a file)
RETRAIN_ABOVE_PP = 0.5  # a re-sloped model losing more than this (FP32 mAP50 points) is worth retraining at that slope
VELA_U55_REWRITE_COST = 2.54  # issue 22: Vela's estimate of relu-decomp against native LeakyReLU on Ethos-U55
REWRITES = ("relu-decomp", "relu-exact", "max")
MOSTLY_ON_NPU = 0.5  # below this share for every candidate, the plan says where the best one is cut off the NPU
# profile name -> (compiler, its platform name): the compilers `npu compile` drives
COMPILER_OF = {"rknn-rk3588": ("rknn", "rk3588"), "rknn-rk3566": ("rknn", "rk3566"),
               "ethos-u55": ("vela", "ethos-u55-128"), "ethos-u85": ("vela", "ethos-u85-256")}


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


@dataclass
class TargetPlan:
    target: str
    chosen: Row
    runner_up: Row | None
    why_runner_up_lost: str | None
    rows: list[Row]
    advice: list[Advice] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return [a.text for a in self.advice]

    def as_dict(self) -> dict:
        return {"target": self.target, "chosen": self.chosen.candidate.name, "artefact": self.chosen.int8_path,
                "runner_up": self.runner_up.candidate.name if self.runner_up else None,
                "why_runner_up_lost": self.why_runner_up_lost,
                "runner_up_lost_on": lost_on(self.chosen, self.runner_up, self.rows) if self.runner_up else None,
                "notes": self.notes,
                "advice": [{"kind": a.kind, "values": a.values} for a in self.advice], "rows": [r.as_dict() for r in self.rows]}


@dataclass
class Plan:
    model_ref: str
    run_id: int | None
    data: str
    conf: float
    calibration: str | None
    targets: list[TargetPlan]
    path: str | None = None
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    twin_run_id: int | None = None  # the series' ReLU twin behind the `relu-twin` candidates
    weights_note: str | None = None  # the run's best.pt is gone: planned from last.pt (said in the output and plan.json)

    def as_dict(self) -> dict:
        return {"model_ref": self.model_ref, "run_id": self.run_id, "twin_run_id": self.twin_run_id, "data": self.data,
                "weights_note": self.weights_note,
                "conf": self.conf,
                "calibration": self.calibration, "path": self.path, "seconds": self.seconds, "stages": self.stages,
                "targets": [t.as_dict() for t in self.targets]}


# -- a recorded plan (plan.json), read back -------------------------------------------------------------------------
MAX_PLAN_BYTES = 16 << 20  # a plan of 4 targets x 7 candidates is ~40 KB; anything this large is not one


class _Recorded(BaseModel):
    """Strict: a hand-edited "0.5" or true is not a number, a string is not a list (plan.json is read as JSON)."""

    model_config = ConfigDict(strict=True, extra="allow")


class _Accuracy(_Recorded):
    precision: float
    recall: float
    map50: float
    map50_95: float


class _Candidate(_Recorded):
    source: str
    graph: Optional[str]
    route: str
    name: str


class _Placement(_Recorded):
    share_nodes: float
    nodes_total: int
    nodes_cpu: int
    nodes_unknown: int
    partitions_host: int
    fallback_ops: dict[str, int]
    unknown_ops: dict[str, int]
    off_npu: int
    host_partitions: Optional[int] = None  # absent in plans recorded before it
    compiler: Optional[str] = None
    compiler_status: Optional[str] = None
    compiler_cpu_ops: Optional[int] = None
    npu_ms: Optional[float] = None
    compiled_file: Optional[str] = None
    first_off_npu: Optional[str] = None


class _Vendor(_Recorded):
    runtime: str
    int8: _Accuracy
    int8_at_conf: _Accuracy


class _Retention(_Recorded):
    precision: Optional[float]
    recall: Optional[float]
    map50: Optional[float]


class _Row(_Recorded):
    target: str
    candidate: _Candidate
    fp32_path: str
    int8_path: str
    placement: _Placement
    fp32: _Accuracy
    int8: _Accuracy
    fp32_at_conf: _Accuracy
    int8_at_conf: _Accuracy
    conf: float
    retention: _Retention
    vendor: Optional[_Vendor] = None
    int8_drop_pp: Optional[Annotated[list[float], Field(min_length=3, max_length=3)]] = None  # absent before intervals


class _ReslopeValues(_Recorded):
    slope: float
    change_pp: float
    retrain: bool
    threshold_pp: float
    train: str


class _LittleOnNpuValues(_Recorded):
    share: float
    candidate: str
    first_off_npu: Optional[str] = None


class _RewriteCostValues(_Recorded):
    graph: str
    ratio: float


class _RatioValues(_Recorded):
    ratio: float


class _Reslope(_Recorded):
    kind: Literal["reslope"]
    values: _ReslopeValues


class _LittleOnNpu(_Recorded):
    kind: Literal["little_on_npu"]
    values: _LittleOnNpuValues


class _RewriteCost(_Recorded):
    kind: Literal["rewrite_cost"]
    values: _RewriteCostValues


class _RewriteCostUnmeasured(_Recorded):
    kind: Literal["rewrite_cost_unmeasured"]
    values: _RatioValues


class _LostOn(_Recorded):
    axis: Literal["off_npu", "partitions_host", "accuracy_guard", "npu_ms", "npu_ms_missing", "int8_map50",
                  "vendor_int8_map50", "tie"]
    loser: Optional[float]
    winner: Optional[float]
    guard_pp: Optional[float] = None
    gap_pp: Optional[Annotated[list[float], Field(min_length=3, max_length=3)]] = None  # value, low, high (points)
    accuracy_tie_pp: Optional[Annotated[list[float], Field(min_length=3, max_length=3)]] = None


class _TargetPlan(_Recorded):
    target: str
    chosen: str
    runner_up: Optional[str]
    why_runner_up_lost: Optional[str]
    rows: list[_Row] = Field(min_length=1)
    runner_up_lost_on: Optional[_LostOn] = None  # absent in plans recorded before it
    notes: list[str] = []
    advice: Optional[list[Annotated[Union[_Reslope, _LittleOnNpu, _RewriteCost, _RewriteCostUnmeasured],
                                    Field(discriminator="kind")]]] = None  # absent: recorded before advice was data

    @model_validator(mode="after")
    def _named_rows(self):
        names = {r.candidate.name for r in self.rows}
        for what, name in (("chosen", self.chosen), ("runner_up", self.runner_up)):
            if name is not None and name not in names:
                raise ValueError(f"{what} {name[:80]!r} is none of its rows")
        return self


class RecordedPlan(_Recorded):
    """A plan.json as `Plan.as_dict()` writes it (older plans without advice, lost-on or twin included): every value a
    report reads, of its type. What a report or `series report` reads from a plan goes through this model."""

    model_ref: str
    run_id: Optional[int]
    twin_run_id: Optional[int] = None
    data: str
    conf: float
    calibration: Optional[str]
    path: Optional[str] = None
    seconds: float = 0.0
    stages: dict[str, float] = {}
    targets: list[_TargetPlan] = Field(min_length=1)
    weights_note: Optional[str] = None


def load_recorded_plan(path: str | Path) -> dict:
    """A recorded plan.json as a dict, validated whole (`RecordedPlan`); `PlanError` saying what is wrong (not a
    regular file, too large, not JSON, nested too deep, a value of the wrong type) in one line."""
    try:
        text = read_regular_file(path, MAX_PLAN_BYTES)
    except FileReadError as e:
        raise PlanError(str(e)) from None
    try:
        RecordedPlan.model_validate_json(text)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        said = " ".join(str(first["msg"]).split())
        raise PlanError(f"{path}: {where + ': ' if where else ''}{said}"[:300]) from None
    return json.loads(text)


# -- pure core ------------------------------------------------------------------------------------------------------
def int8_routes(dtypes: list[str]) -> list[str]:
    """Whole-graph INT8 everywhere; 16-bit or float ends only where the profile lists such a type (`ends_allowed`)."""

    routes = ["int8"]
    for value, dtype in ENDS.items():
        if dtype in dtypes or (value == "float" and "float32" in dtypes):
            routes.append(f"int8-ends-{value}")
    return routes


def allowed_slopes(profile) -> list[float] | None:
    """The LeakyReLU slopes a profile runs on the NPU, when it names them (amd-dpu: 26/256); None when any slope goes."""
    rule = profile.rule("LeakyRelu")
    if rule is None or rule.place != "npu":
        return None
    slopes = rule.constraints.get("slope_in")
    return [float(s) for s in slopes] if slopes else None


def candidates(profile, leaky_slopes: set[float], has_twin: bool) -> list[Candidate]:
    """What could serve `profile`: the export; each exact LeakyReLU rewrite; a re-slope to the one slope the profile
    allows, when the model's differ; the series' ReLU twin; each of them through every INT8 route the profile allows."""
    graphs: list[tuple[str, str | None]] = [("export", None)]
    if leaky_slopes:
        graphs += [("export", m) for m in REWRITES]
        allowed = allowed_slopes(profile)
        if allowed and not all(any(math.isclose(s, a, rel_tol=1e-6) for a in allowed) for s in leaky_slopes):
            graphs += [("export", f"slope{a!r}") for a in allowed]  # repr: 26/256 exactly, not 0.101562
    if has_twin:
        graphs.append(("relu-twin", None))
    return [Candidate(source, graph, route) for source, graph in graphs for route in int8_routes(profile.dtypes)]


AXES = ("off-NPU ops", "host partitions", "NPU ms", "INT8 mAP50")


def _axes(row: Row) -> tuple:
    """Each axis as "lower is better"; an NPU time nobody estimated is None."""
    p = row.placement
    return (p.off_npu, p.host_partitions, p.npu_ms, -row.shipped_int8.map50)


class AccuracyNoise:
    """Paired resamples of the val images behind the accuracy guard: each shipped INT8 file's mAP50 on the same
    PLAN_BOOTSTRAP resamples, drawn once per file (rows sharing a file share its draws) and only when a comparison
    needs them."""

    def __init__(self, n: int = PLAN_BOOTSTRAP, seed: int = 0):
        self.n, self.seed = n, seed
        self._draws: dict[int, tuple[MatchedStats, float, object]] = {}  # id -> (the stats, kept alive; point; draws)

    def gap(self, best: Row, row: Row) -> Estimate | None:
        """best - row, INT8 mAP50 in points, with its paired 95% interval; None without statistics for both."""
        return self.between(best.shipped_stats, row.shipped_stats)

    def between(self, a: MatchedStats | None, b: MatchedStats | None) -> Estimate | None:
        """a - b, mAP50 in points, with its paired 95% interval; None without statistics for both."""
        if a is None or b is None or set(a.images) != set(b.images):
            return None
        (pa, da), (pb, db) = self._of(a), self._of(b)
        return Estimate.of(pa - pb, da - db).pp()

    def _of(self, stats: MatchedStats):
        if id(stats) not in self._draws:
            self._draws[id(stats)] = (stats, *map50_samples(stats, self.n, self.seed))
        _, point, draws = self._draws[id(stats)]
        return point, draws


def _best_placed_alike(rows: list[Row]) -> dict[tuple[int, int], Row]:
    """(ops off the NPU, host partitions) -> the row with the highest INT8 mAP50 among the rows placed so."""
    best: dict[tuple[int, int], Row] = {}
    for r in rows:
        k = (r.placement.off_npu, r.placement.host_partitions)
        if k not in best or r.shipped_int8.map50 > best[k].shipped_int8.map50:
            best[k] = r
    return best


def _guarded(row: Row, best: dict[tuple[int, int], Row], noise: AccuracyNoise) -> bool:
    """Significantly less accurate than the most accurate candidate placed alike (the paired interval of the INT8
    mAP50 gap excludes 0): it may not win on NPU time (a barely trained ReLU twin 1.6 ms faster on Ethos-U is no
    reason to ship 0.17 mAP50 instead of 0.49). Within the noise, NPU time decides. Without per-image statistics the
    fixed ACCURACY_GUARD_PP margin stands in."""
    top = best[(row.placement.off_npu, row.placement.host_partitions)]
    if top is row or top.shipped_int8.map50 <= row.shipped_int8.map50:
        return False
    gap = noise.gap(top, row)
    if gap is None:
        return (top.shipped_int8.map50 - row.shipped_int8.map50) * 100 > ACCURACY_GUARD_PP
    return gap.low > 0


def sort_keys(rows: list[Row], noise: AccuracyNoise | None = None) -> list[tuple]:
    """Each row's ranking key, lower first: ops off the NPU, host partitions, then (among rows placed alike) those not
    significantly below the most accurate before the rest, then NPU time (unestimated last), then INT8 mAP50."""
    noise = noise or AccuracyNoise()
    best = _best_placed_alike(rows)
    keys = []
    for r in rows:
        off, parts, ms, neg_map = _axes(r)
        keys.append((off, parts, _guarded(r, best, noise), ms is None, ms or 0.0, neg_map))
    return keys


def dominates(a: Row, b: Row) -> bool:
    """`a` is at least as good as `b` on every axis and better on one. An NPU time no compiler estimated (its compile
    failed) counts as the worst, as in the ranking: what was not verified cannot win on it."""
    inf = lambda v: math.inf if v is None else v  # noqa: E731
    pairs = list(zip(map(inf, _axes(a)), map(inf, _axes(b))))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def lost_on(winner: Row, loser: Row, rows: list[Row] | None = None, noise: AccuracyNoise | None = None) -> dict:
    """The first ranking axis on which `loser` is behind `winner`, as data: {axis, loser, winner} (a report words it).
    `rows`: every candidate ranked with them, for the accuracy guard (the most accurate candidate placed alike). Where
    the winner won on NPU time while less accurate, `accuracy_tie` holds the gap and its interval: a tie on accuracy."""
    noise = noise or AccuracyNoise()
    w, l = winner.placement, loser.placement
    if l.off_npu != w.off_npu:
        return {"axis": "off_npu", "loser": l.off_npu, "winner": w.off_npu}
    if l.host_partitions != w.host_partitions:
        return {"axis": "partitions_host", "loser": l.host_partitions, "winner": w.host_partitions}
    best = _best_placed_alike(rows if rows else [winner, loser])
    faster = l.npu_ms is not None and (w.npu_ms is None or l.npu_ms < w.npu_ms)
    if faster and _guarded(loser, best, noise) and not _guarded(winner, best, noise):  # the guard, where it decided
        top = best[(l.off_npu, l.host_partitions)]
        gap = noise.gap(top, loser)
        return {"axis": "accuracy_guard", "loser": loser.shipped_int8.map50, "winner": top.shipped_int8.map50,
                "guard_pp": None if gap is not None else ACCURACY_GUARD_PP,
                "gap_pp": None if gap is None else [round(gap.value, 3), round(gap.low, 3), round(gap.high, 3)]}
    if l.npu_ms is not None and w.npu_ms is not None and l.npu_ms != w.npu_ms:
        out = {"axis": "npu_ms", "loser": l.npu_ms, "winner": w.npu_ms}
        if loser.shipped_int8.map50 > winner.shipped_int8.map50:  # the winner is faster but less accurate
            gap = noise.gap(loser, winner)
            if gap is not None and gap.low <= 0 <= gap.high:  # said to be a tie only where the interval spans 0
                out["accuracy_tie_pp"] = [round(gap.value, 3), round(gap.low, 3), round(gap.high, 3)]
        return out
    if w.npu_ms is not None and l.npu_ms is None:
        return {"axis": "npu_ms_missing", "loser": None, "winner": w.npu_ms}
    if loser.shipped_int8.map50 != winner.shipped_int8.map50:
        vendor = winner.vendor is not None and loser.vendor is not None
        return {"axis": "vendor_int8_map50" if vendor else "int8_map50", "loser": loser.shipped_int8.map50,
                "winner": winner.shipped_int8.map50}
    return {"axis": "tie", "loser": None, "winner": None}


def why_lost(winner: Row, loser: Row, rows: list[Row] | None = None, noise: AccuracyNoise | None = None) -> str:
    """The first ranking axis on which `loser` is behind `winner`, in words."""
    return lost_text(lost_on(winner, loser, rows, noise))


def lost_text(why: dict) -> str:
    axis, l, w = why["axis"], why["loser"], why["winner"]
    if axis == "off_npu":
        return f"{l} ops off the NPU against {w}"
    if axis == "partitions_host":
        return f"{l} host partitions against {w}"
    if axis == "accuracy_guard":
        if why.get("gap_pp"):
            v, lo, hi = why["gap_pp"]
            return (f"INT8 mAP50 {l:.3f}, significantly below the most accurate candidate placed as well ({w:.3f}; "
                    f"{v:.1f} points, 95% {lo:.1f} to {hi:.1f}): not chosen for its NPU time")
        return (f"INT8 mAP50 {l:.3f}, more than {why['guard_pp']:g} point(s) below the most accurate candidate placed as "
                f"well ({w:.3f}): not chosen for its NPU time")
    if axis == "npu_ms":
        tie = why.get("accuracy_tie_pp")
        said = f"slower on the NPU: {l:.2f} ms against {w:.2f} ms (compiler estimate)"
        if tie:
            said += f"; tied on accuracy (INT8 mAP50 {tie[0]:+.1f} points, 95% {tie[1]:+.1f} to {tie[2]:+.1f}: within noise)"
        return said
    if axis == "npu_ms_missing":
        return "no NPU time estimated"
    if axis in ("int8_map50", "vendor_int8_map50"):
        whose = " (the vendor's own INT8)" if axis == "vendor_int8_map50" else ""
        return f"lower INT8 mAP50{whose}: {l:.3f} against {w:.3f}"
    return "tied on every axis (placement, NPU time, INT8 mAP50); kept in candidate order (export, rewrites, re-slope, twin)"


def rank(rows: list[Row], noise: AccuracyNoise | None = None) -> tuple[Row, Row | None, str | None]:
    """Fewest ops off the NPU and host partitions, then lowest NPU time where a compiler estimates it, then highest
    INT8 mAP50; a candidate significantly less accurate than the most accurate one placed alike (paired interval of the
    INT8 mAP50 gap excludes 0; without statistics, more than ACCURACY_GUARD_PP points) cannot win on NPU time. A stable
    sort: on a full tie the candidate listed first wins (the export before what is derived from it)."""
    if not rows:
        raise PlanError("no candidate to rank")
    noise = noise or AccuracyNoise()
    keys = sort_keys(rows, noise)
    ordered = [rows[i] for i in sorted(range(len(rows)), key=keys.__getitem__)]
    chosen = ordered[0]
    runner = ordered[1] if len(ordered) > 1 else None
    return chosen, runner, why_lost(chosen, runner, rows, noise) if runner else None


def retrain_advised(change_pp: float) -> bool:
    """Retraining at the allowed slope pays only when the re-slope costs more than RETRAIN_ABOVE_PP mAP50 points."""
    return change_pp < -RETRAIN_ABOVE_PP


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


def target_advice(target: str, rows: list[Row], variant: str | None = None) -> list[Advice]:
    """What the verified rows imply beyond the ranking: the re-slope's measured cost, a target where nothing fits and
    where its graph is cut, the Ethos-U rewrite's price."""
    advice = []
    by = {(r.candidate.source, r.candidate.graph, r.candidate.route): r for r in rows}
    export = by.get(("export", None, "int8"))
    for r in rows:
        if r.candidate.slope is None or r.candidate.route != "int8" or export is None:
            continue
        change = (r.fp32.map50 - export.fp32.map50) * 100
        base = variant.split("-")[0] if variant else "L4"
        advice.append(Advice("reslope", {"slope": r.candidate.slope, "change_pp": change, "retrain": retrain_advised(change),
                                         "threshold_pp": RETRAIN_ABOVE_PP, "train": f"{base}-leaky{r.candidate.slope!r}"}))
    best = max(rows, key=lambda r: r.placement.share_nodes, default=None)
    if best is not None and best.placement.share_nodes < MOSTLY_ON_NPU:
        advice.append(Advice("little_on_npu", {"share": best.placement.share_nodes, "candidate": best.candidate.name,
                                               "first_off_npu": best.placement.first_off_npu}))
    if target.startswith("ethos-u") and export is not None:
        rewritten = [r for r in rows if r.candidate.graph in REWRITES and r.candidate.route == "int8"]
        timed = [r for r in rewritten if r.placement.npu_ms is not None]
        if export.placement.npu_ms is not None and timed:
            fastest = min(timed, key=lambda r: r.placement.npu_ms)
            advice.append(Advice("rewrite_cost", {"graph": fastest.candidate.graph,
                                                  "ratio": fastest.placement.npu_ms / export.placement.npu_ms}))
        elif rewritten:
            advice.append(Advice("rewrite_cost_unmeasured", {"ratio": VELA_U55_REWRITE_COST}))
    return advice


def target_notes(target: str, rows: list[Row], variant: str | None = None) -> list[str]:
    """`target_advice` in English: what the CLI prints and plan.json records as `notes`."""
    return [a.text for a in target_advice(target, rows, variant)]


# -- building and measuring (I/O) -----------------------------------------------------------------------------------
class _Stages:
    """Seconds spent per stage, for the plan's own timing."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str):
        stages = self

        class _Timer:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                stages.seconds[name] += time.perf_counter() - self.t

        return _Timer()


def leaky_slopes(path: str | Path) -> set[float]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    return {float(next((helper.get_attribute_value(a) for a in n.attribute if a.name == "alpha"), 0.01))
            for n in model.graph.node if n.op_type == "LeakyRelu"}


def write_graph(src: Path, dst: Path, graph: str) -> Path:
    """`src` with every LeakyReLU rewritten exactly (`graph` a rewrite method) or set to another slope (`slope<v>`)."""
    import onnx
    from onnx import helper


    model = load_graph(src).model
    if graph.startswith("slope"):
        value = float(graph[5:])
        for node in model.graph.node:
            if node.op_type == "LeakyRelu":
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("alpha", value))
        meta = {p.key: p for p in model.metadata_props}
        tag = f"leaky:slope{value!r}"
        if "npuyolo_rewrite" in meta:
            meta["npuyolo_rewrite"].value += "," + tag
        else:
            model.metadata_props.add(key="npuyolo_rewrite", value=tag)
    else:
        model, _ = rewrite_leaky(model, graph)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


def _twin(registry, run_id: int | None) -> str | None:
    """The finished ReLU twin of a LeakyReLU run in the same series (L4-leaky -> L4-relu), as a run id; else None."""
    if run_id is None:
        return None

    run = registry.get_run(run_id)
    if not run.series:
        return None
    spec = parse_variant(run.variant)
    if spec.is_hybrid or spec.activation != "leaky":
        return None
    twin = spec.model_copy(update={"activation": "relu", "slope": None}).name
    seed = run.recipe.get("seed")
    for m in registry.series(run.series).members:  # with seed replicates (`L4-relu/s1`), the twin of the same seed
        variant, member_seed = variant_of(m.variant)
        if variant == twin and member_seed in (None, seed) and m.status == RunStatus.FINISHED and m.run_id is not None:
            return str(m.run_id)
    return None


def _compile(placement: Placement, fp32: Path, target: str, data, registry, model_ref: str | None = None,
             imgsz: int | None = None, imx_builds: dict | None = None) -> None:
    """The vendor compiler's verdict on the FP32 graph (it quantizes itself), when one exists and is installed.

    IMX500 converts the PyTorch model (MCT quantizes it, the sensor runs all of it or nothing): `model_ref` is the
    model behind the candidate, None for a graph rewrite (which has no PyTorch model); one build per model, shared by
    its INT8 routes through `imx_builds` (MCT quantizes itself, whichever route we would take)."""

    if target == "imx500":
        env = installed("imx500")
        placement.compiler = "imx500" if env is None else f"imx500 {env.version}"
        if env is None:
            placement.compiler_status = "compiler not installed"
            return
        if model_ref is None or str(model_ref).lower().endswith(".onnx"):
            placement.compiler_status = ("not compiled: a graph rewrite has no PyTorch model for MCT to quantize"
                                         if model_ref is None else "not compiled: an ONNX file has no PyTorch model for MCT")
            return
        builds = imx_builds if imx_builds is not None else {}
        if model_ref not in builds:
            try:
                builds[model_ref] = compile_model(model_ref, "imx500", "imx500", data, registry, imgsz=imgsz)
                record(builds[model_ref], registry)
            except NpuyoloError as e:  # the compiler's or the FP32 export beside it: this target's row says so
                builds[model_ref] = e
        result = builds[model_ref]
        if isinstance(result, NpuyoloError):
            placement.compiler_status = f"failed: {result}"
            return
        build = result.build
        fits = build.ok and build.memory.get("fits") is True
        placement.compiler_status = "compiled" if fits else f"failed: {build.error or 'does not fit in the sensor'}"
        placement.compiler_cpu_ops = 0 if fits else None  # all of it on the sensor, or nothing
        placement.compiled_file = build.scored or None
        return
    if target not in COMPILER_OF:
        return
    compiler, platform = COMPILER_OF[target]
    env = installed(compiler)
    placement.compiler = compiler if env is None else f"{compiler} {env.version}"
    if env is None:
        placement.compiler_status = "compiler not installed"
        return

    try:
        result = compile_model(str(fp32), compiler, platform, data, registry)
    except CompilerError as e:
        placement.compiler_status = f"failed: {e}"
        return
    record(result, registry)
    summary = result.build.as_dict().get("summary", {})
    placement.compiler_status = "compiled"
    placement.compiler_cpu_ops = summary.get("rows_cpu")
    placement.npu_ms = summary.get("inference_ms")
    placement.compiled_file = result.build.rknn_file or getattr(result.build, "tflite", None) or None


def weights_note(run) -> str | None:
    """What a plan of `run` says when its best.pt is gone and resolve_model fell back to last.pt; else None."""
    if run is None or run.artifact_path("weights/best") is not None:
        return None
    last = run.artifact_path("weights/last")
    return None if last is None else (f"run {run.name}'s best.pt is missing; planned from last.pt ({last}), the last "
                                      "epoch's weights, not the best")


def model_folder(registry, ref: str) -> Path | None:
    """Where a plan of a checkpoint or ONNX file goes (not created here: nothing is made for a file the safe loader
    refuses): `<registry dir>/plan/<stem>-<sha256 of its bytes, 12 hex>/`, so two
    files both called best.pt never share (and replace) each other's plan and INT8 files, and the same file re-planned
    finds its folder again. None for a run (its own folder) or a variant (named alike only when it is the same)."""
    parsed = ModelRef.parse(ref)
    path = Path(parsed.text)
    if parsed.kind not in ("pt", "onnx") or file_problem(path) is not None:
        return None  # not a readable file: check_model says why
    return safe_join(registry.root, "plan", f"{slug(path.stem, 'model')[:80]}-{sha256_file(path)[:12]}")  # made once loaded


def build_plan(registry, ref: str, targets: list[str], data: str | Path, *, conf: float = DEPLOY_CONF, calib: int = 100,
               holdout: int = 50, imgsz: int | None = None, sweep: bool = True, vendor_int8: bool = False,
               workers: int | None = None, reuse: bool = True) -> Plan:
    """Build every candidate for every target, verify it, choose; the artefacts go under the run's `plan/` folder, the
    plan itself to `plan.json` there (and, for a run, into the registry as its `plan` artefact).

    `sweep=False` calibrates with MinMax instead of the sweep's choice (minutes less on a large model).
    `vendor_int8`: where the target's compiler is installed (RKNN, Vela), also score the vendor's own quantized model
    of each candidate (its simulator, TFLite's reference kernels) and rank by that INT8 accuracy: it is what ships.
    `workers`: processes that build the INT8 files and score every file (None: one per core; 1: none, all here). The
    plan is the same whatever the number. `reuse`: take the INT8 files and scores an earlier plan of this model built
    from the same inputs (content keys in the plan folder's `plan-cache.json`); False builds and scores everything."""

    started = time.perf_counter()
    if not targets:
        raise PlanError("name at least one target")
    if not 0.0 < conf < 1.0:
        raise PlanError(f"the confidence threshold must be between 0 and 1, got {conf:g}")
    if imgsz is not None:
        check_imgsz(imgsz)
    profiles = {t: get_target(t) for t in dict.fromkeys(targets)}  # unknown names fail before any export
    check_dataset(data, cache_dir=registry.root / "cache")
    if registry.readonly:
        raise PlanError("a plan writes artefacts; open the registry writable")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise PlanError(f"workers must be a whole number of processes, at least 1, got {workers!r}"[:200],
                        param="workers")
    with worker_pool(workers) as pool:  # started now: the workers come up while this process exports
        return _build_plan(registry, ref, profiles, data, conf, calib, holdout, imgsz, sweep, vendor_int8, reuse, pool,
                           started)


def _build_plan(registry, ref: str, profiles: dict, data, conf: float, calib: int, holdout: int, imgsz: int | None,
                sweep: bool, vendor_int8: bool, reuse: bool, pool, started: float) -> Plan:
    stage = _Stages()
    # (source, NPU sigmoid?) -> the graph check_model exported: targets without an NPU sigmoid share the -logits file
    exports: dict[tuple[str, bool], Path] = {}
    t0 = next(iter(profiles))
    own = model_folder(registry, ref)  # a checkpoint or ONNX file: its own folder, exports included
    with stage("export"):
        first = check_model(ref, [t0], registry, imgsz=imgsz, workdir=own)
    run_id, label = first.run_id, first.model_ref
    exports[("export", sigmoid_on_npu(profiles[t0]))] = Path(first.onnx_paths[t0])
    run = registry.get_run(run_id) if run_id is not None else None  # read once: folder, variant, size, seed
    folder = registry.run_dir(run, "plan") if run is not None else own or registry.output_dir("plan", slug(label, "model"))
    make_dir(folder)
    twin = _twin(registry, run_id)
    variant = run.variant if run is not None else None
    size = imgsz
    if size is None and run is not None:
        size = run.recipe.get("imgsz")

    def export_for(source: str, t: str) -> Path:
        key = (source, sigmoid_on_npu(profiles[t]))
        if key not in exports:
            with stage("export"):
                result = check_model(twin if source == "relu-twin" else ref, [t], registry, imgsz=size,
                                     workdir=own if source == "export" else None)
            exports[key] = Path(result.onnx_paths[t])
        return exports[key]

    graphs: dict[tuple[Path, str | None], Path] = {}

    def graph_file(base: Path, graph: str | None) -> Path:
        if graph is None:
            return base
        if (base, graph) not in graphs:
            with stage("rewrite"):
                graphs[(base, graph)] = write_graph(base, folder / f"{base.stem}.{graph}.onnx", graph)
        return graphs[(base, graph)]

    # every candidate's FP32 graph first (exports and rewrites need PyTorch and the registry: this process)
    specs = []
    for t, profile in profiles.items():
        base = export_for("export", t)
        for c in candidates(profile, leaky_slopes(base), twin is not None):
            specs.append((t, c, graph_file(export_for(c.source, t), c.graph)))
    # then every INT8 file and every score, in worker processes (none of them touches the registry)
    seed = run.recipe.get("seed", 0) if run is not None else 0
    files = build_files([(fp32, c.route) for _, c, fp32 in specs], folder,
                        QuantizeSettings(str(data), calib, holdout, seed, sweep), conf, pool, reuse)
    for name, seconds in files.seconds.items():
        stage.seconds[name] += seconds
    accuracy: dict[Path, tuple[Accuracy, Accuracy, MatchedStats]] = {}

    def measured(path: Path) -> tuple[Accuracy, Accuracy, MatchedStats]:
        if path not in accuracy:
            everything, at_conf, stats = files.scores[path]  # its statistics are kept in the plan's stats/
            accuracy[path] = Accuracy.of(everything), Accuracy.of(at_conf), stats
        return accuracy[path]

    placed: dict[tuple[Path, Path, str], Placement] = {}
    imx_builds: dict = {}
    # (FP32 graph, target) -> the compiler's verdict: it quantizes the FP32 graph itself, so one compile serves every
    # INT8 route of that graph (a Vela or RKNN build is tens of seconds)
    compiled: dict[tuple[Path, str], Placement] = {}
    verdict = ("compiler", "compiler_status", "compiler_cpu_ops", "npu_ms", "compiled_file")

    # the INT8 file that ships, placed like the graph it quantizes: each file read once for every target it serves
    serves: dict[Path, list[str]] = {}
    for t, c, fp32 in specs:
        serves.setdefault(files.int8[(fp32, c.route)], [])
        if t not in serves[files.int8[(fp32, c.route)]]:
            serves[files.int8[(fp32, c.route)]].append(t)
    with stage("place"):
        reports = {(path, t): r for path, ts in serves.items() for t, r in zip(ts, check_model(str(path), ts).reports,
                                                                                  strict=True)}

    def placement(fp32: Path, int8: Path, t: str, model_ref: str | None = None) -> Placement:
        if (fp32, int8, t) not in placed:
            r = reports[(int8, t)]
            first_off = next((f"{n.op} {n.name}: {n.reason}" for n in r.placements if n.placement in ("cpu", "unknown")), None)
            p = Placement(r.share_nodes, r.nodes_total, r.nodes_cpu, r.nodes_unknown, r.partitions_host, r.fallback_ops,
                          r.unknown_ops, first_off_npu=first_off)
            if (fp32, t) not in compiled:
                with stage("compile"):
                    _compile(p, fp32, t, data, registry, model_ref, size, imx_builds)
                compiled[(fp32, t)] = p
            else:
                for name in verdict:
                    setattr(p, name, getattr(compiled[(fp32, t)], name))
            placed[(fp32, int8, t)] = p
        return placed[(fp32, int8, t)]

    vendors: dict[str, VendorInt8 | str] = {}
    vendor_stats: dict[str, MatchedStats | None] = {}

    def vendor_scored(p: Placement) -> tuple[VendorInt8 | None, str | None]:
        """The vendor's INT8 of a compiled candidate, or why it could not be scored: one candidate's refusal (a
        contract mismatch, a driver that dies) must not sink the other candidates and targets of the plan."""
        if not vendor_int8 or p.compiled_file is None:
            return None, None
        if p.compiled_file not in vendors:
            from npuyolo.deploy.eval import vendor

            try:
                with stage("vendor int8"):
                    score = vendor.evaluate_compiled(p.compiled_file, data, deploy_conf=conf)
                vendors[p.compiled_file] = VendorInt8(score.runtime, Accuracy.of(score.result), Accuracy.of(score.at_conf))
                vendor_stats[p.compiled_file] = getattr(score, "stats", None)
            except NpuyoloError as e:
                vendors[p.compiled_file] = " ".join(str(e).split())[:300]
        got = vendors[p.compiled_file]
        return (None, got) if isinstance(got, str) else (got, None)

    plans = []
    noise = AccuracyNoise()  # one set of paired resamples for the whole plan: each file's draws are made once
    for t in profiles:
        rows = []
        for c, fp32 in ((c, fp32) for spec_t, c, fp32 in specs if spec_t == t):
            int8 = files.int8[(fp32, c.route)]
            (f_all, f_conf, f_stats), (q_all, q_conf, q_stats) = measured(fp32), measured(int8)
            source_model = None if c.graph is not None else {"export": ref, "relu-twin": twin}.get(c.source)
            placed_here = placement(fp32, int8, t, source_model)
            scored_by_vendor, vendor_error = vendor_scored(placed_here)
            rows.append(Row(t, c, str(fp32), str(int8), placed_here, f_all, q_all, f_conf, q_conf, conf, scored_by_vendor,
                            vendor_error, int8_stats=q_stats,
                            vendor_stats=vendor_stats.get(placed_here.compiled_file) if scored_by_vendor else None))
            drop = noise.between(f_stats, rows[-1].shipped_stats)
            rows[-1].int8_drop_pp = None if drop is None else [round(drop.value, 3), round(drop.low, 3), round(drop.high, 3)]
        chosen, runner, why = rank(rows, noise)
        plans.append(TargetPlan(t, chosen, runner, why, rows, target_advice(t, rows, variant)))
    plan = Plan(label, run_id, str(data), conf, files.calibration.label if files.calibration else None, plans,
                twin_run_id=int(twin) if twin is not None else None, weights_note=weights_note(run))
    plan.seconds = time.perf_counter() - started
    plan.stages = {k: round(v, 3) for k, v in stage.seconds.items()}
    out = folder / "plan.json"
    plan.path = str(out)
    write_text(out, json.dumps(plan.as_dict(), indent=2) + "\n")
    if run_id is not None:
        registry.add_artifact(run_id, "plan", out.resolve(), {"conf": conf, "choices": {p.target: p.chosen.candidate.name
                                                                                         for p in plans}})
    return plan


# -- a series: variant x target ---------------------------------------------------------------------------------------
def chosen_row(d: dict) -> dict:
    """The recorded row (`Row.as_dict()`) of a recorded target plan's chosen candidate (`TargetPlan.as_dict()`)."""
    return next(r for r in d["rows"] if r["candidate"]["name"] == d["chosen"])


def cell(tp: TargetPlan | dict) -> dict:
    """One matrix cell: the chosen artefact of one member for one target, with what made it win. Takes a TargetPlan or
    its recorded JSON (`TargetPlan.as_dict()`), so a report can rebuild the matrix from the registry alone."""
    d = tp.as_dict() if isinstance(tp, TargetPlan) else tp
    chosen = chosen_row(d)
    p = chosen["placement"]
    return {"artefact": d["chosen"], "path": chosen["int8_path"], "share_nodes": p["share_nodes"], "off_npu": p["off_npu"],
            "partitions_host": p.get("host_partitions", p["partitions_host"]), "npu_ms": p["npu_ms"],
            "compiler": p.get("compiler") if p.get("compiler_status") == "compiled" else None, "fp32_map50": chosen["fp32"]["map50"],
            "int8_map50": chosen["int8"]["map50"], "retention_map50": chosen["retention"]["map50"],
            "candidates": len(d["rows"]), "runner_up": d["runner_up"], "why_runner_up_lost": d["why_runner_up_lost"],
            "runner_up_lost_on": d.get("runner_up_lost_on")}


def matrix(plans: dict[str, dict]) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """variant -> target -> cell, from each member's plan as recorded (`Plan.as_dict()`); targets in first-seen order."""
    targets: dict[str, None] = {}
    cells: dict[str, dict[str, dict]] = {}
    for variant, plan in plans.items():
        cells[variant] = {}
        for tp in plan["targets"]:
            targets.setdefault(tp["target"])
            cells[variant][tp["target"]] = cell(tp)
    return list(targets), cells


@dataclass
class SeriesPlan:
    """Every finished member of a series planned for the same targets: which model to ship on which NPU."""

    series: str
    targets: list[str]
    plans: dict[str, Plan]  # variant -> its plan (recorded on its run)
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it has no plan (not finished)
    seconds: float = 0.0

    def cells(self) -> dict[str, dict[str, dict]]:
        return matrix({v: p.as_dict() for v, p in self.plans.items()})[1]

    def as_dict(self) -> dict:
        return {"series": self.series, "targets": self.targets, "seconds": self.seconds, "skipped": self.skipped,
                "cells": self.cells(), "plans": {v: {"run_id": p.run_id, "path": p.path} for v, p in self.plans.items()}}


def build_series_plan(registry, name: str, targets: list[str], data: str | Path | None = None, **kwargs) -> SeriesPlan:
    """`build_plan` for each finished member (each plan is recorded on its run, as `deploy plan` records it). `data`
    defaults to the series' own data set; `kwargs` go to `build_plan` (conf, calib, holdout, imgsz, sweep)."""

    started = time.perf_counter()
    if not targets:
        raise PlanError("name at least one target")
    for t in targets:  # an unknown name fails before the first member's export
        get_target(t)
    series = registry.series(name)
    data = data if data is not None else series.spec.get("data")
    if not data:
        raise PlanError(f"series {name!r} records no data set; name one")
    plans, skipped = {}, {}
    for m in series.members:
        if m.status != RunStatus.FINISHED or m.run_id is None:
            skipped[m.variant] = f"not finished ({m.status or 'not started'})"
            continue
        plans[m.variant] = build_plan(registry, str(m.run_id), targets, data, **kwargs)
    if not plans:
        raise PlanError(f"series {name!r} has no finished member to plan")
    return SeriesPlan(name, list(dict.fromkeys(targets)), plans, skipped, time.perf_counter() - started)
