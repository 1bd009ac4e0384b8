"""Training: `npuyolo train`, `runs`, `series`, `distill`, `prune`, `hybrid`, `study`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from npuyolo.cli.common import (
    JsonOpt,
    PlanCalibOpt,
    PlanConfOpt,
    PlanHoldoutOpt,
    PlanReuseOpt,
    PlanSweepOpt,
    PlanWorkersOpt,
    RecipeDefaultsHelp,
    RegistryOpt,
    Table,
    app,
    console,
    duration,
    err,
    fmt,
    hybrid_app,
    open_registry,
    print_json,
    quiet_stdout,
    runs_app,
    series_app,
    study_app,
    user_errors,
)
from npuyolo.cli.tables import print_ranking, print_replicates, print_result, print_run, print_series_plan, print_study


@app.command(cls=RecipeDefaultsHelp,  # {key}: the recipe's default, filled in when the help is shown
             short_help="Train a variant with the report's recipe (defaults in train/default_recipe.yaml).",
             help="Train a variant with the report's recipe ({optimizer} lr0 {lr0} -> {lr_final}, {epochs} epochs, "
                  "{imgsz} px, seed {seed}; defaults from train/default_recipe.yaml).")
@user_errors
def train(variant: Annotated[Optional[str], typer.Option(help="Variant, e.g. L4-leaky. Required (unless --resume).")] = None,
          data: Annotated[Optional[Path], typer.Option(help="data.yaml (YOLO format). Required (unless --resume).")] = None,
          recipe: Annotated[Optional[Path], typer.Option(help="Recipe YAML over the report's defaults.")] = None,
          epochs: Annotated[Optional[int], typer.Option(help="[default: {epochs}, the recipe's]")] = None,
          batch: Annotated[Optional[int], typer.Option(help="[default: {batch}]")] = None,
          imgsz: Annotated[Optional[int], typer.Option(help="Training size, a multiple of 32 [default: {imgsz}]")] = None,
          lr0: Annotated[Optional[float], typer.Option(help="Initial learning rate [default: {lr0}]")] = None,
          lr_final: Annotated[Optional[float], typer.Option(help="Final learning rate [default: {lr_final}]")] = None,
          momentum: Annotated[Optional[float], typer.Option(help="SGD momentum [default: {momentum}]")] = None,
          weight_decay: Annotated[Optional[float], typer.Option(help="[default: {weight_decay}]")] = None,
          warmup_epochs: Annotated[Optional[float], typer.Option(help="[default: {warmup_epochs}]")] = None,
          seed: Annotated[Optional[int], typer.Option(help="[default: {seed}]")] = None,
          workers: Annotated[Optional[int], typer.Option(help="Data loader workers [default: min(8, CPUs)]")] = None,
          device: Annotated[Optional[str], typer.Option(help="cpu, 0, 0,1 ... [default: Ultralytics' choice]")] = None,
          fraction: Annotated[Optional[float], typer.Option(help="Use this share of the training images.")] = None,
          plots: Annotated[Optional[bool], typer.Option("--plots/--no-plots", help="Ultralytics training plots.")] = None,
          weights: Annotated[Optional[Path], typer.Option(help="Local .pt to transfer matching tensors from.")] = None,
          name: Annotated[Optional[str], typer.Option(help="Run name [default: <variant>-<id>].")] = None,
          resume: Annotated[Optional[str], typer.Option(help="Continue this interrupted run (id, #id or name).")] = None,
          from_checkpoint: Annotated[str, typer.Option("--from", help="With --resume: last, previous (the checkpoint before last) or best.")] = "last",
          act_anneal: Annotated[Optional[str], typer.Option("--act-anneal", help="Train a ReLU variant through this LeakyReLU (e.g. leaky0.1), slope annealed to exactly 0.")] = None,
          anneal_epochs: Annotated[Optional[str], typer.Option("--anneal-epochs", help="START:END epochs of the slope's fall (from 1) [default: 1:half of training].")] = None,
          anneal_schedule: Annotated[str, typer.Option("--anneal-schedule", help="linear or cosine.")] = "linear",
          as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    reg = open_registry(registry)
    try:
        with quiet_stdout(as_json):
            run_id = _train(reg, variant, data, recipe, resume, from_checkpoint, name, weights, act_anneal, anneal_epochs,
                            anneal_schedule, dict(epochs=epochs, batch=batch, imgsz=imgsz, lr0=lr0, lr_final=lr_final,
                                                  momentum=momentum, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                                                  seed=seed, workers=workers, device=device, fraction=fraction, plots=plots))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run is marked 'interrupted'; continue it with `npuyolo train --resume RUN`")
        raise typer.Exit(130) from None
    print_result(reg.get_run(run_id), as_json)


def _train(reg, variant, data, recipe, resume, from_checkpoint, name, weights, act_anneal, anneal_epochs, anneal_schedule,
           flags) -> int:
    """The run trained or continued, through the same service as `Workspace.train`; `--resume` takes no recipe flags."""
    from npuyolo.services import train_model
    from npuyolo.train.trainer import TrainError, resume_run

    if resume:
        given = [f"--{k.replace('_', '-')}" for k, v in {**flags, "variant": variant, "data": data, "recipe": recipe, "name": name,
                 "weights": weights, "act_anneal": act_anneal, "anneal_epochs": anneal_epochs}.items() if v is not None]
        if given:
            raise TrainError(f"--resume continues a run with its own recorded recipe; drop {', '.join(given)}"
                             " (or start a new run without --resume)")
        return resume_run(resume, reg, source=from_checkpoint).run_id
    if not variant or not data:
        raise TrainError("--variant and --data are required (or --resume RUN)")
    return train_model(reg, variant, data, recipe=recipe, name=name, weights=weights, act_anneal=act_anneal,
                       anneal_epochs=anneal_epochs, anneal_schedule=anneal_schedule, **flags).id


@runs_app.callback()
@user_errors
def runs_list(ctx: typer.Context, as_json: JsonOpt = False, series: Annotated[Optional[str], typer.Option(help="Only this series.")] = None,
              registry: RegistryOpt = None) -> None:
    """List runs."""
    if ctx.invoked_subcommand:
        ctx.obj = registry
        return
    rows, damaged = open_registry(registry, readonly=True).runs_checked(series)
    for line in damaged:  # the other rows still list
        err.print(f"[yellow]skipped:[/] {escape(line)}", highlight=False)
    if as_json:
        return print_json([r.as_dict() for r in rows])
    table = Table(title="runs")
    for col in ("id", "name", "variant", "series", "status", "epochs", "mAP50", "mAP50-95", "train time", "started"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id), r.name, r.variant, r.series or "-", r.status, str(r.epochs),
                      fmt(r.map50), fmt(r.map50_95), duration(r.duration_s), r.started_at)
    console.print(table)


@runs_app.command("show")
@user_errors
def runs_show(ctx: typer.Context, run: str, as_json: JsonOpt = False,
              registry: Annotated[Optional[Path], typer.Option("--registry", help="SQLite registry file [default: the group's]")] = None) -> None:
    """Print one run: recipe, epochs, artefacts."""
    record = open_registry(registry or ctx.obj, readonly=True).get_run(run)
    if as_json:
        return print_json(record.as_dict())
    print_run(record)
    console.print("recipe: " + json.dumps(record.recipe, sort_keys=True), highlight=False, markup=False)


@runs_app.command("export")
@user_errors
def runs_export(ctx: typer.Context, mlflow: Annotated[str, typer.Option("--mlflow", help="MLflow tracking URI to copy runs into, e.g. sqlite:///mlflow.db.")],
                run: Annotated[Optional[list[str]], typer.Option("--run", help="Run to export (repeatable) [default: all].")] = None,
                experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "npuyolo",
                as_json: JsonOpt = False,
                registry: Annotated[Optional[Path], typer.Option("--registry", help="SQLite registry file [default: the group's]")] = None) -> None:
    """Copy runs (recipe, per-epoch metrics, NPU checks, INT8 results, reports) into MLflow for `mlflow ui`."""
    from npuyolo.registry.db import Registry
    from npuyolo.registry.mlflow_export import export_runs

    with quiet_stdout(True):
        rows = export_runs(Registry(registry or ctx.obj, create=False), mlflow, run, experiment)
    if as_json:
        return print_json(rows)
    table = Table(title=f"exported to {mlflow} (experiment {experiment})")
    for col in ("run", "name", "MLflow run", "action"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["run_id"]), r["name"], r["mlflow_run_id"], r["action"])
    console.print(table)
    console.print(f"compare them with: mlflow ui --backend-store-uri {mlflow}", highlight=False, markup=False)


ExecutorOpt = Annotated[str, typer.Option(help="local (one member after another, here) or ray (members in parallel as Ray tasks).")]


AddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster: auto or ray://HOST:PORT [default: a local Ray runtime].")]


GpusOpt = Annotated[float, typer.Option(help="GPUs per member with --executor ray (fractions share a GPU, e.g. 0.25).")]


CpusOpt = Annotated[float, typer.Option(help="CPUs per member with --executor ray.")]


ParallelOpt = Annotated[Optional[int], typer.Option(help="Members training at once with --executor ray [default: as resources allow].")]


RetriesOpt = Annotated[int, typer.Option(help="Retries of a member whose Ray worker died, from its last checkpoint (--executor ray).")]


@contextlib.contextmanager
def series_executor(kind: str, title: str, as_json: bool, **flags):
    """The executor a series command asked for, with its live member table on stderr (Ray, not with --json).

    Only flags that differ from their defaults are passed on, so `--executor local` refuses Ray-only flags.
    """
    from npuyolo.train.executors import RayOptions, make_executor, progress_table

    defaults = RayOptions()
    flags = {k: v for k, v in flags.items() if not hasattr(defaults, k) or v != getattr(defaults, k)}
    if kind != "ray" or as_json:
        yield make_executor(kind, **flags)
        return
    from rich.live import Live

    with Live(console=err, refresh_per_second=2) as live:
        yield make_executor(kind, on_progress=lambda states: live.update(progress_table(states, title)), **flags)


@series_app.command("run")
@user_errors
def series_run(spec_file: Annotated[Path, typer.Argument(help="series.yaml: name, data, variants, recipe.")],
               as_json: JsonOpt = False, registry: RegistryOpt = None, executor: ExecutorOpt = "local",
               address: AddressOpt = None, gpus_per_member: GpusOpt = 0.0, cpus_per_member: CpusOpt = 1.0,
               max_parallel: ParallelOpt = None, max_retries: RetriesOpt = 1) -> None:
    """Train every member (skipping finished ones, resuming interrupted ones), then rank them."""
    from npuyolo.train.executors import LocalExecutor
    from npuyolo.train.series import SeriesSpec, run_series

    spec = SeriesSpec.load(spec_file)
    try:
        with series_executor(executor, f"series {spec.name} on Ray", as_json, address=address, gpus_per_member=gpus_per_member,
                             cpus_per_member=cpus_per_member, max_parallel=max_parallel, max_retries=max_retries) as runner:
            reg = open_registry(registry)  # after the executor checks: a missing Ray or a bad flag registers nothing
            with quiet_stdout(as_json):
                local = isinstance(runner, LocalExecutor)
                if local:  # members train here, one after another: a rule before each, Ultralytics' own progress between
                    runner.on_member = lambda v, a: err.rule(f"[bold]{escape(spec.name)}[/]: {v} ({a})")
                rows = run_series(spec, reg, executor=runner, verbose=local)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: run `npuyolo series run {escape(str(spec_file))}` again to continue")
        raise typer.Exit(130) from None
    if as_json:
        return print_json({"series": spec.name, "members": rows})
    print_ranking(spec.name, rows)


@series_app.command("rank")
@user_errors
def series_rank(name: str, as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Rank a series' members by mAP50, mAP50-95, precision and recall."""
    from npuyolo.train.series import has_replicates, rank_replicates, rank_series

    reg = open_registry(registry, readonly=True)
    if has_replicates(name, reg):  # seed replicates: one row per variant, mean ± sd over seeds
        rows = rank_replicates(name, reg)
        return print_json(rows) if as_json else print_replicates(name, rows)
    rows = rank_series(name, reg)
    if as_json:
        return print_json(rows)
    for r in rows:
        if r.get("error"):  # a damaged member: unranked, the others still rank
            err.print(f"[yellow]unranked:[/] {escape(r['error'])}", highlight=False)
    print_ranking(name, rows)


@series_app.command("plan")
@user_errors
def series_plan(name: str,
                target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
                data: Annotated[Optional[Path], typer.Option(help="data.yaml [default: the series' own].")] = None,
                conf: PlanConfOpt = 0.25,
                calib: PlanCalibOpt = 100,
                holdout: PlanHoldoutOpt = 50,
                sweep: PlanSweepOpt = True,
                workers: PlanWorkersOpt = None,
                reuse: PlanReuseOpt = True,
                imgsz: Annotated[Optional[int], typer.Option(help="Export size [default: each run's].")] = None,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """`deploy plan` for every finished member: which variant's artefact to ship on which NPU (variant x target)."""
    from npuyolo.deploy.plan import build_series_plan

    with err.status("planning each member..."), quiet_stdout():
        sp = build_series_plan(open_registry(registry), name, target, data, conf=conf, calib=calib, holdout=holdout,
                               imgsz=imgsz, sweep=sweep, workers=workers, reuse=reuse)
    if as_json:
        return print_json(sp.as_dict())
    print_series_plan(sp)


@app.command()
@user_errors
def distill(teacher: Annotated[str, typer.Option(help="Teacher run id or name (e.g. an L4-leaky run).")],
            student_variant: Annotated[str, typer.Option(help="Student variant, e.g. L4-relu.")],
            data: Annotated[Path, typer.Option(help="data.yaml.")],
            alpha: Annotated[float, typer.Option(help="Weight of the class-score distillation term.")] = 1.0,
            beta: Annotated[float, typer.Option(help="Weight of the box-distribution (DFL) KL term.")] = 1.0,
            gamma: Annotated[float, typer.Option(help="Weight of neck feature imitation (1x1 adapters); 0 = off.")] = 0.0,
            temperature: Annotated[float, typer.Option(help="Softening temperature.")] = 2.0,
            recipe: Annotated[Optional[Path], typer.Option(help="Recipe YAML over the report's defaults.")] = None,
            epochs: Annotated[Optional[int], typer.Option()] = None,
            batch: Annotated[Optional[int], typer.Option()] = None,
            imgsz: Annotated[Optional[int], typer.Option()] = None,
            lr0: Annotated[Optional[float], typer.Option()] = None,
            workers: Annotated[Optional[int], typer.Option()] = None,
            device: Annotated[Optional[str], typer.Option()] = None,
            name: Annotated[Optional[str], typer.Option(help="Run name.")] = None,
            as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Train a student (e.g. L4-relu) with detection loss plus distillation from a trained teacher (e.g. L4-leaky)."""
    from npuyolo.distill.run import distill as run_distill
    from npuyolo.train.recipe import Recipe

    reg = open_registry(registry)
    r = Recipe.load(recipe, epochs=epochs, batch=batch, imgsz=imgsz, lr0=lr0, workers=workers, device=device)
    try:
        with quiet_stdout(as_json):
            result = run_distill(reg, teacher, student_variant, data, r, alpha=alpha, beta=beta, gamma=gamma,
                                 temperature=temperature, name=name)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: continue with `npuyolo train --resume RUN`")
        raise typer.Exit(130) from None
    print_result(reg.get_run(result.run_id), as_json)


@app.command()
@user_errors
def prune(run: Annotated[str, typer.Argument(help="Run id or name (attention-free level, L2 and up).")],
          ratio: Annotated[float, typer.Option(help="Share of each prunable layer's channels to remove.")] = 0.3,
          method: Annotated[str, typer.Option(help="l1 (weight magnitude) or group-norm (dependency-group L2 norm).")] = "l1",
          finetune_epochs: Annotated[int, typer.Option("--epochs", "--finetune-epochs", help="Fine-tuning epochs (a new run, the parent's recipe).")] = 10,
          data: Annotated[Optional[Path], typer.Option(help="data.yaml [default: the parent run's].")] = None,
          as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Remove channels with a dependency-graph pruner, fine-tune, record size, mAP and latency before/after."""
    from npuyolo.prune.prune import prune_run

    with quiet_stdout(as_json):
        r = prune_run(open_registry(registry), run, ratio=ratio, method=method, finetune_epochs=finetune_epochs, data=data)
    if as_json:
        return print_json(r)
    table = Table(title=f"prune {method} {ratio:g} of run {r['parent_run']} -> run {r['run_id']}")
    for col in ("model", "parameters", "GFLOPs", "mAP50", "mAP50-95", "ORT p50 ms"):
        table.add_column(col, justify="right")
    for label, key, lat in (("parent", "before", "parent"), ("pruned", "pruned_before_finetune", None), ("pruned + fine-tuned", "after", "pruned")):
        v = r[key]
        table.add_row(label, f"{v['parameters']:,}", f"{v['gflops']:.2f}", f"{v['map50']:.3f}", f"{v['map50_95']:.3f}",
                      f"{r['ort_p50_ms'][lat]:.1f}" if lat else "-")
    console.print(table)


@hybrid_app.command("search")
@user_errors
def hybrid_search_cmd(data: Annotated[Path, typer.Option(help="data.yaml.")],
                      candidate: Annotated[Optional[list[str]], typer.Option("--candidate", help="Hybrid variant (repeatable) [default: 5 maps].")] = None,
                      budget: Annotated[int, typer.Option("--epochs", "--budget", help="Training epochs per candidate.")] = 10,
                      imgsz: Annotated[int, typer.Option()] = 640,
                      target: Annotated[str, typer.Option("--target", "-t", help="NPU target for the compatibility axis.")] = "relu-only",
                      name: Annotated[str, typer.Option(help="Series name.")] = "hybrid",
                      as_json: JsonOpt = False, registry: RegistryOpt = None, executor: ExecutorOpt = "local",
                      address: AddressOpt = None, gpus_per_member: GpusOpt = 0.0, cpus_per_member: CpusOpt = 1.0,
                      max_parallel: ParallelOpt = None, max_retries: RetriesOpt = 1,
                      scheduler: Annotated[Optional[str], typer.Option(help="asha: stop weak candidates early (Ray Tune's ASHA; needs --executor ray).")] = None,
                      grace_epochs: Annotated[int, typer.Option(help="With --scheduler asha: epochs every candidate trains before it can be stopped.")] = 1,
                      asha_metric: Annotated[str, typer.Option(help="With --scheduler asha: map50_95, map50 or val_loss.")] = "map50_95") -> None:
    """Train hybrid candidates as a series, check each on a target, rank mAP against NPU share (Pareto front)."""
    from npuyolo.study.hybrid import hybrid_search

    asha = {"scheduler": scheduler, "grace_epochs": grace_epochs, "asha_metric": asha_metric} if scheduler else {}
    with series_executor(executor, f"hybrid search {name} on Ray", as_json, address=address, gpus_per_member=gpus_per_member,
                         cpus_per_member=cpus_per_member, max_parallel=max_parallel, max_retries=max_retries, **asha) as runner:
        with quiet_stdout(as_json):
            rows = hybrid_search(open_registry(registry), data, candidate, budget=budget, imgsz=imgsz, target=target,
                                 name=name, executor=runner)
    if as_json:
        return print_json(rows)
    table = Table(title=f"hybrid search {name}: mAP50 vs NPU share on {target} (* = Pareto front)")
    for col in ("variant", "run", "status", "epochs", "mAP50", "mAP50-95", f"NPU share ({target})", "Pareto"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["variant"], fmt(r["run_id"]), r["status"], str(r.get("epochs", "-")), fmt(r["map50"]), fmt(r["map50_95"]),
                      f"{r['npu_share']:.1%}" if r["npu_share"] is not None else "-", "*" if r["pareto"] else "")
    console.print(table)


@study_app.command("relu-gap")
@user_errors
def study_relu_gap(data: Annotated[Path, typer.Option(help="data.yaml.")],
                   epochs: Annotated[int, typer.Option(help="Training epochs of every member.")] = 12,
                   imgsz: Annotated[int, typer.Option(help="Training and export size.")] = 160,
                   seeds: Annotated[str, typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")] = "0,1",
                   target: Annotated[Optional[list[str]], typer.Option("--target", "-t", help="NPU target (repeatable) [default: relu-only].")] = None,
                   variant: Annotated[Optional[list[str]], typer.Option("--variant", help="Extra variant to train alongside (repeatable).")] = None,
                   anneal: Annotated[str, typer.Option(help="LeakyReLU the annealed route starts from.")] = "leaky0.1",
                   recipe: Annotated[Optional[Path], typer.Option(help="Recipe YAML over the report's defaults.")] = None,
                   name: Annotated[str, typer.Option(help="Study (series) name.")] = "relu-gap",
                   out: Annotated[Optional[Path], typer.Option(help="Report folder [default: <registry dir>/reports/study-<name>].")] = None,
                   as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Train L4-leaky, L4-relu, L4-relu distilled and L4-relu annealed on the same seeds; report each route's gap and spread."""
    from dataclasses import asdict

    from npuyolo.report.render import render_study
    from npuyolo.study.relu_gap import StudyError, relu_gap_study
    from npuyolo.train.recipe import load_mapping

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise StudyError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    reg = open_registry(registry)
    overrides = load_mapping(recipe, "recipe") if recipe else {}
    try:
        with quiet_stdout(as_json):
            rows = relu_gap_study(reg, data, name=name, epochs=epochs, imgsz=imgsz, seeds=seed_list, targets=target,
                                  recipe=overrides, extra_variants=variant, anneal=anneal,
                                  on_member=lambda m, a: err.rule(f"[bold]{escape(name)}[/]: {escape(m)} ({a})"))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: run the same `npuyolo study relu-gap` again to continue")
        raise typer.Exit(130) from None
    reports = [str(render_study(reg, name, out, lang=lang)) for lang in ("en", "ko")]
    if as_json:
        return print_json({"study": name, "rows": [asdict(r) for r in rows], "reports": reports})
    print_study(name, rows)
    for r in reports:
        console.print(f"wrote {r}", highlight=False, markup=False)


@study_app.command("report")
@user_errors
def study_report(name: str, lang: Annotated[str, typer.Option(help="ko or en.")] = "en",
                 out: Annotated[Optional[Path], typer.Option(help="Output folder.")] = None, registry: RegistryOpt = None) -> None:
    """Write a study's report again from the registry (e.g. after more seeds finished)."""
    from npuyolo.report.render import render_study

    path = render_study(open_registry(registry, readonly=True), name, out, lang=lang)
    console.print(f"wrote {path}", highlight=False, markup=False)
