"""Training operations: train, resume, series (run, rank), distillation, pruning, the hybrid search and the ReLU-gap
study. Each returns what the run or series recorded; a door prints it or hands it back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from npuyolo.services.common import registry_of
from npuyolo.services.options import (DistillOptions, ExecutorOptions, HybridOptions, PruneOptions, ReluGapOptions,
                                      ResumeOptions, StudyReportOptions, TrainOptions)

__all__ = ["Ranking", "SeriesRun", "StudyResult", "distill", "hybrid_search", "make_executor", "prune", "rank",
           "relu_gap", "resume", "series_run", "study_report", "train"]


def train(registry: Any, variant: str, data: str | Path, options: TrainOptions | None = None, *, verbose: bool = True,
          **overrides: Any):
    """Train a variant: the report's recipe, then the recipe file, then `overrides` (recipe fields; None: not given),
    with an optional LeakyReLU -> ReLU slope schedule; returns the run as recorded (a `RunRecord`)."""
    from npuyolo.train.anneal import with_anneal
    from npuyolo.train.recipe import Recipe
    from npuyolo.train.trainer import train_variant

    o = options or TrainOptions()
    recipe = with_anneal(Recipe.load(o.recipe, **overrides), o.act_anneal, o.anneal_epochs, o.anneal_schedule)
    reg = registry_of(registry)
    return reg.get_run(train_variant(reg, variant, data, recipe, name=o.name, weights=o.weights, verbose=verbose).run_id)


def resume(registry: Any, run: str, source: str = ResumeOptions.source, *, verbose: bool = True):
    """Continue an interrupted run from its `last`, `previous` or `best` checkpoint; returns the run as recorded."""
    from npuyolo.train.trainer import resume_run

    reg = registry_of(registry)
    return reg.get_run(resume_run(reg, run, verbose=verbose, source=source).run_id)


def make_executor(options: ExecutorOptions | None = None, on_progress: Callable | None = None, **scheduler: Any):
    """The executor asked for, checked (Ray installed, resources) before anything is registered; only the Ray fields
    that differ from their defaults are passed, so the local executor refuses Ray-only ones."""
    from npuyolo.train.executors import make_executor as make

    o = options or ExecutorOptions()
    progress = {"on_progress": on_progress} if on_progress is not None and o.executor != "local" else {}
    return make(o.executor, **progress, **scheduler, **o.ray_fields())


@dataclass(frozen=True)
class SeriesRun:
    name: str
    members: list[dict]

    def as_dict(self) -> dict:
        return {"series": self.name, "members": self.members}


def series_run(registry: Any, spec_file: str | Path, options: ExecutorOptions | None = None, *,
               on_member: Callable[[str, str, str], None] | None = None, on_progress: Callable | None = None,
               verbose: bool = True) -> SeriesRun:
    """Train a series file's members (skipping finished, resuming interrupted) and rank them. `on_progress(series,
    states)`: the Ray or process executor's member states as they change; `on_member(series, variant, action)`: each member
    the local executor starts."""
    from npuyolo.train.executors import LocalExecutor
    from npuyolo.train.series import SeriesSpec, run_series

    spec = SeriesSpec.load(spec_file)
    runner = make_executor(options, (lambda states: on_progress(spec.name, states)) if on_progress else None)
    reg = registry_of(registry)  # after the executor checks: a missing Ray or a bad option registers nothing
    if isinstance(runner, LocalExecutor) and on_member is not None:
        runner.on_member = lambda variant, action: on_member(spec.name, variant, action)
    return SeriesRun(spec.name, run_series(reg, spec, executor=runner, verbose=verbose))


@dataclass(frozen=True)
class Ranking:
    """A series' ranking: one row per member, or, with seed replicates, one per variant (mean ± sd over seeds)."""

    name: str
    rows: list[dict]
    replicates: bool


def rank(registry: Any, name: str) -> Ranking:
    from npuyolo.train.series import has_replicates, rank_replicates, rank_series

    reg = registry_of(registry, readonly=True)
    if has_replicates(reg, name):
        return Ranking(name, rank_replicates(reg, name), True)
    return Ranking(name, rank_series(reg, name), False)


def distill(registry: Any, teacher: str, student_variant: str, data: str | Path, options: DistillOptions | None = None,
            *, verbose: bool = True, **overrides: Any):
    """Train a student with detection loss plus distillation from a trained teacher (a run or a .pt); the recipe file
    and `overrides` (recipe fields) as for `train`. Returns the student's run as recorded."""
    from npuyolo.distill.run import distill as run_distill
    from npuyolo.train.recipe import Recipe

    o = options or DistillOptions()
    recipe = Recipe.load(o.recipe, **overrides)
    reg = registry_of(registry)
    result = run_distill(reg, teacher, student_variant, data, recipe, alpha=o.alpha, beta=o.beta, gamma=o.gamma,
                         temperature=o.temperature, name=o.name, verbose=verbose)
    return reg.get_run(result.run_id)


def prune(registry: Any, run: str, options: PruneOptions | None = None, *, verbose: bool = True):
    """Prune a run's best weights, fine-tune them as a new run; size, mAP and latency before and after, recorded.
    Returns a `npuyolo.prune.prune.PruneResult`."""
    from npuyolo.prune.prune import prune_run

    o = options or PruneOptions()
    registry = registry_of(registry)
    result = prune_run(registry, run, ratio=o.ratio, method=o.method, finetune_epochs=o.finetune_epochs, data=o.data,
                       verbose=verbose)
    registry.add_artifact(result.run_id, *result.artefact())  # the record step: the report on the fine-tuned run
    return result


def hybrid_search(registry: Any, data: str | Path, options: HybridOptions | None = None,
                  executor: ExecutorOptions | None = None, *, on_progress: Callable | None = None,
                  verbose: bool = True) -> list[dict]:
    """Hybrid candidates trained as a series, checked on a target, ranked by mAP against NPU share (Pareto front)."""
    from npuyolo.study.hybrid import hybrid_search as search

    o = options or HybridOptions()
    asha = {"scheduler": o.scheduler, "grace_epochs": o.grace_epochs, "asha_metric": o.asha_metric} if o.scheduler else {}
    runner = make_executor(executor, (lambda states: on_progress(o.name, states)) if on_progress else None, **asha)
    return search(registry_of(registry), data, o.candidates, budget=o.budget, imgsz=o.imgsz, target=o.target, name=o.name,
                  executor=runner, verbose=verbose)


@dataclass(frozen=True)
class StudyResult:
    """The ReLU-gap study's rows (one per route) and the ko/en reports written from them."""

    name: str
    rows: list
    reports: list[Path]

    def as_dict(self) -> dict:
        return {"study": self.name, "rows": [asdict(r) for r in self.rows], "reports": [str(p) for p in self.reports]}


def relu_gap(registry: Any, data: str | Path, options: ReluGapOptions | None = None, *,
             on_member: Callable[[str, str], None] | None = None, verbose: bool = True) -> StudyResult:
    """L4-leaky, L4-relu, distilled and annealed L4-relu trained on the same seeds (finished members skipped), each
    route's gap and spread; the study's report written in English and Korean."""
    from npuyolo.report.render import render_study
    from npuyolo.study.relu_gap import relu_gap_study
    from npuyolo.train.recipe import load_mapping

    o = options or ReluGapOptions()
    overrides = load_mapping(o.recipe, "recipe") if o.recipe else {}
    reg = registry_of(registry)
    rows = relu_gap_study(reg, data, name=o.name, epochs=o.epochs, imgsz=o.imgsz, seeds=o.seeds, targets=o.targets,
                          recipe=overrides, extra_variants=o.extra_variants, anneal=o.anneal, on_member=on_member,
                          verbose=verbose)
    reports = [Path(render_study(reg, o.name, o.out, lang=lang)) for lang in ("en", "ko")]
    return StudyResult(o.name, rows, reports)


def study_report(registry: Any, name: str, lang: str = StudyReportOptions.lang, out: str | Path | None = None) -> Path:
    """A study's report written again from the registry (e.g. after more seeds finished)."""
    from npuyolo.report.render import render_study

    return Path(render_study(registry_of(registry, readonly=True), name, out, lang=lang))
