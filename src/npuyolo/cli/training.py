"""Training: `npuyolo train`, `runs`, `series`, `distill`, `prune`, `hybrid`, `study`: thin translations of
`npuyolo.services.training` (parse, call one service, print)."""


import contextlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from npuyolo.cli.common import (
    JsonOpt,
    RecipeDefaultsHelp,
    RegistryOpt,
    Table,
    app,
    console,
    duration,
    err,
    fmt,
    hybrid_app,
    option,
    print_json,
    quiet_stdout,
    runs_app,
    series_app,
    study_app,
    user_errors,
    with_options,
)
from npuyolo.cli.tables import print_ranking, print_replicates, print_result, print_run, print_series_plan, print_study
from npuyolo.services.options import (DistillOptions, ExecutorOptions, HybridOptions, MlflowOptions, PlanOptions,
                                      PruneOptions, ReluGapOptions, ResumeOptions, StudyReportOptions, TrainOptions)

@app.command(cls=RecipeDefaultsHelp,  # {key}: the recipe's default, filled in when the help is shown
             short_help="Train a variant with the report's recipe (defaults in train/default_recipe.yaml).",
             help="Train a variant with the report's recipe ({optimizer} lr0 {lr0} -> {lr_final}, {epochs} epochs, "
                  "{imgsz} px, seed {seed}; defaults from train/default_recipe.yaml).")
@user_errors
def train(variant: Annotated[Optional[str], typer.Option(help="Variant, e.g. L4-leaky. Required (unless --resume).")] = None,
          data: Annotated[Optional[Path], typer.Option(help="data.yaml (YOLO format). Required (unless --resume).")] = None,
          recipe: Annotated[Optional[Path], option(TrainOptions, "recipe")] = TrainOptions.recipe,
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
          weights: Annotated[Optional[Path], option(TrainOptions, "weights")] = TrainOptions.weights,
          name: Annotated[Optional[str], option(TrainOptions, "name")] = TrainOptions.name,
          resume: Annotated[Optional[str], typer.Option(help="Continue this interrupted run (id, #id or name).")] = None,
          source: Annotated[str, option(ResumeOptions, "source")] = ResumeOptions.source,
          act_anneal: Annotated[Optional[str], option(TrainOptions, "act_anneal")] = TrainOptions.act_anneal,
          anneal_epochs: Annotated[Optional[str], option(TrainOptions, "anneal_epochs")] = TrainOptions.anneal_epochs,
          anneal_schedule: Annotated[str, option(TrainOptions, "anneal_schedule")] = TrainOptions.anneal_schedule,
          as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    from npuyolo.errors import NpuyoloError
    from npuyolo.services import training

    flags = dict(epochs=epochs, batch=batch, imgsz=imgsz, lr0=lr0, lr_final=lr_final, momentum=momentum,
                 weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed, workers=workers, device=device,
                 fraction=fraction, plots=plots)
    options = TrainOptions.pick(locals())
    try:
        with quiet_stdout(as_json):
            if resume:  # a run continues with its own recorded recipe: no recipe flags
                given = [f"--{k.replace('_', '-')}" for k, v in {**flags, "variant": variant, "data": data,
                         **options.as_dict()}.items() if v is not None and v != getattr(TrainOptions, k, None)]
                if given:
                    raise NpuyoloError(f"--resume continues a run with its own recorded recipe; drop {', '.join(given)}"
                                     " (or start a new run without --resume)")
                run = training.resume(registry, resume, source)
            elif not variant or not data:
                raise NpuyoloError("--variant and --data are required (or --resume RUN)")
            else:
                run = training.train(registry, variant, data, options, **flags)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run is marked 'interrupted'; continue it with `npuyolo train --resume RUN`")
        raise typer.Exit(130) from None
    print_result(run, as_json)


@runs_app.callback()
@user_errors
def runs_list(ctx: typer.Context, as_json: JsonOpt = False, series: Annotated[Optional[str], typer.Option(help="Only this series.")] = None,
              registry: RegistryOpt = None) -> None:
    """List runs."""
    from npuyolo.services import runs

    if ctx.invoked_subcommand:
        ctx.obj = registry
        return
    rows, damaged = runs.runs(registry, series)
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
    from npuyolo.services import runs

    record = runs.run(registry or ctx.obj, run)
    if as_json:
        return print_json(record.as_dict())
    print_run(record)
    console.print("recipe: " + json.dumps(record.recipe.as_dict(), sort_keys=True), highlight=False, markup=False)


@runs_app.command("export")
@user_errors
def runs_export(ctx: typer.Context, mlflow: Annotated[str, typer.Option("--mlflow", help="MLflow tracking URI to copy runs into, e.g. sqlite:///mlflow.db.")],
                run: Annotated[Optional[list[str]], typer.Option("--run", help="Run to export (repeatable) [default: all].")] = None,
                experiment: Annotated[str, option(MlflowOptions, "experiment")] = MlflowOptions.experiment,
                as_json: JsonOpt = False,
                registry: Annotated[Optional[Path], typer.Option("--registry", help="SQLite registry file [default: the group's]")] = None) -> None:
    """Copy runs (recipe, per-epoch metrics, NPU checks, INT8 results, reports) into MLflow for `mlflow ui`."""
    from npuyolo.services import runs

    with quiet_stdout(True):
        rows = runs.mlflow_export(registry or ctx.obj, mlflow, run, experiment)
    if as_json:
        return print_json(rows)
    table = Table(title=f"exported to {mlflow} (experiment {experiment})")
    for col in ("run", "name", "MLflow run", "action"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["run_id"]), r["name"], r["mlflow_run_id"], r["action"])
    console.print(table)
    console.print(f"compare them with: mlflow ui --backend-store-uri {mlflow}", highlight=False, markup=False)


def executor_flags(defaults: type = ExecutorOptions):
    """The executor flags every series command takes, read from `ExecutorOptions`."""
    return {name: option(defaults, name) for name in defaults.names()}


EXEC = executor_flags()
ExecutorOpt = Annotated[str, EXEC["executor"]]
AddressOpt = Annotated[Optional[str], EXEC["address"]]
GpusOpt = Annotated[float, EXEC["gpus_per_member"]]
CpusOpt = Annotated[float, EXEC["cpus_per_member"]]
ParallelOpt = Annotated[Optional[int], EXEC["max_parallel"]]
RetriesOpt = Annotated[int, EXEC["max_retries"]]


@contextlib.contextmanager
def ray_progress(options: ExecutorOptions, what: str, as_json: bool):
    """With the Ray or process executor (not with --json): a live member table on stderr, fed by the service's
    `on_progress`."""
    if options.executor not in ("process", "ray") or as_json:  # a misspelt one is refused before any table
        yield None
        return
    from rich.live import Live

    from npuyolo.train.members import progress_table

    with Live(console=err, refresh_per_second=2) as live:
        where = "on Ray" if options.executor == "ray" else "in processes"
        yield lambda name, states: live.update(progress_table(states, f"{what} {name} {where}"))


@series_app.command("run")
@user_errors
def series_run(spec_file: Annotated[Path, typer.Argument(help="series.yaml: name, data, variants, recipe.")],
               as_json: JsonOpt = False, registry: RegistryOpt = None, executor: ExecutorOpt = ExecutorOptions.executor,
               address: AddressOpt = ExecutorOptions.address, gpus_per_member: GpusOpt = ExecutorOptions.gpus_per_member,
               cpus_per_member: CpusOpt = ExecutorOptions.cpus_per_member,
               max_parallel: ParallelOpt = ExecutorOptions.max_parallel, max_retries: RetriesOpt = ExecutorOptions.max_retries) -> None:
    """Train every member (skipping finished ones, resuming interrupted ones), then rank them."""
    from npuyolo.services import training

    options = ExecutorOptions.pick(locals())
    try:
        with ray_progress(options, "series", as_json) as on_progress, quiet_stdout(as_json):
            local = options.executor == "local"  # members train here, one after another: a rule before each
            done = training.series_run(registry, spec_file, options, on_progress=on_progress, verbose=local,
                                       on_member=lambda series, v, a: err.rule(f"[bold]{escape(series)}[/]: {v} ({a})"))
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: run `npuyolo series run {escape(str(spec_file))}` again to continue")
        raise typer.Exit(130) from None
    if as_json:
        return print_json(done.as_dict())
    print_ranking(done.name, done.members)


@series_app.command("rank")
@user_errors
def series_rank(name: str, as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Rank a series' members by mAP50, mAP50-95, precision and recall."""
    from npuyolo.services import training

    ranking = training.rank(registry, name)
    if as_json:
        return print_json(ranking.rows)
    if ranking.replicates:  # seed replicates: one row per variant, mean ± sd over seeds
        return print_replicates(name, ranking.rows)
    for r in ranking.rows:
        if r.get("error"):  # a damaged member: unranked, the others still rank
            err.print(f"[yellow]unranked:[/] {escape(r['error'])}", highlight=False)
    print_ranking(name, ranking.rows)


@series_app.command("plan")
@user_errors
@with_options(PlanOptions, workers=dict(min=1), imgsz=dict(help="Export size [default: each run's]."))
def series_plan(name: str,
                target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
                options: PlanOptions,
                data: Annotated[Optional[Path], typer.Option(help="data.yaml [default: the series' own].")] = None,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """`deploy plan` for every finished member: which variant's artefact to ship on which NPU (variant x target)."""
    from npuyolo.services import deploy

    with err.status("planning each member..."), quiet_stdout():
        sp = deploy.series_plan(registry, name, target, data, options)
    if as_json:
        return print_json(sp.as_dict())
    print_series_plan(sp)


@app.command()
@user_errors
def distill(teacher: Annotated[str, typer.Option(help="Teacher run id or name (e.g. an L4-leaky run).")],
            student_variant: Annotated[str, typer.Option(help="Student variant, e.g. L4-relu.")],
            data: Annotated[Path, typer.Option(help="data.yaml.")],
            alpha: Annotated[float, option(DistillOptions, "alpha")] = DistillOptions.alpha,
            beta: Annotated[float, option(DistillOptions, "beta")] = DistillOptions.beta,
            gamma: Annotated[float, option(DistillOptions, "gamma")] = DistillOptions.gamma,
            temperature: Annotated[float, option(DistillOptions, "temperature")] = DistillOptions.temperature,
            recipe: Annotated[Optional[Path], option(DistillOptions, "recipe")] = DistillOptions.recipe,
            epochs: Annotated[Optional[int], typer.Option()] = None,
            batch: Annotated[Optional[int], typer.Option()] = None,
            imgsz: Annotated[Optional[int], typer.Option()] = None,
            lr0: Annotated[Optional[float], typer.Option()] = None,
            workers: Annotated[Optional[int], typer.Option()] = None,
            device: Annotated[Optional[str], typer.Option()] = None,
            name: Annotated[Optional[str], option(DistillOptions, "name")] = DistillOptions.name,
            as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Train a student (e.g. L4-relu) with detection loss plus distillation from a trained teacher (e.g. L4-leaky)."""
    from npuyolo.services import training

    options = DistillOptions.pick(locals())
    try:
        with quiet_stdout(as_json):
            run = training.distill(registry, teacher, student_variant, data, options, epochs=epochs, batch=batch,
                                   imgsz=imgsz, lr0=lr0, workers=workers, device=device)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: continue with `npuyolo train --resume RUN`")
        raise typer.Exit(130) from None
    print_result(run, as_json)


@app.command()
@user_errors
def prune(run: Annotated[str, typer.Argument(help="Run id or name (attention-free level, L2 and up).")],
          ratio: Annotated[float, option(PruneOptions, "ratio")] = PruneOptions.ratio,
          method: Annotated[str, option(PruneOptions, "method")] = PruneOptions.method,
          finetune_epochs: Annotated[int, option(PruneOptions, "finetune_epochs")] = PruneOptions.finetune_epochs,
          data: Annotated[Optional[Path], option(PruneOptions, "data")] = PruneOptions.data,
          as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Remove channels with a dependency-graph pruner, fine-tune, record size, mAP and latency before/after."""
    from npuyolo.services import training

    options = PruneOptions.pick(locals())
    with quiet_stdout(as_json):
        r = training.prune(registry, run, options)
    if as_json:
        return print_json(r.as_dict())
    table = Table(title=f"prune {method} {ratio:g} of run {r.parent_run} -> run {r.run_id}")
    for col in ("model", "parameters", "GFLOPs", "mAP50", "mAP50-95", "ORT p50 ms"):
        table.add_column(col, justify="right")
    for label, key, lat in (("parent", "before", "parent"), ("pruned", "pruned_before_finetune", None), ("pruned + fine-tuned", "after", "pruned")):
        v = getattr(r, key)
        table.add_row(label, f"{v['parameters']:,}", f"{v['gflops']:.2f}", f"{v['map50']:.3f}", f"{v['map50_95']:.3f}",
                      f"{r.ort_p50_ms[lat]:.1f}" if lat else "-")
    console.print(table)


@hybrid_app.command("search")
@user_errors
def hybrid_search_cmd(data: Annotated[Path, typer.Option(help="data.yaml.")],
                      candidates: Annotated[Optional[list[str]], option(HybridOptions, "candidates")] = HybridOptions.candidates,
                      budget: Annotated[int, option(HybridOptions, "budget")] = HybridOptions.budget,
                      imgsz: Annotated[int, option(HybridOptions, "imgsz")] = HybridOptions.imgsz,
                      target: Annotated[str, option(HybridOptions, "target")] = HybridOptions.target,
                      name: Annotated[str, option(HybridOptions, "name")] = HybridOptions.name,
                      as_json: JsonOpt = False, registry: RegistryOpt = None, executor: ExecutorOpt = ExecutorOptions.executor,
                      address: AddressOpt = ExecutorOptions.address, gpus_per_member: GpusOpt = ExecutorOptions.gpus_per_member,
                      cpus_per_member: CpusOpt = ExecutorOptions.cpus_per_member,
                      max_parallel: ParallelOpt = ExecutorOptions.max_parallel, max_retries: RetriesOpt = ExecutorOptions.max_retries,
                      scheduler: Annotated[Optional[str], option(HybridOptions, "scheduler")] = HybridOptions.scheduler,
                      grace_epochs: Annotated[int, option(HybridOptions, "grace_epochs")] = HybridOptions.grace_epochs,
                      asha_metric: Annotated[str, option(HybridOptions, "asha_metric")] = HybridOptions.asha_metric) -> None:
    """Train hybrid candidates as a series, check each on a target, rank mAP against NPU share (Pareto front)."""
    from npuyolo.services import training

    options, runner = HybridOptions.pick(locals()), ExecutorOptions.pick(locals())
    with ray_progress(runner, "hybrid search", as_json) as on_progress, quiet_stdout(as_json):
        rows = training.hybrid_search(registry, data, options, runner, on_progress=on_progress)
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
                   epochs: Annotated[int, option(ReluGapOptions, "epochs")] = ReluGapOptions.epochs,
                   imgsz: Annotated[int, option(ReluGapOptions, "imgsz")] = ReluGapOptions.imgsz,
                   seeds: Annotated[str, option(ReluGapOptions, "seeds")] = ",".join(map(str, ReluGapOptions.seeds)),
                   targets: Annotated[Optional[list[str]], option(ReluGapOptions, "targets")] = ReluGapOptions.targets,
                   extra_variants: Annotated[Optional[list[str]], option(ReluGapOptions, "extra_variants")] = ReluGapOptions.extra_variants,
                   anneal: Annotated[str, option(ReluGapOptions, "anneal")] = ReluGapOptions.anneal,
                   recipe: Annotated[Optional[Path], option(ReluGapOptions, "recipe")] = ReluGapOptions.recipe,
                   name: Annotated[str, option(ReluGapOptions, "name")] = ReluGapOptions.name,
                   out: Annotated[Optional[Path], option(ReluGapOptions, "out")] = ReluGapOptions.out,
                   as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Train L4-leaky, L4-relu, L4-relu distilled and L4-relu annealed on the same seeds; report each route's gap and spread."""
    from npuyolo.services import training

    options = ReluGapOptions.pick(locals())
    try:
        with quiet_stdout(as_json):
            study = training.relu_gap(registry, data, options,
                                      on_member=lambda m, a: err.rule(f"[bold]{escape(name)}[/]: {escape(m)} ({a})"))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: run the same `npuyolo study relu-gap` again to continue")
        raise typer.Exit(130) from None
    if as_json:
        return print_json(study.as_dict())
    print_study(study.name, study.rows)
    for r in study.reports:
        console.print(f"wrote {r}", highlight=False, markup=False)


@study_app.command("report")
@user_errors
def study_report(name: str, lang: Annotated[str, option(StudyReportOptions, "lang")] = StudyReportOptions.lang,
                 out: Annotated[Optional[Path], typer.Option(help="Output folder.")] = None, registry: RegistryOpt = None) -> None:
    """Write a study's report again from the registry (e.g. after more seeds finished)."""
    from npuyolo.services import training

    console.print(f"wrote {training.study_report(registry, name, lang, out)}", highlight=False, markup=False)
