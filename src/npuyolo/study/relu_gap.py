"""`study relu-gap`: the routes from LeakyReLU's accuracy to ReLU's placement, trained on equal terms and seeds.

Per seed, on the same data, recipe and budget: L4-leaky, L4-relu, L4-relu distilled from *that seed's* L4-leaky,
and L4-relu annealed from LeakyReLU (plus any extra variants). Each route is summarised over seeds (mean and
spread of best.pt's mAP50 / mAP50-95), its gap to L4-leaky, whether that gap is larger than the seed-to-seed
spread, its training cost (the distilled route pays for its teacher too) and its NPU placement.
The study is a series of kind `study:relu-gap`; its table is stored with it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npuyolo.data.check import check_dataset
from npuyolo.deploy.check import check_model, record
from npuyolo.distill.run import distill
from npuyolo.errors import NpuyoloError
from npuyolo.npu.profiles import target as get_target
from npuyolo.registry.db import RegistryError, RunStatus
from npuyolo.stats.compare import seed_gaps
from npuyolo.stats.matched import StatsError
from npuyolo.train.anneal import parse_anneal, with_anneal
from npuyolo.train.recipe import Recipe
from npuyolo.train.records import final_stats
from npuyolo.train.trainer import resume_run, train_variant
from npuyolo.variants.spec import parse_variant

__all__ = ["KIND", "ROUTES", "RouteRow", "StudyError", "relu_gap_study", "study_table"]

KIND = "study:relu-gap"
ROUTES = {  # route -> (variant, how it is trained)
    "leaky": ("L4-leaky", "plain"),
    "relu": ("L4-relu", "plain"),
    "distill": ("L4-relu", "distilled from the same seed's L4-leaky"),
    "anneal": ("L4-relu", "annealed from LeakyReLU to ReLU"),
}
METRICS = ("map50", "map50_95")
GAP_BOOTSTRAP = 500  # resamples of images and seeds behind each route's gap interval


class StudyError(NpuyoloError, ValueError):
    """A study that cannot run (too few epochs for annealing, bad seeds...)."""


@dataclass
class RouteRow:
    route: str
    variant: str
    how: str
    seeds: list[int]
    runs: list[int | None]
    map50: list[float]
    map50_95: list[float]
    mean: dict[str, float | None] = field(default_factory=dict)
    spread: dict[str, float | None] = field(default_factory=dict)  # max - min over seeds
    std: dict[str, float | None] = field(default_factory=dict)
    gap_pp: dict[str, float | None] = field(default_factory=dict)  # (route - leaky) in points
    beyond_spread: dict[str, bool | None] = field(default_factory=dict)
    # (route - leaky) in points with its 95% interval over images and seeds (stats.compare.seed_gap), and the verdict
    # ('ahead' / 'tied' / 'behind'); None where a run kept no per-image statistics
    gap_interval_pp: dict[str, list[float] | None] = field(default_factory=dict)
    gap_verdict: dict[str, str | None] = field(default_factory=dict)
    cost_s: float | None = None  # all seeds, teacher included for distillation
    npu: dict[str, dict] = field(default_factory=dict)  # target -> placement headline


def member_label(route: str, seed: int) -> str:
    return f"{route}/s{seed}"


def _summary(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    spread = (max(values) - min(values)) if len(values) > 1 else None
    return mean, std, spread


def _scores(run) -> dict[str, float] | None:
    """best.pt's validation (what would be deployed); the final epoch when the run recorded none."""
    if run.status != RunStatus.FINISHED:
        return None
    if run.best and all(run.best.get(m) is not None for m in METRICS):
        return {m: float(run.best[m]) for m in METRICS}
    return {m: float(run.epochs[-1].value(m)) for m in METRICS} if run.epochs else None


def _gap_intervals(rows: list[RouteRow], runs: dict) -> None:
    """Each route's gap to L4-leaky with an interval that carries both the images and the seeds (seed_gap), where
    every finished run of the two routes kept its best.pt's per-image statistics."""
    leaky = next((r for r in rows if r.route == "leaky"), None)
    for row in rows:
        row.gap_interval_pp = {m: None for m in METRICS}
        row.gap_verdict = {m: None for m in METRICS}
        if leaky is None or row is leaky:
            continue
        arms = [[final_stats(runs.get(rid)) for rid in r.runs if rid is not None and runs.get(rid) is not None
                 and runs[rid].status == RunStatus.FINISHED] for r in (row, leaky)]
        if not all(arms) or any(s is None for arm in arms for s in arm):
            continue
        try:
            gaps = seed_gaps(arms[0], arms[1], row.route, "leaky", n=GAP_BOOTSTRAP)
        except StatsError:
            continue
        for m in METRICS:
            e = gaps[m].gap.pp()
            row.gap_interval_pp[m], row.gap_verdict[m] = [e.low, e.high], gaps[m].verdict.value


def study_table(registry, name: str) -> list[RouteRow]:
    """Summarise a study from its recorded runs (pure over the registry: re-running it gives the same table)."""
    series = registry.series(name)
    spec = series.spec
    if spec.get("kind") != KIND:
        raise StudyError(f"series {name!r} is not a relu-gap study")
    members = {m.variant: m.run_id for m in series.members}
    runs = {rid: registry.get_run(rid) for rid in members.values() if rid is not None}
    rows = []
    for route in spec["routes"]:
        variant, how = spec["route_variants"][route]
        row = RouteRow(route, variant, how, [], [], [], [])
        cost = 0.0
        for seed in spec["seeds"]:
            rid = members.get(member_label(route, seed))
            run = runs.get(rid)
            row.seeds.append(seed)
            row.runs.append(rid)
            scores = _scores(run) if run else None
            if scores:
                row.map50.append(scores["map50"])
                row.map50_95.append(scores["map50_95"])
            if run and run.duration_s:
                cost += run.duration_s
                distill = run.recipe.distill  # unchecked when the row is read: a hand-edited one names no teacher
                teacher = distill.get("teacher_run") if route == "distill" and isinstance(distill, dict) else None
                if isinstance(teacher, int) and not isinstance(teacher, bool) and teacher in runs:
                    cost += runs[teacher].duration_s or 0.0
        row.cost_s = cost or None
        for m in METRICS:
            row.mean[m], row.std[m], row.spread[m] = _summary(getattr(row, m))
        rows.append(row)
    leaky = next((r for r in rows if r.route == "leaky"), None)
    for row in rows:
        for m in METRICS:
            if leaky is None or row.mean[m] is None or leaky.mean[m] is None:
                row.gap_pp[m], row.beyond_spread[m] = None, None
                continue
            row.gap_pp[m] = (row.mean[m] - leaky.mean[m]) * 100
            spreads = [s for s in (row.spread[m], leaky.spread[m]) if s is not None]
            row.beyond_spread[m] = (abs(row.gap_pp[m]) > max(spreads) * 100) if spreads and row.route != "leaky" else None
    _gap_intervals(rows, runs)
    for row in rows:
        first = next((rid for rid in row.runs if rid is not None and runs[rid].status == RunStatus.FINISHED), None)
        if first is not None:
            for check in registry.npu_checks(run_id=first):
                r = check.report
                row.npu[check.target] = {"share_nodes": r["share_nodes"], "share_macs": r["share_macs"],
                                            "cpu_fallbacks": sum(r["fallback_ops"].values()) + sum(r["unknown_ops"].values()),
                                            "partitions_host": r["partitions_host"]}
    return rows


def relu_gap_study(registry, data: str | Path, *, name: str = "relu-gap", epochs: int = 12, imgsz: int = 160,
                   seeds: list[int] | None = None, targets: list[str] | None = None, recipe: dict | None = None,
                   extra_variants: list[str] | None = None, anneal: str = "leaky0.1",
                   on_member: Callable[[str, str], None] | None = None, verbose: bool = True) -> list[RouteRow]:
    """Train every route for every seed (skipping finished members, resuming interrupted ones), check, summarise."""


    if isinstance(seeds, str):
        try:
            seeds = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise StudyError(f"seeds takes integers, e.g. [0, 1] or '0,1', got {seeds!r}") from None
    seeds = sorted(set(seeds if seeds is not None else [0, 1]))
    if not seeds or any(s < 0 for s in seeds):
        raise StudyError("seeds takes one or more non-negative integers, e.g. 0,1,2", param="seeds")
    targets = targets or ["relu-only"]
    for t in targets:
        get_target(t)
    parse_anneal(anneal, epochs)  # fails before any training on a schedule that cannot work
    routes = dict(ROUTES)
    for v in extra_variants or []:
        spec = parse_variant(v)
        routes[spec.name] = (spec.name, "plain")
    name = name.strip() if isinstance(name, str) else name
    if not name or len(name) > 60 or any(not c.isprintable() for c in name):
        raise StudyError(f"name must be 1 to 60 printable characters, got {name!r}", param="name")
    try:
        existing = registry.series(name)
    except RegistryError:
        existing = None
    if existing is not None and existing.spec.get("kind") != KIND:
        raise StudyError(f"{name!r} is already an ordinary series; give the study another `name`")
    data = Path(data).resolve()
    check_dataset(data, cache_dir=registry.root / "cache")  # before anything is written
    base = Recipe.load(**{**(recipe or {}), "epochs": epochs, "imgsz": imgsz})
    labels = [member_label(route, seed) for seed in seeds for route in routes]
    spec = {"kind": KIND, "name": name, "data": str(data), "variants": labels, "routes": list(routes), "seeds": seeds,
            "route_variants": {k: list(v) for k, v in routes.items()}, "targets": targets, "anneal": anneal,
            "recipe_resolved": base.model_dump()}
    registry.upsert_series(name, spec)
    for seed in seeds:
        r = base.model_copy(update={"seed": seed})
        for route, (variant, _) in routes.items():
            label = member_label(route, seed)
            members = {m.variant: m for m in registry.series(name).members}
            member = members[label]
            action = "skip" if member.status == RunStatus.FINISHED else "resume" if member.run_id is not None else "train"
            if on_member:
                on_member(label, action)
            if action == "resume":
                resume_run(registry, member.run_id, verbose=verbose)
                continue
            if action == "skip":
                continue
            run_name = registry.unique_name(f"{name}-{route}-s{seed}")
            bind = lambda rid, lab=label: registry.set_series_member(name, lab, rid)  # noqa: E731
            if route == "distill":
                teacher = members[member_label("leaky", seed)].run_id
                if teacher is None or registry.get_run(teacher).status != RunStatus.FINISHED:
                    raise StudyError(f"seed {seed}: the L4-leaky teacher did not finish; re-run the study to continue")
                distill(registry, str(teacher), variant, data, r, name=run_name, verbose=verbose, series=name, on_created=bind)
            elif route == "anneal":
                train_variant(registry, variant, data, with_anneal(r, anneal), name=run_name, series=name, verbose=verbose,
                              on_created=bind)
            else:
                train_variant(registry, variant, data, r, name=run_name, series=name, verbose=verbose, on_created=bind)
    members = {m.variant: m for m in registry.series(name).members}
    for route in routes:  # placement depends on the architecture only: one member per route is checked
        rid = members[member_label(route, seeds[0])].run_id
        done = {c.target for c in registry.npu_checks(run_id=rid)}
        missing = [t for t in targets if t not in done]
        if missing:
            record(registry, check_model(registry, str(rid), missing, imgsz=imgsz), None)
    rows = study_table(registry, name)
    registry.upsert_series(name, {**spec, "table": [asdict(r) for r in rows]})
    return rows
