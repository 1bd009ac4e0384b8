"""A series: variants trained with one recipe on one data set, then ranked metric by metric."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from npuyolo.registry.db import DamagedRowError, NameTakenError, Registry, RegistryError, RunStatus
from npuyolo.stats.bootstrap import detection_metrics
from npuyolo.stats.compare import Verdict, compare_stats, seed_gaps
from npuyolo.stats.matched import MatchedStats, StatsError
from npuyolo.train.executors import Executor, LocalExecutor
from npuyolo.train.members import MemberJob
from npuyolo.train.recipe import Recipe, RecipeError, load_mapping, refuse_unnamed_keys, validation_message
from npuyolo.train.records import final_stats
from npuyolo.train.trainer import close_if_trained, prepare_resume, prepare_variant
from npuyolo.variants.spec import parse_variant

RANK_METRICS = ("map50", "map50_95", "precision", "recall")


class SeriesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60)
    data: str
    variants: list[str] = Field(min_length=1)
    recipe: dict = Field(default_factory=dict, description="overrides over the default recipe")
    recipe_file: str | None = None
    seeds: list[Annotated[int, Field(strict=True)]] | None = Field(default=None, min_length=1, max_length=20,
                                    description="seed replicates of every member (e.g. [0, 1, 2]); the recipe's seed when absent")

    def members(self) -> list[tuple[str, str, int | None]]:
        """(member key, variant, seed): a replicate's key is `<variant>/s<seed>`; without seeds, the variant itself."""
        if not self.seeds:
            return [(v, v, None) for v in self.variants]
        return [(member_key(v, seed), v, seed) for v in self.variants for seed in self.seeds]

    @classmethod
    def load(cls, path: str | Path) -> SeriesSpec:
        path = Path(path)
        try:
            spec = cls(**load_mapping(path, "series"))
        except ValidationError as e:
            raise RecipeError(validation_message(e, str(path))) from e
        refuse_unnamed_keys(spec.recipe, f"{path}: recipe")
        if len(set(spec.variants)) != len(spec.variants):
            raise RecipeError(f"{path}: variants lists a member twice")
        base = path.resolve().parent
        spec.data = str(base / spec.data) if not Path(spec.data).is_absolute() else spec.data
        if spec.recipe_file and not Path(spec.recipe_file).is_absolute():
            spec.recipe_file = str(base / spec.recipe_file)
        spec.variants = [parse_variant(v).name for v in spec.variants]  # fail early on a bad name
        if spec.seeds is not None and (len(set(spec.seeds)) != len(spec.seeds) or any(x < 0 for x in spec.seeds)):
            raise RecipeError(f"{path}: seeds must be distinct whole numbers >= 0, got {spec.seeds}")
        if spec.seeds is not None and "seed" in spec.recipe:
            raise RecipeError(f"{path}: give either seeds (replicates) or recipe.seed, not both")
        return spec

    def resolved_recipe(self) -> Recipe:
        return Recipe.load(self.recipe_file, **self.recipe)


def member_key(variant: str, seed: int) -> str:
    return f"{variant}/s{seed}"


def variant_of(key: str) -> tuple[str, int | None]:
    """A member key back to (variant, seed): `L4-leaky/s1` -> ('L4-leaky', 1); a plain variant -> (variant, None)."""
    variant, sep, seed = key.rpartition("/s")
    return (variant, int(seed)) if sep and seed.isdigit() else (key, None)


def run_series(registry: Registry, spec: SeriesSpec, on_member: Callable[[str, str], None] | None = None,
               verbose: bool = True, executor: Executor | None = None) -> list[dict]:
    """Train each member; finished members are skipped, interrupted or failed ones resumed.

    `executor`: a `LocalExecutor` (None: one, told `on_member`) trains here, one member after another; a
    `RayExecutor` trains them as Ray tasks while this process alone writes the registry. Either way a re-run continues
    where the last one stopped.
    """
    recipe = spec.resolved_recipe()
    if executor is None:
        executor = LocalExecutor(on_member=on_member)
    executor.open()  # Ray up and large enough before anything is registered
    try:
        return _run_series(registry, spec, recipe, verbose, executor)
    finally:
        executor.close()


def _run_series(registry: Registry, spec, recipe, verbose, executor) -> list[dict]:
    """`_train_members`; a member's run name taken meanwhile means another `series run` of this series is training it."""
    try:
        return _train_members(registry, spec, recipe, verbose, executor)
    except NameTakenError as e:
        raise RegistryError(f"series {spec.name}: member run {e.name!r} was just created by another run of this series "
                            "(two at once?); run it again once that one ends, and it continues where it stopped") from None


def _train_members(registry: Registry, spec, recipe, verbose, executor) -> list[dict]:
    keys = spec.members()
    registry.upsert_series(spec.name, {**spec.model_dump(), "variants": [k for k, _, _ in keys],
                                       "variant_names": spec.variants, "recipe_resolved": recipe.model_dump()})
    members = {m.variant: m for m in registry.series(spec.name).members}
    jobs = []
    for key, variant, seed in keys:
        member = members[key]
        if member.status in (RunStatus.FINISHED, RunStatus.STOPPED):  # stopped: ended early by a scheduler (ASHA), on purpose
            action = "skip"
        elif member.run_id is not None and close_if_trained(registry, member.run_id):  # trained, end not recorded
            action = "skip"
        elif member.run_id is not None:
            action = "resume"
        else:
            action = "train"
        member_recipe = recipe if seed is None else recipe.model_copy(update={"seed": seed})
        jobs.append(_job(registry, spec, member_recipe, key, action, member.run_id, verbose))
    executor.run(registry, jobs, prepare_retry=lambda run_id: prepare_resume(registry, run_id, verbose=False))
    return rank_series(registry, spec.name)


def _job(registry: Registry, spec: SeriesSpec, recipe: Recipe, key: str, action: str, run_id: int | None,
         verbose: bool = False) -> MemberJob:
    """A member for an executor: its run is registered (or re-claimed) on this process when it is dispatched."""
    variant, seed = variant_of(key)
    if action == "resume":
        prepare = lambda: prepare_resume(registry, run_id, verbose=verbose)  # noqa: E731
        epochs = Recipe.recorded(registry.get_run(run_id)).epochs
    else:
        run_name = f"{spec.name}-{variant}" + ("" if seed is None else f"-s{seed}")
        prepare = lambda: prepare_variant(registry, variant, spec.data, recipe, name=run_name,  # noqa: E731
                                          series=spec.name, verbose=verbose,
                                          on_created=lambda rid: registry.set_series_member(spec.name, key, rid))
        epochs = recipe.epochs
    return MemberJob(key, action, prepare, epochs, run_id)


def final_metrics(registry: Registry, run_id: int) -> dict:
    epochs = registry.epochs(run_id)
    return {k: epochs[-1].value(k) for k in RANK_METRICS} if epochs else {k: None for k in RANK_METRICS}


def rank_rows(rows: list[dict]) -> list[dict]:
    """Add `rank_<metric>` (1 = best, ties share a rank) for each metric among rows that have it."""
    for metric in RANK_METRICS:
        values = sorted({r[metric] for r in rows if r.get(metric) is not None}, reverse=True)
        for r in rows:
            r[f"rank_{metric}"] = values.index(r[metric]) + 1 if r.get(metric) is not None else None
    return sorted(rows, key=lambda r: (r["rank_map50"] is None, r["rank_map50"] or 0, r["rank_map50_95"] or 0))


RANK_BOOTSTRAP = 500  # paired resamples behind a series' ranks (each member's best.pt on the same val images)


def bootstrap_cache(registry: Registry) -> Path:
    """Where a registry's resampled figures are kept (`paired_bootstrap(keep_in=)`): a report rendered in two languages
    and two formats, or ranked again, draws its resamples once."""
    return registry.root / "cache" / "bootstrap"


def rank_with_intervals(rows: list[dict], stats: list[MatchedStats], keep_in: Path | None = None) -> list[dict]:
    """Ranks from the members' best.pt statistics: a member's rank is 1 + the number of members significantly ahead
    of it (the paired 95% interval of the difference excludes 0), so members the data cannot tell apart share a rank
    instead of being ordered by noise. Each row gets `<metric>_interval` [low, high] and `rank_basis` 'intervals'."""
    comparison = compare_stats(stats, [str(r["run_id"]) for r in rows], n=RANK_BOOTSTRAP, keep_in=keep_in)
    for r, summary in zip(rows, comparison.models):
        for metric in RANK_METRICS:
            e = getattr(summary, metric)
            r[metric], r[f"{metric}_interval"] = e.value, [e.low, e.high]
        r["rank_basis"] = "intervals"
    ranks = ranks_by_verdict([str(r["run_id"]) for r in rows], ((p.a, p.b, p.metric, p.verdict) for p in comparison.pairs))
    for r in rows:
        for metric in RANK_METRICS:
            r[f"rank_{metric}"] = ranks[(str(r["run_id"]), metric)]
    return rows


def ranks_by_verdict(keys: list[str], verdicts) -> dict[tuple[str, str], int]:
    """(key, metric) -> 1 + the number of others significantly ahead of it, from (a, b, metric, Verdict of a vs b)."""
    ahead = {(k, m): 0 for k in keys for m in RANK_METRICS}
    for a, b, metric, verdict in verdicts:
        if verdict is Verdict.AHEAD:
            ahead[(b, metric)] += 1
        elif verdict is Verdict.BEHIND:
            ahead[(a, metric)] += 1
    return {key: 1 + n for key, n in ahead.items()}


def _kept_stats(registry: Registry, run_id: int) -> MatchedStats | None:
    try:
        return final_stats(registry.get_run(run_id))
    except DamagedRowError:
        return None


SEED_BOOTSTRAP = 300  # resamples of images and seeds behind a seeded series' ranks


def rank_replicates(registry: Registry, name: str) -> list[dict]:
    """A series with seed replicates, one row per variant: each metric's mean ± sd over its finished seeds (best.pt's
    figures) and the per-seed values; with every run's per-image statistics, rank = 1 + the variants significantly
    ahead, their gap's interval combining image and seed variation (stats.compare.seed_gaps), so variants the data
    cannot tell apart share a rank. Without statistics, ranks come from the means ('point': no interval)."""
    by_variant: dict[str, list[dict]] = {}
    for r in ranked_rows(registry, name):
        variant, seed = variant_of(r["variant"])
        by_variant.setdefault(variant, []).append({**r, "seed": seed})
    rows = []
    for variant, members in by_variant.items():
        done = [m for m in members if m["status"] == RunStatus.FINISHED]
        stats = [_kept_stats(registry, m["run_id"]) for m in done]
        values = {metric: [float(x[metric]) for x in done if x[metric] is not None] for metric in RANK_METRICS}
        if stats and all(st is not None for st in stats):  # best.pt's own figures, as the gaps are computed on
            points = [detection_metrics(st) for st in stats]
            values = {metric: [float(pt[k]) for pt in points] for k, metric in enumerate(RANK_METRICS)}
        row = {"variant": variant, "seeds": [m["seed"] for m in done], "runs": [m["run_id"] for m in done],
               "status": f"{len(done)}/{len(members)} seeds finished", "_stats": stats}
        for metric in RANK_METRICS:
            v = values[metric]
            row[metric] = sum(v) / len(v) if v else None
            row[f"{metric}_sd"] = statistics.stdev(v) if len(v) > 1 else None
            row[f"{metric}_values"] = v
        rows.append(row)
    ranked = [r for r in rows if r["map50"] is not None]
    if len(ranked) > 1 and all(r["_stats"] and all(st is not None for st in r["_stats"]) for r in ranked):
        try:
            verdicts = [(a["variant"], b["variant"], m, g.verdict) for i, a in enumerate(ranked) for b in ranked[i + 1:]
                        for m, g in seed_gaps(a["_stats"], b["_stats"], a["variant"], b["variant"], n=SEED_BOOTSTRAP).items()]
        except StatsError:  # replicates scored on other images or labels: the means below
            verdicts = None
        if verdicts is not None:
            ranks = ranks_by_verdict([r["variant"] for r in ranked], verdicts)
            for r in ranked:
                r["rank_basis"] = "intervals (images + seeds)"
                for m in RANK_METRICS:
                    r[f"rank_{m}"] = ranks[(r["variant"], m)]
    if not ranked or ranked[0].get("rank_basis") is None:
        rank_rows(ranked)
        for r in ranked:
            r["rank_basis"] = "point"
    for r in rows:
        r.pop("_stats")
        for m in RANK_METRICS:
            r.setdefault(f"rank_{m}", None)
    return sorted(rows, key=lambda r: (r["rank_map50"] is None, r["rank_map50"] or 0, -(r["map50"] or 0)))


def has_replicates(registry: Registry, name: str) -> bool:
    return bool(registry.series(name).spec.get("seeds"))


def rank_series(registry: Registry, name: str) -> list[dict]:
    """Members ranked by their metrics; unfinished members (stopped early too) are listed, unranked, with the epochs
    they reached. Where every finished member kept its best.pt's per-image statistics, ranks come from paired
    intervals (`rank_with_intervals`: members the data cannot tell apart share a rank); otherwise from the final
    epoch's single numbers (`rank_basis` 'point': one seed, no interval)."""
    rows = ranked_rows(registry, name)
    done = [r for r in rows if r["status"] == RunStatus.FINISHED]
    stats = [_kept_stats(registry, r["run_id"]) for r in done]
    if len(done) > 1 and all(s is not None for s in stats):
        try:
            rank_with_intervals(done, stats, bootstrap_cache(registry))
            for r in rows:
                for metric in RANK_METRICS:
                    r.setdefault(f"rank_{metric}", None)  # unfinished members: listed, unranked
            return sorted(rows, key=lambda r: (r.get("rank_map50") is None, r.get("rank_map50") or 0,
                                               -(r["map50"] or 0), r.get("rank_map50_95") or 0))
        except StatsError:
            pass  # scored on other images (a member re-trained on changed data): single numbers below
    return rank_rows(rows)


def ranked_rows(registry: Registry, name: str) -> list[dict]:
    """One row per member with its final-epoch metrics (None where unfinished or damaged)."""
    rows = []
    for m in registry.series(name).members:
        finished = m.status == RunStatus.FINISHED
        try:
            metrics = final_metrics(registry, m.run_id) if finished else {k: None for k in RANK_METRICS}
            epochs = len(registry.epochs(m.run_id)) if m.run_id is not None else 0
        except DamagedRowError as e:  # a hand-edited row: listed unranked, saying why; the other members still rank
            rows.append({"variant": m.variant, "run_id": m.run_id, "status": "damaged", "epochs": 0, "error": str(e),
                         **{k: None for k in RANK_METRICS}})
            continue
        rows.append({"variant": m.variant, "run_id": m.run_id, "status": m.status or "not started", "epochs": epochs,
                     **metrics, "rank_basis": "point" if finished else None})
    return rows
