"""The pure core of a plan: `candidates()` says what to build for a target, `rank()` chooses among verified rows
(`lost_on` says on which axis the runner-up lost), `target_advice()` says what the numbers imply; `TargetPlan` and
`Plan` hold the choice."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from npuyolo.deploy.int8.options import ENDS
from npuyolo.deploy.plan.records import (ACCURACY_GUARD_PP, MOSTLY_ON_NPU, PLAN_BOOTSTRAP, RETRAIN_ABOVE_PP, REWRITES,
                                         VELA_U55_REWRITE_COST, Advice, Candidate, PlanError, Row)
from npuyolo.stats.bootstrap import map50_samples
from npuyolo.stats.compare import Estimate, Verdict, verdict_of
from npuyolo.stats.matched import MatchedStats

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
        self._draws: dict[bytes, tuple[float, object]] = {}  # content key -> (point; draws)

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
        key = _content_key(stats)  # rows of different targets load the same file's statistics as separate objects
        if key not in self._draws:
            self._draws[key] = map50_samples(stats, self.n, self.seed)
        return self._draws[key]


def _content_key(stats: MatchedStats) -> bytes:
    """What mAP50 and its resamples are computed from (the images, predictions and labels), hashed: equal statistics
    give equal draws, however many times a plan reads them."""
    h = hashlib.sha256("\0".join(stats.images).encode("utf-8", "surrogatepass"))  # names as the file system gave them
    for a in (stats.tp, stats.conf, stats.pred_cls, stats.pred_img, stats.target_cls, stats.target_img):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(repr(sorted(stats.names.items())).encode())
    return h.digest()


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
    return verdict_of(gap) is Verdict.AHEAD  # a zero-width interval (every resample alike) is no evidence


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
    the winner won on NPU time while less accurate, `accuracy_tie` holds the gap and its interval: a tie on accuracy.
    Where INT8 mAP50 decided, `gap_pp` holds winner - loser in points with its paired 95% interval over the val images
    (None without statistics for both): a tie where the interval spans 0, the higher point value shipped."""
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
            if gap is not None and verdict_of(gap) is Verdict.TIED:  # a tie where the interval spans 0 (or has no width)
                out["accuracy_tie_pp"] = [round(gap.value, 3), round(gap.low, 3), round(gap.high, 3)]
        return out
    if w.npu_ms is not None and l.npu_ms is None:
        return {"axis": "npu_ms_missing", "loser": None, "winner": w.npu_ms}
    if loser.shipped_int8.map50 != winner.shipped_int8.map50:
        vendor = winner.vendor is not None and loser.vendor is not None
        gap = noise.gap(winner, loser)  # winner - loser over the same val images; None without statistics for both
        return {"axis": "vendor_int8_map50" if vendor else "int8_map50", "loser": loser.shipped_int8.map50,
                "winner": winner.shipped_int8.map50,
                "gap_pp": None if gap is None else [round(gap.value, 3), round(gap.low, 3), round(gap.high, 3)]}
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
        if "gap_pp" not in why:  # recorded before the interval was
            return f"lower INT8 mAP50{whose}: {l:.3f} against {w:.3f} (no interval recorded)"
        if not why["gap_pp"]:
            return f"lower INT8 mAP50{whose}: {l:.3f} against {w:.3f} (no interval: per-image statistics missing)"
        v, lo, hi = why["gap_pp"]
        said = f"(the chosen {v:+.1f} points, 95% {lo:+.1f} to {hi:+.1f}"
        if verdict_of(Estimate(v, lo, hi)) is Verdict.AHEAD:
            return f"lower INT8 mAP50{whose}: {l:.3f} against {w:.3f} {said})"
        return f"tied on INT8 mAP50{whose}: {l:.3f} against {w:.3f} {said}: within noise); the higher point value was shipped"
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
