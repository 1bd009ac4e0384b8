"""Everything a report states, computed from registry records in one place (pure functions).

Templates only format these values; judgements (strengths, recommendations) are rules over them,
so no sentence can claim what the numbers do not show. Deployment strategies and next steps come from the run's
recorded `deploy plan` alone: each is a candidate that was built and measured, never advice inferred from rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npuyolo.deploy.plan import PlanError, cell, chosen_row, load_recorded_plan
from npuyolo.errors import NpuyoloError
from npuyolo.stats.compare import compare_stats
from npuyolo.stats.matched import StatsError
from npuyolo.registry.db import RECIPE_TYPES, CompilerRunRow, DeployEvalRow, EpochRow, NpuCheckRow, RegistryError, RunRecord
from npuyolo.train.records import final_stats
from npuyolo.train.series import bootstrap_cache, rank_series

METRICS = ("map50", "map50_95", "precision", "recall")
LOSSES = ("box_loss", "cls_loss", "dfl_loss")
GOOD_SHARE = 0.95  # a target is "deployable as is" at or above this NPU node share


class ReportError(NpuyoloError, LookupError):
    """Nothing to report on (unknown run, empty series)."""


def pct_change(first: float | None, last: float | None) -> float | None:
    """Relative change in percent; None when it cannot be computed."""
    if first in (None, 0) or last is None:
        return None
    return (last - first) / first * 100.0


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


@dataclass
class Judgement:
    kind: str  # strength | weakness | recommendation | strategy
    key: str  # template key (translated per language)
    values: dict = field(default_factory=dict)


@dataclass
class RunFacts:
    run: RunRecord
    final: EpochRow | None
    first: EpochRow | None
    improvement_factor: float | None
    loss_reduction_pct: dict[str, float | None]
    lr_final_over_initial_pct: float | None
    series_ranks: dict[str, int] | None
    series_size: int | None
    series_tied: dict[str, bool]
    compare: RunRecord | None
    compare_final: EpochRow | None
    diffs_pp: dict[str, float | None]
    npu: list[dict]
    int8: list[dict]
    judgements: list[Judgement]
    plan: dict | None = None  # the run's latest recorded `deploy plan` (plan.json), None when none is recorded
    plan_twin: str | None = None  # the name of the ReLU twin behind the plan's `relu-twin` candidates
    plan_problem: dict | None = None  # {"path", "why"}: a recorded plan.json not used (not a regular file, not a valid plan)
    # best.pt of this run vs the compared run's, paired over the same val images: metric -> {value, low, high} in
    # points and verdict; None where either run kept no per-image statistics (then: one seed, no interval)
    compare_intervals: dict | None = None

    @property
    def plan_note(self) -> str | None:
        """The one line a report says about a recorded plan it could not use."""
        p = self.plan_problem
        return None if p is None else f"{p['path']} is not a valid plan ({p['why']}); shown as no plan"

    @property
    def plan_cells(self) -> list[dict]:
        """Per planned target: its chosen artefact with what made it win (`deploy.plan.cell`)."""
        return [{"target": tp["target"], **cell(tp)} for tp in self.plan["targets"]] if self.plan else []


def final_and_first(run: RunRecord) -> tuple[EpochRow | None, EpochRow | None]:
    epochs = run.epochs or []
    return (epochs[-1], epochs[0]) if epochs else (None, None)


def npu_rows(checks: list[NpuCheckRow], compiles: list[CompilerRunRow] | None = None) -> list[dict]:
    """One row per checked target; `checked_by` names the vendor compiler whose placement was compared with the
    profile (`npu compile` / `npu check --referee`), else None: the placement is modelled from documents."""
    referee = {}
    for c in compiles or []:
        a, summary = c.result.get("agreement", {}), c.result.get("build", {}).get("summary", {})
        referee[c.target] = {"compiler": c.compiler, "version": c.version, "agree": a.get("agree"),
                                "mapped": a.get("mapped"), "share": a.get("share"), "ops_npu": summary.get("rows_npu"),
                                "ops_cpu": summary.get("rows_cpu"), "inference_ms": summary.get("inference_ms")}
    rows = []
    for c in checks:
        r = c.report
        rows.append({"checked_by": referee.get(r["target"]),"target": r["target"], "share_nodes": r["share_nodes"], "share_nodes_fused": r["share_nodes_fused"],
                     "share_macs": r["share_macs"], "partitions_host": r["partitions_host"], "transitions": r["transitions"],
                     "fallback_ops": r["fallback_ops"], "unknown_ops": r["unknown_ops"], "notes": r.get("notes", [])})
    return rows


def drop_interval(result: dict) -> dict | None:
    """The mAP50 drop's paired 95% interval (points) recorded with an INT8 evaluation: {"low", "high", "tied"}, or None
    for a row scored before intervals were recorded (or a damaged one)."""
    try:
        pp = result["drop_interval"]["map50"]["pp"]
        low, high = pp["low"], pp["high"]
    except (KeyError, TypeError, IndexError):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return None  # text or a bool in a hand-edited row is no number
    try:
        low, high = float(low), float(high)
    except OverflowError:  # an integer too large for a float
        return None
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    # as stats.compare.verdict_of: spanning 0, or zero-width (every resample alike: no evidence), is a tie
    return {"low": low, "high": high, "tied": not high > low or low <= 0 <= high}


def deploy_rows(evals: list[DeployEvalRow]) -> list[dict]:
    """Latest evaluation per artefact; INT8 rows carry their drop against the latest FP32 evaluation."""
    latest = {}
    for e in evals:
        latest[e.artefact] = e
    fp32 = [e for e in latest.values() if e.precision_kind == "fp32"]
    base = fp32[-1] if fp32 else None
    rows = []
    for e in latest.values():
        drop = (base.map50 - e.map50) * 100 if base and e.precision_kind == "int8" else None
        rows.append({"artefact": e.artefact.rsplit("/", 1)[-1], "kind": e.precision_kind, "map50": e.map50,
                     "map50_95": e.map50_95, "drop_pp": drop,
                     "drop_interval": drop_interval(e.result) if drop is not None else None})
    return sorted(rows, key=lambda r: {"pt": 0, "fp32": 1}.get(r["kind"], 2))


INT8_OK_DROP_PP = 1.0  # the target: <= 1 mAP50 point


def judge(facts: RunFacts) -> list[Judgement]:
    out: list[Judgement] = []
    run, final = facts.run, facts.final
    if facts.series_ranks:
        for m, rank in facts.series_ranks.items():
            if facts.series_tied.get(m):
                continue  # a shared rank says nothing about this run against the others
            if rank == 1 and facts.series_size and facts.series_size > 1:
                out.append(Judgement("strength", "series_first", {"metric": m, "size": facts.series_size}))
            elif facts.series_size and rank == facts.series_size and facts.series_size > 1:
                out.append(Judgement("weakness", "series_last", {"metric": m, "rank": rank, "size": facts.series_size}))
    if facts.compare_intervals:  # a difference is a finding only where its paired interval excludes 0
        for m in METRICS:
            e = facts.compare_intervals[m]
            values = {"metric": m, "pp": abs(e["value"]), "low": e["low"], "high": e["high"], "other": facts.compare.name}
            if e["verdict"] == "ahead":
                out.append(Judgement("strength", "beats_compare", values))
            elif e["verdict"] == "behind":
                out.append(Judgement("weakness", "behind_compare", values))
    elif facts.compare_final:  # no statistics to judge by: the difference is said as one seed, no interval
        for m in METRICS:
            d = facts.diffs_pp.get(m)
            if d is not None and d > 0:
                out.append(Judgement("strength", "beats_compare", {"metric": m, "pp": d, "other": facts.compare.name, "one_seed": True}))
            elif d is not None and d < 0:
                out.append(Judgement("weakness", "behind_compare", {"metric": m, "pp": -d, "other": facts.compare.name, "one_seed": True}))
    if final and final.recall is not None and final.precision is not None and final.precision - final.recall >= 0.05:
        out.append(Judgement("weakness", "recall_below_precision", {"p": final.precision, "r": final.recall}))
    if facts.improvement_factor is not None and facts.improvement_factor > 1:
        out.append(Judgement("strength", "learned", {"factor": facts.improvement_factor}))
    for row in facts.npu:
        if row["share_nodes"] >= GOOD_SHARE:
            out.append(Judgement("strength", "npu_ready", {"target": row["target"], "share": row["share_nodes"]}))
        else:
            ops = ", ".join(f"{k}×{v}" for k, v in {**row["fallback_ops"], **row["unknown_ops"]}.items())
            out.append(Judgement("weakness", "npu_fallback", {"target": row["target"], "share": row["share_nodes"], "ops": ops,
                                                              "transitions": row["transitions"]}))
    for r in facts.int8:
        if r["drop_pp"] is not None:
            ci = r["drop_interval"]
            # a loss within the images' noise is no weakness, whatever its point value
            kind = "strength" if r["drop_pp"] <= INT8_OK_DROP_PP or (ci and ci["tied"]) else "weakness"
            out.append(Judgement(kind, "int8_drop", {"artefact": r["artefact"], "pp": r["drop_pp"], "ci": ci}))
    return out + plan_judgements(facts)


def plan_judgements(facts: RunFacts) -> list[Judgement]:
    """Deployment strategies and next steps, from the recorded plan only: per target the chosen artefact (and why the
    runner-up lost), what its measurements imply (re-slope, Ethos-U rewrite cost, a graph cut off the NPU), and
    distillation where the plan chose the ReLU twin over a more accurate LeakyReLU model. No plan: say how to make one."""
    if facts.plan is None:
        return [Judgement("strategy", "no_plan", {"run": facts.run.id}),
                Judgement("recommendation", "run_plan", {"run": facts.run.id})]
    out = []
    for tp, c in zip(facts.plan["targets"], facts.plan_cells):
        out.append(Judgement("strategy", "plan_choice", c))
        if tp.get("advice") is not None:
            for a in tp["advice"]:
                out.append(Judgement("recommendation", f"plan_{a['kind']}", {"target": tp["target"], **a["values"]}))
        else:  # a plan recorded before advice was data: its English notes, as they were printed
            out += [Judgement("recommendation", "plan_note", {"target": tp["target"], "note": n}) for n in tp.get("notes", [])]
    gaps = {}
    for tp in facts.plan["targets"]:
        chosen = chosen_row(tp)
        own = [r["fp32"]["map50"] for r in tp["rows"] if r["candidate"]["source"] == "export"]
        if chosen["candidate"]["source"] == "relu-twin" and own and max(own) > chosen["fp32"]["map50"]:
            gaps[tp["target"]] = (max(own) - chosen["fp32"]["map50"]) * 100
    if gaps:
        out.append(Judgement("recommendation", "plan_distill", {"targets": ", ".join(gaps), "pp": max(gaps.values()),
                                                                "other": facts.plan_twin or "relu-twin"}))
    return out


def recorded_plan(registry, run: RunRecord) -> dict | None:
    """The run's latest recorded `deploy plan` (its plan.json); None when none is recorded, or its file is gone or
    not a valid plan (`plan_problem` says why)."""
    return plan_and_problem(run)[0]


def plan_and_problem(run: RunRecord) -> tuple[dict | None, dict | None]:
    """(the run's recorded plan, None) when it is valid; (None, {"path", "why"}) when its plan.json is gone, not a
    regular file, too large or not a valid plan (`deploy.plan.RecordedPlan`); (None, None) when none is recorded."""
    recorded = run.artifact("plan")
    if recorded is None:
        return None, None
    try:
        return load_recorded_plan(recorded.path), None
    except PlanError as e:
        why = str(e)
        for prefix in (f"{recorded.path}: ", f"{recorded.path} "):  # "PATH: targets.0...", "PATH is not a regular file"
            if why.startswith(prefix):
                why = why[len(prefix):]
                break
        return None, {"path": str(recorded.path), "why": why}


def _complete_recipe(run: RunRecord) -> None:
    """The report quotes every key of the recipe training records; a row without them is damaged, said in one line."""
    missing = [k for k in RECIPE_TYPES if k not in run.recipe]
    if missing:
        raise ReportError(f"run {run.id} ({run.name}): column recipe_json is damaged (no {', '.join(missing)}); "
                          "fix or delete that row")


def compare_intervals(run: RunRecord, other: RunRecord, n: int = 1000, keep_in: Path | None = None) -> dict | None:
    """best.pt of `run` against `other`'s, from the per-image statistics their final validations kept: each metric's
    difference in points with its paired 95% interval and verdict. None where either kept none (older runs) or they
    were scored on other images: the report then says one seed, no interval."""
    stats = [final_stats(r) for r in (run, other)]
    if any(s is None for s in stats):
        return None
    try:
        result = compare_stats(stats, ["a", "b"], n=n, keep_in=keep_in)
    except StatsError:  # scored on other images or labels
        return None
    return {p.metric: {**{k: v for k, v in asdict(p.diff.pp()).items()}, "verdict": p.verdict.value} for p in result.pairs}


def run_facts(registry, ref, compare_ref=None) -> RunFacts:

    try:
        run = registry.get_run(ref)
    except RegistryError as e:
        raise ReportError(str(e)) from None
    _complete_recipe(run)
    final, first = final_and_first(run)
    try:
        compare = registry.get_run(compare_ref) if compare_ref is not None else None
    except RegistryError as e:
        raise ReportError(f"compare: {e}", param="compare") from None
    if compare is not None and compare.id == run.id:
        raise ReportError(f"compare names run {run.id} itself; compare with another run (e.g. its ReLU twin)", param="compare")
    compare_final = final_and_first(compare)[0] if compare else None
    ranks, size, tied = None, None, {}
    if run.series and final:
        ranked = rank_series(registry, run.series)
        me = next((r for r in ranked if r["run_id"] == run.id), None)
        if me and me["rank_map50"] is not None:
            ranks = {m: me[f"rank_{m}"] for m in METRICS}
            size = sum(r["rank_map50"] is not None for r in ranked)
            tied = {m: sum(r[f"rank_{m}"] == me[f"rank_{m}"] for r in ranked) > 1 for m in METRICS}
    recipe = run.recipe
    facts = RunFacts(
        run=run, final=final, first=first,
        improvement_factor=ratio(final.map50, first.map50) if final and first else None,
        loss_reduction_pct={k: (-pct_change(first.value(k), final.value(k)) if pct_change(first.value(k), final.value(k)) is not None else None)
                            for k in LOSSES} if final and first else {k: None for k in LOSSES},
        lr_final_over_initial_pct=ratio(recipe.lr_final, recipe.lr0) * 100 if recipe.lr0 else None,
        series_ranks=ranks, series_size=size, series_tied=tied, compare=compare, compare_final=compare_final,
        diffs_pp={m: ((final.value(m) - compare_final.value(m)) * 100 if final and compare_final and final.value(m) is not None
                      and compare_final.value(m) is not None else None) for m in METRICS},
        npu=npu_rows(registry.npu_checks(run_id=run.id), registry.compiler_runs(run_id=run.id)), int8=deploy_rows(registry.deploy_evals(run.id)), judgements=[],
    )
    if compare is not None:
        facts.compare_intervals = compare_intervals(run, compare, keep_in=bootstrap_cache(registry))
    facts.plan, facts.plan_problem = plan_and_problem(run)
    twin = facts.plan.get("twin_run_id") if facts.plan else None
    if twin is not None:
        try:
            facts.plan_twin = registry.get_run(twin).name
        except RegistryError:  # the twin's run was deleted since: the plan's figures stand, its name is gone
            facts.plan_twin = None
    facts.judgements = judge(facts)
    return facts
