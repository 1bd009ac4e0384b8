"""The `npuyolo` command line: a thin layer over the stage packages (imports stay inside commands)."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

MARKUP = None  # help texts are plain: "[default: ...]" must not be read as Rich markup and vanish
app = typer.Typer(help="Build, train, check and report NPU-ready YOLO11 detectors.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=MARKUP)
variants_app = typer.Typer(help="Model variants: NPU optimization levels x activations.", invoke_without_command=True, rich_markup_mode=MARKUP)
runs_app = typer.Typer(help="Runs recorded in the registry.", invoke_without_command=True, rich_markup_mode=MARKUP)
series_app = typer.Typer(help="Series: several variants, one recipe, one data set.", no_args_is_help=True, rich_markup_mode=MARKUP)
data_app = typer.Typer(help="Data sets: synthesize and check.", no_args_is_help=True, rich_markup_mode=MARKUP)
hybrid_app = typer.Typer(help="Hybrid activations: LeakyReLU only in the stages where it pays.", no_args_is_help=True, rich_markup_mode=MARKUP)
deploy_app = typer.Typer(help="Deployment: INT8 quantization, evaluation of ONNX artefacts, latency.", no_args_is_help=True, rich_markup_mode=MARKUP)
study_app = typer.Typer(help="Studies: several routes x seeds on equal terms, summarised with their spread.", no_args_is_help=True, rich_markup_mode=MARKUP)
npu_app = typer.Typer(help="NPU compatibility: target profiles, per-node placement, graph rewrites.", no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(variants_app, name="variants")
app.add_typer(runs_app, name="runs")
app.add_typer(series_app, name="series")
app.add_typer(data_app, name="data")
app.add_typer(npu_app, name="npu")
app.add_typer(deploy_app, name="deploy")
app.add_typer(hybrid_app, name="hybrid")
app.add_typer(study_app, name="study")
compilers_app = typer.Typer(help="Vendor NPU compilers as referees, each in its own environment (installed only on request).",
                            no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(compilers_app, name="compilers")

console = Console(width=None if sys.stdout.isatty() else 160)  # no truncated tables when piped
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

RegistryOpt = Annotated[Optional[Path], typer.Option("--registry", envvar="NPUYOLO_REGISTRY", help="SQLite registry file [default: runs/npuyolo.db]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# the options `deploy plan` and `series plan` share
PlanConfOpt = Annotated[float, typer.Option("--conf", help="Deployment confidence threshold (what the NPU runtime bakes in).")]
PlanCalibOpt = Annotated[int, typer.Option("--calib", help="Calibration images.")]
PlanHoldoutOpt = Annotated[int, typer.Option("--holdout", help="Held-back train images the calibration sweep is judged on.")]
PlanSweepOpt = Annotated[bool, typer.Option("--sweep/--no-sweep", help="Calibrate with the sweep's choice, or with MinMax.")]


class Table(RichTable):
    """A Rich table whose title, headers and cells are plain text: a run or class named '[/bold]' stays text."""

    def __init__(self, *args, title=None, **kwargs):
        super().__init__(*args, title=Text(title) if isinstance(title, str) else title, **kwargs)

    def add_column(self, header="", *args, **kwargs):
        return super().add_column(Text(header) if isinstance(header, str) else header, *args, **kwargs)

    def add_row(self, *cells, **kwargs):
        return super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def _version(value: bool) -> None:
    if value:
        from npuyolo import __version__

        sys.stdout.write(f"npuyolo {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                       help="Print the version and exit.")] = False) -> None:
    """Build, train, check and report NPU-ready YOLO11 detectors."""


def user_errors(fn):
    """Turn npuyolo's own errors (bad input, unknown names, unusable files) into one red line and exit code 2.

    So is an OS error the user fixes (full disk, read-only or forbidden place) that no layer below named better.
    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from npuyolo.errors import NpuyoloError, storage_error

        try:
            return fn(*args, **kwargs)
        except (NpuyoloError, OSError) as e:
            said = e if isinstance(e, NpuyoloError) else storage_error(e)
            if said is None:
                raise
            err.print("[bold red]error:[/] " + escape(str(said)), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def quiet_stdout(as_json: bool = True):
    """With --json, stdout carries the JSON alone: prints, Ultralytics' progress and its logger go to stderr."""
    if not as_json:
        return contextlib.nullcontext()
    from npuyolo.ultra import stdout_to_stderr

    return stdout_to_stderr()


def print_result(run, as_json: bool) -> None:
    """A created or continued run: its record as JSON, or the usual summary."""
    if as_json:
        return print_json({"run_id": run.id, "name": run.name, "status": run.status, "save_dir": run.save_dir,
                           "weights": {a.kind.split("/", 1)[1]: a.path for a in run.artifacts if a.kind.startswith("weights/")},
                           "best": run.best})
    print_run(run)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def duration(seconds: float | None) -> str:
    """42.3 s, 12 min 05 s, 3 h 02 min: how long a run took, the way a person reads it."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def fmt(v, digits: int = 3) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def open_registry(path: Path | None, readonly: bool = False):
    """The registry; read commands open it read-only (no file created, nothing written, not even reaping)."""
    from npuyolo.registry.db import Registry

    return Registry(path, readonly=readonly)


# ---------------------------------------------------------------------------------------------- variants
@variants_app.callback()
@user_errors
def variants_list(ctx: typer.Context, as_json: JsonOpt = False,
                  scale: Annotated[str, typer.Option(help="Width/depth scale: n, s, m, l, x.")] = "n") -> None:
    """List every level x activation variant."""
    if ctx.invoked_subcommand:
        return
    from npuyolo.variants.spec import all_variants, levels

    rows = [{"name": v.name, "level": f"L{v.level}", "activation": v.activation, "slope": v.slope, "scale": v.scale,
             **v.settings.model_dump(include={"activation_scope", "attention", "sppf_pool", "head"})} for v in all_variants(scale)]
    if as_json:
        return print_json(rows)
    table = Table(title="npuyolo variants (levels are cumulative)")
    for col in ("name", "activation_scope", "attention", "sppf_pool", "head"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["activation_scope"], r["attention"], r["sppf_pool"], r["head"])
    console.print(table)
    for lv in levels().values():
        console.print(f"[bold]{lv.name}[/] {lv.title}: {lv.summary}", highlight=False)


@variants_app.command("show")
@user_errors
def variants_show(name: str, nc: Annotated[int, typer.Option(help="Number of classes.")] = 80,
                  imgsz: Annotated[int, typer.Option(help="Input size for GFLOPs.")] = 640, as_json: JsonOpt = False) -> None:
    """Print a variant's Ultralytics model YAML, parameter count and GFLOPs."""
    from npuyolo.variants.build import activation_census, build_model, format_model_yaml, model_summary, model_yaml
    from npuyolo.variants.spec import parse_variant

    from npuyolo.deploy.export import check_imgsz

    check_imgsz(imgsz)
    spec = parse_variant(name)
    d = model_yaml(spec, nc=nc)
    model = build_model(d, nc=nc)
    info = {"name": spec.name, **model_summary(model, imgsz), "imgsz": imgsz, "activations": activation_census(model),
            "level": spec.settings.model_dump(), "yaml": d}
    if as_json:
        return print_json(info)
    console.print(f"# {spec.name}: {spec.settings.summary}", highlight=False, markup=False)
    sys.stdout.write(format_model_yaml(d))
    console.print(f"parameters: {info['parameters']:,}   GFLOPs@{imgsz}: {info['gflops']:.2f}   activations: {info['activations']}")


# ---------------------------------------------------------------------------------------------- export
@app.command()
@user_errors
def export(model: Annotated[str, typer.Argument(help="Variant name (untrained), run id/name, or .pt checkpoint.")],
           imgsz: Annotated[Optional[int], typer.Option(help="Static input size [default: a run's training size, else 640].")] = None,
           head: Annotated[Optional[str], typer.Option(help="npu (L4 cut) or ultralytics [default: the level's head]")] = None,
           out: Annotated[Optional[str], typer.Option(help="Output .onnx file.")] = None,
           nc: Annotated[int, typer.Option(help="Classes, for an untrained variant.")] = 80,
           force: Annotated[bool, typer.Option("--force", help="Let --out replace a file npuyolo did not write, or a symlink (never the registry).")] = False,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a static-shape ONNX file (a run's goes to its folder's export/, anything else to the working directory)."""
    from npuyolo.deploy.export import ExportError, check_imgsz, export_onnx
    from npuyolo.resolve import resolve_model

    if head not in (None, "npu", "ultralytics"):
        raise ExportError(f"--head must be npu or ultralytics, got {head!r}")
    from npuyolo.variants.spec import HYBRID_RE, NAME_RE

    is_run = not (model.lower().endswith((".pt", ".onnx")) or Path(model).is_file() or NAME_RE.match(model) or HYBRID_RE.match(model))
    reg = open_registry(registry) if is_run else None  # exporting a variant or a file touches no registry
    resolved = resolve_model(model, reg, nc=nc)
    if imgsz is None:
        imgsz = resolved.trained_imgsz if resolved.run_id is not None and resolved.trained_imgsz else 640
    check_imgsz(imgsz)
    name = f"{resolved.label}-{head or 'default'}-{imgsz}.onnx"
    if out is None:  # a run's exports live in its own folder; anything else in the working directory
        out = reg.run_dir(reg.run(resolved.run_id), "export") / name if resolved.run_id is not None else Path(name)
    path = export_onnx(resolved.model, out, imgsz=imgsz, head=head, force=force, registry=registry)
    if resolved.run_id is not None:
        reg.add_artifact(resolved.run_id, f"onnx/{head or 'default'}", path.resolve(), {"imgsz": imgsz})
    if as_json:
        return print_json({"onnx": str(path.resolve()), "run_id": resolved.run_id, "imgsz": imgsz, "head": head})
    console.print(f"wrote {path}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------- train
@app.command()
@user_errors
def train(variant: Annotated[Optional[str], typer.Option(help="Variant, e.g. L4-leaky. Required (unless --resume).")] = None,
          data: Annotated[Optional[Path], typer.Option(help="data.yaml (YOLO format). Required (unless --resume).")] = None,
          recipe: Annotated[Optional[Path], typer.Option(help="Recipe YAML over the report's defaults.")] = None,
          epochs: Annotated[Optional[int], typer.Option(help="[default: 100, the recipe's]")] = None,
          batch: Annotated[Optional[int], typer.Option(help="[default: 16]")] = None,
          imgsz: Annotated[Optional[int], typer.Option(help="Training size, a multiple of 32 [default: 640]")] = None,
          lr0: Annotated[Optional[float], typer.Option(help="Initial learning rate [default: 0.003]")] = None,
          lr_final: Annotated[Optional[float], typer.Option(help="Final learning rate [default: 0.0001]")] = None,
          momentum: Annotated[Optional[float], typer.Option(help="SGD momentum [default: 0.9]")] = None,
          weight_decay: Annotated[Optional[float], typer.Option(help="[default: 0.001]")] = None,
          warmup_epochs: Annotated[Optional[float], typer.Option(help="[default: 5]")] = None,
          seed: Annotated[Optional[int], typer.Option(help="[default: 0]")] = None,
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
    """Train a variant with the report's recipe (SGD lr0 0.003 -> 0.0001, 100 epochs, 640 px, seed 0)."""
    reg = open_registry(registry)
    try:
        with quiet_stdout(as_json):
            result = _train(reg, variant, data, recipe, resume, from_checkpoint, name, weights, act_anneal, anneal_epochs,
                            anneal_schedule, dict(epochs=epochs, batch=batch, imgsz=imgsz, lr0=lr0, lr_final=lr_final,
                                                  momentum=momentum, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                                                  seed=seed, workers=workers, device=device, fraction=fraction, plots=plots))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run is marked 'interrupted'; continue it with `npuyolo train --resume RUN`")
        raise typer.Exit(130) from None
    print_result(reg.run(result.run_id), as_json)


def _train(reg, variant, data, recipe, resume, from_checkpoint, name, weights, act_anneal, anneal_epochs, anneal_schedule, flags):
    from npuyolo.train.anneal import with_anneal
    from npuyolo.train.recipe import Recipe
    from npuyolo.train.trainer import TrainError, resume_run, train_variant

    if resume:
        given = [f"--{k.replace('_', '-')}" for k, v in {**flags, "variant": variant, "data": data, "recipe": recipe, "name": name,
                 "weights": weights, "act_anneal": act_anneal, "anneal_epochs": anneal_epochs}.items() if v is not None]
        if given:
            raise TrainError(f"--resume continues a run with its own recorded recipe; drop {', '.join(given)}"
                             " (or start a new run without --resume)")
        return resume_run(resume, reg, source=from_checkpoint)
    if not variant or not data:
        raise TrainError("--variant and --data are required (or --resume RUN)")
    r = with_anneal(Recipe.load(recipe, **flags), act_anneal, anneal_epochs, anneal_schedule)
    return train_variant(variant, data, r, reg, name=name, weights=weights)


# ---------------------------------------------------------------------------------------------- runs
def print_run(run: dict) -> None:
    console.print(f"[bold]run {run['id']}[/] {escape(run['name'])}  variant {run['variant']}  status [bold]{run['status']}[/]", highlight=False)
    console.print(escape(f"data {run['data_path']} (hash {run['data_hash']})  device {run['device']}  weights {run['weights_source'] or 'none (from scratch)'}"
                  + (f" transferred {run['weights_transferred']}" if run.get("weights_transferred") else "")
                  + ("" if run.get("amp") is None else f"  AMP {'on' if run['amp'] else 'off'}")), highlight=False)
    console.print(f"started {run['started_at']}  ended {run['ended_at'] or '-'}  train time {duration(run['duration_s'])}", highlight=False, markup=False)
    if run.get("error"):
        console.print(f"[red]{escape(run['error'])}[/]", highlight=False)
    table = Table(title="epochs")
    for col in ("epoch", "box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95", "lr"):
        table.add_column(col, justify="right")
    for e in run["epochs"]:
        table.add_row(str(e["epoch"]), *(fmt(e[k], 4) for k in ("box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95")), fmt(e["lr"], 6))
    console.print(table)
    if run.get("best"):
        b = run["best"]
        console.print(f"best.pt validation: P {fmt(b['precision'])} R {fmt(b['recall'])} mAP50 {fmt(b['map50'])} mAP50-95 {fmt(b['map50_95'])}")
    for a in run["artifacts"]:
        console.print(escape(f"  {a['kind']}: {a['path']}"), highlight=False, markup=False)


@runs_app.callback()
@user_errors
def runs_list(ctx: typer.Context, as_json: JsonOpt = False, series: Annotated[Optional[str], typer.Option(help="Only this series.")] = None,
              registry: RegistryOpt = None) -> None:
    """List runs."""
    if ctx.invoked_subcommand:
        ctx.obj = registry
        return
    rows = open_registry(registry, readonly=True).runs(series)
    if as_json:
        return print_json(rows)
    table = Table(title="runs")
    for col in ("id", "name", "variant", "series", "status", "epochs", "mAP50", "mAP50-95", "train time", "started"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["variant"], r["series"] or "-", r["status"], str(r["epochs"]),
                      fmt(r["map50"]), fmt(r["map50_95"]), duration(r["duration_s"]), r["started_at"])
    console.print(table)


@runs_app.command("show")
@user_errors
def runs_show(ctx: typer.Context, run: str, as_json: JsonOpt = False,
              registry: Annotated[Optional[Path], typer.Option("--registry", help="SQLite registry file [default: the group's]")] = None) -> None:
    """Print one run: recipe, epochs, artefacts."""
    record = open_registry(registry or ctx.obj, readonly=True).run(run).as_dict()
    if as_json:
        return print_json(record)
    print_run(record)
    console.print("recipe: " + json.dumps(record["recipe"], sort_keys=True), highlight=False, markup=False)


@runs_app.command("export")
@user_errors
def runs_export(ctx: typer.Context, mlflow: Annotated[str, typer.Option("--mlflow", help="MLflow tracking URI to copy runs into, e.g. sqlite:///mlflow.db.")],
                run: Annotated[Optional[list[str]], typer.Option("--run", help="Run to export (repeatable) [default: all].")] = None,
                experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "npuyolo",
                as_json: JsonOpt = False,
                registry: Annotated[Optional[Path], typer.Option("--registry", help="SQLite registry file [default: the group's]")] = None) -> None:
    """Copy runs (recipe, per-epoch metrics, NPU checks, INT8 results, reports) into MLflow for `mlflow ui`."""
    from npuyolo.registry.mlflow_export import export_runs

    from npuyolo.registry.db import Registry

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


# ---------------------------------------------------------------------------------------------- series
ExecutorOpt = Annotated[str, typer.Option(help="local (one member after another, here) or ray (members in parallel as Ray tasks).")]
AddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster: auto or ray://HOST:PORT [default: a local Ray runtime].")]
GpusOpt = Annotated[float, typer.Option(help="GPUs per member with --executor ray (fractions share a GPU, e.g. 0.25).")]
CpusOpt = Annotated[float, typer.Option(help="CPUs per member with --executor ray.")]
ParallelOpt = Annotated[Optional[int], typer.Option(help="Members training at once with --executor ray [default: as resources allow].")]
RetriesOpt = Annotated[int, typer.Option(help="Retries of a member whose Ray worker died, from its last checkpoint (--executor ray).")]


@contextlib.contextmanager
def series_executor(kind: str, title: str, as_json: bool, **flags):
    """The executor a series command asked for (None: local), with its live member table on stderr (not with --json).

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
    from npuyolo.train.series import SeriesSpec, run_series

    spec = SeriesSpec.load(spec_file)
    try:
        with series_executor(executor, f"series {spec.name} on Ray", as_json, address=address, gpus_per_member=gpus_per_member,
                             cpus_per_member=cpus_per_member, max_parallel=max_parallel, max_retries=max_retries) as runner:
            reg = open_registry(registry)  # after the executor checks: a missing Ray or a bad flag registers nothing
            with quiet_stdout(as_json):
                on_member = None if runner else (lambda v, a: err.rule(f"[bold]{escape(spec.name)}[/]: {v} ({a})"))
                rows = run_series(spec, reg, on_member=on_member, executor=runner, verbose=runner is None)
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
    from npuyolo.train.series import rank_series

    rows = rank_series(name, open_registry(registry, readonly=True))
    if as_json:
        return print_json(rows)
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
                imgsz: Annotated[Optional[int], typer.Option(help="Export size [default: each run's].")] = None,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """`deploy plan` for every finished member: which variant's artefact to ship on which NPU (variant x target)."""
    from npuyolo.deploy.plan import build_series_plan

    with err.status("planning each member..."), quiet_stdout():
        sp = build_series_plan(open_registry(registry), name, target, data, conf=conf, calib=calib, holdout=holdout,
                               imgsz=imgsz, sweep=sweep)
    if as_json:
        return print_json(sp.as_dict())
    print_series_plan(sp)


def print_series_plan(sp) -> None:
    """One row per variant, one column per target; a cell is the chosen artefact, its NPU share and INT8 mAP50."""
    table = Table(title=f"series {sp.series}: verified best artefact per variant and target")
    table.add_column("variant", no_wrap=True)
    for t in sp.targets:
        table.add_column(t)
    cells = sp.cells()
    for variant, row in cells.items():
        table.add_row(variant, *(f"{c['artefact']}\n{c['share_nodes']:.1%} NPU, {c['off_npu']} off, INT8 mAP50 {fmt(c['int8_map50'])}"
                                 if (c := row.get(t)) else "-" for t in sp.targets))
    console.print(table)
    for variant, why in sp.skipped.items():
        console.print(f"{variant}: {why}", highlight=False, markup=False, style="dim")
    for variant, p in sp.plans.items():
        console.print(f"{variant}: plan {p.path}", highlight=False, markup=False)
    console.print(f"series plan: {len(sp.plans)} member(s) ({duration(sp.seconds)})", highlight=False, markup=False)


def print_ranking(name: str, rows: list[dict]) -> None:
    table = Table(title=f"series {name}: final-epoch metrics (rank)")
    for col in ("variant", "run", "status", "mAP50", "mAP50-95", "precision", "recall"):
        table.add_column(col)
    for r in rows:
        cells = [f"{fmt(r[m])} (#{r['rank_' + m]})" if r[m] is not None else "-" for m in ("map50", "map50_95", "precision", "recall")]
        table.add_row(r["variant"], fmt(r["run_id"]), r["status"], *cells)
    console.print(table)


# ---------------------------------------------------------------------------------------------- data
@data_app.command("synth")
@user_errors
def data_synth(out: Path, train: Annotated[int, typer.Option(help="Training images.")] = 400,
               val: Annotated[int, typer.Option(help="Validation images.")] = 100,
               imgsz: Annotated[int, typer.Option(help="Image side in px.")] = 320,
               seed: Annotated[int, typer.Option()] = 0, as_json: JsonOpt = False) -> None:
    """Write a synthetic traffic-sign set (6 classes) in YOLO format with a data.yaml."""
    from rich.progress import Progress

    from npuyolo.data.check import DataError
    from npuyolo.data.synth import CLASSES, check_synth_args, synthesize

    if train < 1 or val < 1:
        raise DataError(["--train and --val must be at least 1"])
    check_synth_args(out, imgsz, seed)
    with Progress(console=err) as progress:
        task = progress.add_task("drawing signs", total=train + val)
        path = synthesize(out, train, val, imgsz, seed, progress=lambda n: progress.advance(task, n))
    if as_json:
        return print_json({"data": str(Path(path).resolve()), "train": train, "val": val, "classes": list(CLASSES)})
    console.print(f"wrote {path} ({train} train / {val} val images, classes: {', '.join(CLASSES)})", highlight=False, markup=False)


@data_app.command("check")
@user_errors
def data_check(data: Path, as_json: JsonOpt = False) -> None:
    """Validate a data set and print per-split image and per-class instance counts."""
    from npuyolo.data.check import check_dataset

    report = check_dataset(data).as_dict()
    if as_json:
        return print_json(report)
    table = Table(title=f"{data}  ({report['nc']} classes, content hash {report['content_hash']})")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("background", justify="right")
    for n in report["names"]:
        table.add_column(n, justify="right")
    for split, s in report["splits"].items():
        table.add_row(split, str(s["images"]), str(s["background_images"]), *(str(s["instances"][n]) for n in report["names"]))
    console.print(table)
    console.print("[green]OK[/]: no problems found")


# ---------------------------------------------------------------------------------------------- npu
@npu_app.command("targets")
@user_errors
def npu_targets(as_json: JsonOpt = False) -> None:
    """List NPU target profiles with their sources."""
    from npuyolo.npu.profiles import targets

    profiles = targets()
    if as_json:
        return print_json({name: p.model_dump() for name, p in profiles.items()})
    table = Table(title="NPU targets (rules: op -> npu/cpu/unknown + constraints, each with a source)")
    for col in ("target", "title", "fallback", "rules", "fused activations", "sources"):
        table.add_column(col)
    for p in profiles.values():
        table.add_row(p.name, p.title, p.fallback, str(len(p.ops)), ", ".join(p.fusable_activations), "; ".join(p.sources.values()))
    console.print(table)


@npu_app.command("check")
@user_errors
def npu_check(model: Annotated[str, typer.Argument(help="Run id/name, .pt, .onnx or variant name.")],
              target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
              imgsz: Annotated[Optional[int], typer.Option(help="Export size for non-ONNX models [default: a run's training size, else 640].")] = None,
              head: Annotated[Optional[str], typer.Option(help="npu or ultralytics [default: the level's head]")] = None,
              nc: Annotated[int, typer.Option(help="Classes, for an untrained variant.")] = 80,
              nodes: Annotated[bool, typer.Option("--nodes", help="Also print every node not on the NPU.")] = False,
              referee: Annotated[Optional[str], typer.Option(help="Also compile with this vendor compiler (rknn: node by node; vela: by operator counts; imx500: pass/fail and memory fit) and compare.")] = None,
              data: Annotated[Optional[Path], typer.Option(help="With --referee: data.yaml whose train images calibrate [default: synthetic images].")] = None,
              as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Place every ONNX node on each target and report shares, partitions and fallbacks."""
    from npuyolo.npu.check import check_model, record

    if referee is not None:
        from npuyolo.compilers.compile import profile_for
        from npuyolo.compilers.envs import require

        for t in target:  # every target and the compiler checked before a registry is opened or a slow export starts
            profile_for(referee, t)
        require(referee)
        _check_calibration_data(data)
        return _npu_referee(model, target, referee, data, open_registry(registry), imgsz, head, nc, as_json)
    reg = open_registry(registry)
    result = check_model(model, target, reg, imgsz=imgsz, head=head, nc=nc)
    record(result, reg, head)
    if as_json:
        return print_json([{**r.as_dict(), "onnx": result.onnx_paths[r.target], "notes": result.notes.get(r.target, [])}
                           for r in result.reports])
    table = Table(title=f"NPU compatibility of {result.model_ref}")
    for col in ("target", "nodes", "NPU share", "share (fused act.)", "MAC share", "partitions NPU/host", "transitions", "fallback ops", "unknown ops"):
        table.add_column(col)
    for r in result.reports:
        table.add_row(r.target, str(r.nodes_total), f"{r.share_nodes:.1%}", f"{r.share_nodes_fused:.1%}", f"{r.share_macs:.1%}",
                      f"{r.partitions_npu}/{r.partitions_host}", str(r.transitions),
                      ", ".join(f"{k}×{v}" for k, v in r.fallback_ops.items()) or "-",
                      ", ".join(f"{k}×{v}" for k, v in r.unknown_ops.items()) or "-")
    console.print(table)
    for r in result.reports:
        for note in result.notes.get(r.target, []):
            console.print(f"[dim]{r.target}: {escape(note)}[/]", highlight=False)
        if nodes:
            t = Table(title=f"{r.target}: nodes not on the NPU")
            for col in ("node", "op", "placement", "reason", "source"):
                t.add_column(col)
            for p in r.placements:
                if p.placement in ("cpu", "unknown"):
                    t.add_row(p.name, p.op, p.placement, p.reason, p.source or "-")
            console.print(t)


def _check_calibration_data(data: Path | None) -> None:
    """A wrong data.yaml is one line before a registry file is created."""
    if data is not None:
        from npuyolo.deploy.quantize import calibration_images

        calibration_images(data, 1)


def _npu_referee(model, targets, compiler, data, reg, imgsz, head, nc, as_json) -> None:
    """`npu check --referee`: our placement beside the compiler's, every disagreement listed."""
    from npuyolo.compilers.compile import compile_model, record as record_compile
    from npuyolo.npu.check import CheckResult, record

    results = []
    with quiet_stdout(as_json):
        for t in targets:
            res = compile_model(model, compiler, t, data, reg, imgsz=imgsz, head=head, nc=nc)
            record_compile(res, reg)
            record(CheckResult(res.model_ref, res.run_id, [res.ours], {res.profile: res.build.onnx},
                               {res.profile: [f"referee {res.build.compiler} {res.build.version}: {res.agreement.agree}/"
                                              f"{res.agreement.mapped} mapped nodes agree"]}), reg, head)
            results.append(res)
    if as_json:
        return print_json([r.as_dict() for r in results])
    print_referee(results)


def print_referee(results) -> None:
    table = Table(title="NPU placement: profile vs compiler")
    for col in ("target", "compiler", "nodes", "mapped", "agree", "agreement", "profile CPU/unknown", "compiler CPU ops",
                "memory KiB", "est. ms"):
        table.add_column(col)
    for r in results:
        a, b, s = r.agreement, r.build, r.build.summary()
        memory = ", ".join(f"{k.removesuffix('_kb').removesuffix('_kib')} {v:.0f}" for k, v in b.memory.items()) or "-"
        if b.compiler == "imx500":  # MB of the sensor's memory, the converter's own unit
            memory = f"{b.memory['used_mb']:.2f}/{b.memory['available_mb']:.2f} MB" if "used_mb" in b.memory and "available_mb" in b.memory else "-"
        table.add_row(r.profile, f"{b.compiler} {b.version}", str(a.nodes), str(a.mapped), str(a.agree),
                      "-" if a.share is None else f"{a.share:.1%}" + ("" if a.basis == "nodes" else f" ({a.basis})"),
                      f"{r.ours.nodes_cpu}/{r.ours.nodes_unknown}",
                      f"{s['rows_cpu']}/{s['rows']}", memory, "-" if s.get("inference_ms") is None else f"{s['inference_ms']:.1f}")
    console.print(table)
    for r in results:
        s = r.build.summary()
        for note in r.build.notes:
            console.print(f"[dim]{r.profile}: {escape(note)}[/]", highlight=False)
        if r.agreement.basis != "nodes":  # Vela: TFLite operators, not our nodes; compared on the whole graph
            cpu = f" ({', '.join(s['cpu_rows'])})" if s["cpu_rows"] else ""
            console.print(f"{r.profile}: {r.agreement.verdict}{cpu} (log: {r.build.log})", highlight=False, markup=False)
        elif r.agreement.disagreements:
            t = Table(title=f"{r.profile}: disagreements (log: {r.build.log})")
            for col in ("node", "op", "profile", "profile's reason", "compiler", "compiler row"):
                t.add_column(col)
            for d in r.agreement.disagreements:
                t.add_row(d["node"], d["op"], d["ours"], d["our_reason"], d["compiler"], d["compiler_row"] or "-")
            console.print(t)
        else:
            console.print(f"{r.profile}: no disagreement on {r.agreement.mapped} mapped nodes "
                          f"({r.agreement.nodes - r.agreement.mapped} not mappable from the log)", highlight=False, markup=False)


@npu_app.command("compile")
@user_errors
def npu_compile(model: Annotated[str, typer.Argument(help="Run id/name, .pt, .onnx or variant name.")],
                compiler: Annotated[str, typer.Option(help="Vendor compiler: rknn, vela or imx500.")],
                target: Annotated[Optional[str], typer.Option("--target", "-t", help="Compiler target: rk3588, rk3566 (rknn); ethos-u55-128, ethos-u85-256 (vela); imx500 (imx500, the default there).")] = None,
                data: Annotated[Optional[Path], typer.Option(help="data.yaml: its train images (never val) calibrate the INT8 build [imx500: default synthetic images].")] = None,
                imgsz: Annotated[Optional[int], typer.Option(help="Export size for non-ONNX models [default: a run's training size, else 640].")] = None,
                head: Annotated[Optional[str], typer.Option(help="npu or ultralytics [default: the level's head]")] = None,
                nc: Annotated[int, typer.Option(help="Classes, for an untrained variant.")] = 80,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Compile with a real vendor compiler (installed by `npuyolo compilers install`) and record its placement."""
    from npuyolo.compilers.compile import compile_model, profile_for, record
    from npuyolo.compilers.envs import require

    from npuyolo.compilers.envs import CompilerError

    if target is None and compiler == "imx500":
        target = "imx500"
    if target is None:
        raise CompilerError(f"--target is required for the {compiler} compiler")
    if data is None and compiler != "imx500":
        raise CompilerError(f"--data is required for the {compiler} compiler: its train images calibrate the INT8 build")
    profile_for(compiler, target)
    require(compiler)  # a missing compiler is one line, before any registry is created
    _check_calibration_data(data)
    reg = open_registry(registry)
    with quiet_stdout(as_json):
        res = compile_model(model, compiler, target, data, reg, imgsz=imgsz, head=head, nc=nc)
        record(res, reg)
    if as_json:
        return print_json(res.as_dict(with_nodes=True))
    if compiler == "imx500":
        return _print_imx500(res)
    s = res.build.summary()
    memory = ", ".join(f"{k.removesuffix('_kb').removesuffix('_kib')} {v:.0f} KiB" for k, v in res.build.memory.items()) or "not reported"
    mapped = f"{s['nodes_mapped']}/{s['nodes']} of our nodes mapped" if res.build.mappings else "TFLite operators, compared by counts"
    console.print(f"{res.build.compiler} {res.build.version} on {res.build.platform}: {s['rows_npu']} NPU / {s['rows_cpu']} CPU "
                  f"operators in {res.build.seconds:.1f} s; {mapped}; memory {memory}", highlight=False, markup=False)
    for row in s["cpu_rows"]:
        console.print(f"  CPU: {row}", highlight=False, markup=False)
    if s.get("inference_ms") is not None:
        console.print(f"estimated inference time ({res.build.platform}, Vela's default system config): {s['inference_ms']:.1f} ms",
                      highlight=False, markup=False)
    console.print(f"log: {res.build.log}" + (f"; model: {res.build.rknn_file}" if res.build.rknn_file else ""), highlight=False, markup=False)
    print_referee([res])


def _print_imx500(res) -> None:
    b = res.build
    m = b.memory
    memory = (f"{m['used_mb']:.2f} MB of {m['available_mb']:.2f} MB ({'fits' if m.get('fits') else 'does NOT fit'})"
              if "used_mb" in m and "available_mb" in m else "memory not reported")
    if "coefficients_bytes" in m:
        memory += f", coefficients {m['coefficients_bytes'] / 1024:.1f} KiB"
    acts = ", ".join(f"{k}×{v}" for k, v in b.activations.items()) or "-"
    verdict = "compiled" if b.ok else "FAILED"
    console.print(f"imx500 {b.version}: {verdict} in {b.seconds:.0f} s; {memory}; activations: {acts}", highlight=False, markup=False)
    if b.error:
        console.print(f"  error: {b.error}", highlight=False, markup=False)
    console.print(f"calibration: {b.calibration}", highlight=False, markup=False)
    console.print(f"profile vs compiler: {res.agreement.verdict}", highlight=False, markup=False)
    console.print(f"log: {b.log}" + (f"; model: {b.output}" if b.output else ""), highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------- compilers
@compilers_app.command("list")
@user_errors
def compilers_list(as_json: JsonOpt = False) -> None:
    """Known vendor compilers: installed version and where their environment lives."""
    from npuyolo.compilers.envs import compilers_root, listing

    rows = listing()
    if as_json:
        return print_json({"root": str(compilers_root()), "compilers": rows})
    table = Table(title=f"NPU compilers (environments under {compilers_root()})")
    for col in ("compiler", "title", "installed", "version", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["title"], "yes" if r["installed"] else f"no: npuyolo compilers install {r['name']}",
                      r["version"] or "-", r["path"])
    console.print(table)


@compilers_app.command("install")
@user_errors
def compilers_install(name: Annotated[str, typer.Argument(help="rknn, vela or imx500.")],
                      force: Annotated[bool, typer.Option("--force", help="Reinstall even if installed.")] = False,
                      as_json: JsonOpt = False) -> None:
    """Create the compiler's own virtual environment and pip-install its pinned packages (this downloads)."""
    from dataclasses import asdict

    from npuyolo.compilers.envs import COMPILERS, install, spec

    s = spec(name)
    if not as_json:
        err.print(f"installing {s.title} into its own environment (pip output: install.log beside it)...", highlight=False, markup=False)
    env = install(name, force=force)
    if as_json:
        return print_json({**asdict(env), "licence": COMPILERS[name].licence})
    console.print(f"{name} {env.version} installed: {env.python}", highlight=False, markup=False)
    console.print(f"licence: {s.licence}", highlight=False, markup=False)


@npu_app.command("rewrite")
@user_errors
def npu_rewrite(model: Annotated[Path, typer.Argument(help="ONNX file.")],
                leaky: Annotated[str, typer.Option(help="relu-decomp (a*x + (1-a)*relu(x)), relu-exact or max.")] = "relu-decomp",
                out: Annotated[Optional[str], typer.Option(help="Output file [default: MODEL.<method>.onnx].")] = None,
                force: Annotated[bool, typer.Option("--force", help="Let the output replace a file npuyolo did not write, or a symlink (never the registry).")] = False,
                as_json: JsonOpt = False) -> None:
    """Replace every LeakyRelu with an equivalent built from ReLU-NPU ops."""
    from npuyolo.npu.rewrite import rewrite_file

    dst, count = rewrite_file(model, out, leaky, force=force)
    if as_json:
        return print_json({"onnx": str(Path(dst).resolve()), "rewritten": count, "method": leaky})
    console.print(f"rewrote {count} LeakyRelu node(s) as {leaky}: {dst}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------- deploy
@deploy_app.command("quantize")
@user_errors
def deploy_quantize(run: Annotated[str, typer.Argument(help="Run id or name.")],
                    data: Annotated[Path, typer.Option(help="data.yaml; calibration images come from its train split only.")],
                    calib: Annotated[int, typer.Option(help="Calibration images.")] = 200,
                    method: Annotated[str, typer.Option(help="minmax, entropy (KL, 512 bins) or percentile.")] = "minmax",
                    percentile: Annotated[Optional[float], typer.Option(help="With --method percentile: share of values kept [default: 99.999].")] = None,
                    sweep: Annotated[bool, typer.Option("--sweep", help="Try minmax, percentile 99.99/99.999 and entropy; keep the most faithful to FP32 on held-back train images.")] = False,
                    holdout: Annotated[int, typer.Option(help="With --sweep: held-back train images (never val, never calibration).")] = 50,
                    per_channel: Annotated[bool, typer.Option("--per-channel", help="Per-channel weight scales.")] = False,
                    bias_correct: Annotated[bool, typer.Option("--bias-correct", help="Remove the mean shift weight rounding adds to each Conv (Nagel et al. 2019).")] = False,
                    ends: Annotated[Optional[str], typer.Option(help="First Conv and output Convs at higher precision: int16 (still integer) or float.")] = None,
                    target: Annotated[Optional[str], typer.Option(help="With --ends: refuse what this NPU target's profile cannot run.")] = None,
                    keep_float: Annotated[Optional[list[str]], typer.Option("--keep-float", help="Node name to keep float (repeatable).")] = None,
                    auto_float: Annotated[int, typer.Option(help="Also keep the N most sensitive Conv nodes float (by SQNR).")] = 0,
                    imgsz: Annotated[Optional[int], typer.Option(help="Export size [default: the run's].")] = None,
                    cle: Annotated[bool, typer.Option("--cle", help="Cross-layer equalization before quantizing (exact in FP32; ReLU/LeakyReLU chains).")] = False,
                    as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Export a run to ONNX (L4: NPU head cut) and quantize it to INT8 (ONNX Runtime, QDQ over the whole graph)."""
    from npuyolo.deploy.service import quantize_run

    with err.status("calibrating and quantizing..."), quiet_stdout():
        info = quantize_run(open_registry(registry), run, data, calib=calib, method=method, per_channel=per_channel,
                            keep_float=keep_float, auto_float=auto_float, imgsz=imgsz, cle=cle, percentile=percentile,
                            bias_correct=bias_correct, ends=ends, target=target, sweep=sweep, holdout=holdout)
    print_quantized(info, as_json)


def print_quantized(info: dict, as_json: bool) -> None:
    if as_json:
        return print_json({k: v for k, v in info.items() if k not in ("calibration_images", "holdout_images")}
                          | {"calibration_count": len(info["calibration_images"])})
    console.print(f"FP32: {info['fp32']}\nINT8: {info['int8']}  ({len(info['calibration_images'])} train images, {info['calibration']}"
                  f"{', per-channel' if info['per_channel'] else ''}{', bias-corrected' if info['bias_corrected'] else ''}"
                  f"{', ends ' + info['ends'] if info['ends'] else ''}; float nodes: {', '.join(info['keep_float']) or 'none'})",
                  highlight=False, markup=False)
    if info["sweep"]:
        table = Table(title=f"calibration sweep on {info['holdout']} held-back train images (fidelity to FP32)")
        table.add_column("calibration")
        table.add_column("SQNR dB", justify="right")
        for row in info["sweep"]:
            table.add_row(row["calibration"] + (" *" if row["calibration"] == info["calibration"] else ""), f"{row['sqnr_db']:.2f}")
        console.print(table)


@deploy_app.command("qat")
@user_errors
def deploy_qat(run: Annotated[str, typer.Argument(help="Trained run id or name (the parent).")],
               data: Annotated[Optional[Path], typer.Option(help="data.yaml [default: the parent run's].")] = None,
               epochs: Annotated[int, typer.Option(help="Fine-tuning epochs with INT8 fake-quantization.")] = 5,
               lr0: Annotated[Optional[float], typer.Option(help="Learning rate [default: a tenth of the parent's lr0].")] = None,
               calib: Annotated[int, typer.Option(help="Calibration images for the INT8 export.")] = 200,
               per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Weight scales of the export (QAT trains per-channel).")] = True,
               bias_correct: Annotated[bool, typer.Option("--bias-correct", help="Bias correction in the export.")] = False,
               ends: Annotated[Optional[str], typer.Option(help="int16 or float first/output Convs in the export.")] = None,
               as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Quantization-aware fine-tuning (NVIDIA ModelOpt through Ultralytics) as a new run, then its INT8 QDQ export."""
    from npuyolo.deploy.qat import qat_run

    with quiet_stdout(as_json):
        info = qat_run(open_registry(registry), run, data, epochs=epochs, lr0=lr0, calib=calib, per_channel=per_channel,
                       bias_correct=bias_correct, ends=ends, verbose=not as_json)
    if not as_json:
        console.print(f"QAT run {info['qat_run']} ({info['qat_name']}) from run {info['parent_run']}", highlight=False, markup=False)
    print_quantized(info, as_json)


@deploy_app.command("eval")
@user_errors
def deploy_eval(artefact: Annotated[Path, typer.Argument(help="ONNX file written by npuyolo, or a model `npu compile` built: "
                                                           ".rknn, or the int8 .tflite behind a Vela build.")],
                data: Annotated[Path, typer.Option(help="data.yaml; its val split is scored.")],
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Score the deployed model (ONNX Runtime + host decode + NMS) with Ultralytics' metrics.

    A compiled model is scored as the vendor quantized it (RKNN-Toolkit2's simulator; TFLite's reference kernels for
    Vela's input), in the compiler's environment, beside its FP32 ONNX file; its input contract is checked first."""
    from npuyolo.deploy.service import evaluate_artefact

    with err.status("evaluating..."), quiet_stdout():  # Ultralytics' progress stays off stdout
        r = evaluate_artefact(open_registry(registry), artefact, data)
    if as_json:
        return print_json(r)
    console.print(f"{r['kind'].upper()} {artefact}: P {r['precision']:.3f}  R {r['recall']:.3f}  mAP50 {r['map50']:.3f}  "
                  f"mAP50-95 {r['map50_95']:.3f}  ({r['images']} val images at {r['imgsz']} px)", highlight=False)
    if "runtime" in r:
        console.print(f"scored by {r['runtime']}; input contract {r['contract']} checked on a training photo (cosine per "
                      f"output {', '.join('-' if c is None else f'{c:.3f}' for c in r['cosine'])}; '-': no signal to judge); "
                      f"FP32: {r['onnx']}", highlight=False)
    table = Table(title="per class" + (" (drop vs FP32 in mAP50 points)" if "drop_pp_per_class" in r else ""))
    for col in ("class", "P", "R", "mAP50", "mAP50-95", *(["mAP50 drop"] if "drop_pp_per_class" in r else [])):
        table.add_column(col)
    for c, v in r["per_class"].items():
        drop = [f"{r['drop_pp_per_class'][c]:+.2f}"] if "drop_pp_per_class" in r else []
        table.add_row(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['map50']:.3f}", f"{v['map50_95']:.3f}", *drop)
    console.print(table)
    if "drop_pp" in r:
        what = f"{r['kind'].upper()} INT8" if "runtime" in r else "INT8"
        console.print(f"{what} drop vs FP32: mAP50 {r['drop_pp']['map50']:.2f} points, mAP50-95 {r['drop_pp']['map50_95']:.2f} points")


@deploy_app.command("plan")
@user_errors
def deploy_plan(model: Annotated[str, typer.Argument(help="Run id/name or .pt checkpoint.")],
                target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
                data: Annotated[Path, typer.Option(help="data.yaml: train images calibrate, val images score.")],
                conf: PlanConfOpt = 0.25,
                calib: PlanCalibOpt = 100,
                holdout: PlanHoldoutOpt = 50,
                sweep: PlanSweepOpt = True,
                imgsz: Annotated[Optional[int], typer.Option(help="Export size [default: the run's].")] = None,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Build every artefact that could serve each target, verify each (placement, FP32/INT8 accuracy), choose."""
    from npuyolo.deploy.plan import build_plan

    with err.status("building and verifying candidates..."), quiet_stdout():
        plan = build_plan(open_registry(registry), model, target, data, conf=conf, calib=calib, holdout=holdout,
                          imgsz=imgsz, sweep=sweep)
    if as_json:
        return print_json(plan.as_dict())
    print_plan(plan)


def print_plan(plan) -> None:
    table = Table(title=f"deployment plan for {plan.model_ref} (INT8 calibration {plan.calibration}; * chosen)")
    for col in ("target", "artefact", "NPU share", "off NPU", "host parts", "NPU ms", "FP32 mAP50", "INT8 mAP50",
                f"INT8/FP32 P/R/mAP50 at {plan.conf:g}"):
        table.add_column(col, no_wrap=col == "artefact")
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    for tp in plan.targets:
        for i, r in enumerate(sorted(tp.rows, key=lambda r: r is not tp.chosen)):
            p = r.placement
            ms = fmt(p.npu_ms, 2) if p.npu_ms is not None else {"compiler not installed": "not installed"}.get(p.compiler_status, p.compiler_status or "-")
            ret = r.retention
            table.add_row(tp.target if i == 0 else "", ("* " if r is tp.chosen else "  ") + r.candidate.name, f"{p.share_nodes:.1%}",
                          str(p.off_npu), str(p.partitions_host), ms, fmt(r.fp32.map50), fmt(r.int8.map50),
                          f"{pct(ret['precision'])} / {pct(ret['recall'])} / {pct(ret['map50'])}")
    console.print(table)
    for tp in plan.targets:
        line = f"{tp.target}: {tp.chosen.candidate.name}"
        if tp.runner_up is not None:
            line += f"; runner-up {tp.runner_up.candidate.name} lost: {tp.why_runner_up_lost}"
        console.print(line, highlight=False, markup=False)
        for note in tp.notes:
            console.print(f"  {tp.target}: {note}", highlight=False, markup=False, style="dim")
    console.print(f"plan: {plan.path} ({duration(plan.seconds)})", highlight=False, markup=False)


@deploy_app.command("bench")
@user_errors
def deploy_bench(artefact: Annotated[Path, typer.Argument(help="ONNX file.")],
                 runs: Annotated[int, typer.Option(help="Timed runs (after 10 warm-up runs).")] = 50,
                 threads: Annotated[Optional[int], typer.Option(help="ONNX Runtime intra-op threads [default: all cores].")] = None,
                 as_json: JsonOpt = False) -> None:
    """ONNX Runtime CPU latency: model alone and the whole pipeline (pre-process, model, decode, NMS)."""
    from npuyolo.deploy.latency import bench_onnx

    r = bench_onnx(artefact, runs=runs, threads=threads)
    if as_json:
        return print_json(r)
    table = Table(title=f"{artefact} at {r['imgsz']} px, {r['threads']} threads, {r['macs'] / 1e9:.2f} GMACs")
    for col in ("part", "p50 ms", "p90 ms", "p99 ms", "throughput /s"):
        table.add_column(col, justify="right")
    for part in ("model", "pipeline"):
        s = r[part]
        table.add_row(part, f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['throughput_fps']:.1f}")
    console.print(table)


# ---------------------------------------------------------------------------------------------- distill
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
    print_result(reg.run(result.run_id), as_json)


# ---------------------------------------------------------------------------------------------- prune
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


# ---------------------------------------------------------------------------------------------- hybrid
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
    from npuyolo.train.hybrid import hybrid_search

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


# ---------------------------------------------------------------------------------------------- reports
@app.command()
@user_errors
def report(run: Annotated[str, typer.Argument(help="Run id or name.")],
           compare: Annotated[Optional[str], typer.Option(help="Run to compare with (e.g. the ReLU twin).")] = None,
           lang: Annotated[str, typer.Option(help="ko or en.")] = "en",
           fmt: Annotated[str, typer.Option("--format", help="md or html (one self-contained file).")] = "md",
           out: Annotated[Optional[Path], typer.Option(help="Output folder [default: the run's folder, reports/].")] = None,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a training report from the registry (every number is a recorded one)."""
    from npuyolo.report.render import render_run

    path = render_run(open_registry(registry, readonly=True), run, out, lang=lang, fmt=fmt, compare=compare)
    if as_json:
        return print_json({"report": str(Path(path).resolve()), "folder": str(Path(path).resolve().parent)})
    console.print(f"wrote {path}", highlight=False, markup=False)


@series_app.command("report")
@user_errors
def series_report(name: str, lang: Annotated[str, typer.Option(help="ko or en.")] = "en",
                  target: Annotated[str, typer.Option("--target", "-t", help="NPU target for the accuracy vs compatibility plot.")] = "relu-only",
                  fmt: Annotated[str, typer.Option("--format", help="md or html (one self-contained file).")] = "md",
                  out: Annotated[Optional[Path], typer.Option(help="Output folder [default: <registry dir>/reports/series-<name>].")] = None,
                  as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write the series overview: ranking table, all members' curves, accuracy vs NPU compatibility."""
    from npuyolo.report.render import render_series

    path = render_series(open_registry(registry, readonly=True), name, out, lang=lang, target=target, fmt=fmt)
    if as_json:
        return print_json({"report": str(Path(path).resolve())})
    console.print(f"wrote {path}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------- predict
@app.command()
@user_errors
def predict(model: Annotated[str, typer.Argument(help="Run id/name, .pt checkpoint, or npuyolo ONNX file (either head, INT8, rewritten).")],
            source: Annotated[str, typer.Argument(help="Image, folder, glob pattern (quote it: 'imgs/*.jpg') or video (.mp4/.avi/.mov/.mkv).")],
            conf: Annotated[float, typer.Option(help="Confidence threshold, in (0, 1].")] = 0.25,
            iou: Annotated[float, typer.Option(help="NMS IoU threshold, in (0, 1].")] = 0.7,
            imgsz: Annotated[Optional[int], typer.Option(help="Input size [default: the ONNX file's, the run's, else 640].")] = None,
            out: Annotated[Optional[Path], typer.Option(help="Output folder [default: the run's predict/, else ./predict/<model>].")] = None,
            max_det: Annotated[int, typer.Option("--max-det", help="Most boxes kept per image.")] = 300,
            as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Detect objects: annotated images/videos, predictions.json and predictions.csv (ONNX decoded on the host like the .pt)."""
    from rich.progress import Progress
    from rich.text import Text

    from npuyolo.deploy.predict import run_predict, stdout_to_stderr

    with contextlib.ExitStack() as stack, stdout_to_stderr():
        bars: list = []

        def start(total: int) -> None:  # a bar on stderr for many images or video frames, on a terminal only
            if total > 1:
                progress = stack.enter_context(Progress(console=err, transient=True, disable=not err.is_terminal))
                bars.append((progress, progress.add_task("predicting", total=total)))

        r = run_predict(model, source, conf=conf, iou=iou, imgsz=imgsz, out=out, max_det=max_det, registry=registry,
                        on_start=start, on_frame=lambda: [p.advance(t) for p, t in bars])
    if as_json:
        return print_json(r.as_dict())
    frames = sum(d.frame is not None for d in r.detections)
    total = sum(len(d.boxes) for d in r.detections)
    console.print(f"{r.model} ({r.kind}, {r.imgsz} px, conf {r.conf:g}, iou {r.iou:g}): {len(r.detections) - frames} image(s)"
                  f"{f' + {frames} video frame(s)' if frames else ''}, {total} detection(s)", highlight=False)
    if r.per_class:
        table = Table(title="detections per class")
        table.add_column("class")
        table.add_column("boxes", justify="right")
        for name, count in r.per_class.items():
            table.add_row(Text(name), str(count))  # a class named '[b]' stays text
        console.print(table)
    console.print(f"wrote {len(r.annotated)} annotated file(s), {r.json_path.name} and {r.csv_path.name} to {r.out}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------- studies
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
        err.print(f"[yellow]interrupted[/]: run the same `npuyolo study relu-gap` again to continue")
        raise typer.Exit(130) from None
    reports = [str(render_study(reg, name, out, lang=lang)) for lang in ("en", "ko")]
    if as_json:
        return print_json({"study": name, "rows": [asdict(r) for r in rows], "reports": reports})
    print_study(name, rows)
    for r in reports:
        console.print(f"wrote {r}", highlight=False, markup=False)


def print_study(name: str, rows) -> None:
    table = Table(title=f"study {name}: best.pt mAP50 over seeds")
    for col in ("route", "variant", "runs", "mAP50 mean ± sd", "range", "mAP50-95 mean", "gap to leaky", "beyond spread", "cost s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.route, r.variant, ", ".join(fmt(x) for x in r.runs), f"{fmt(r.mean['map50'])} ± {fmt(r.std['map50'])}",
                      fmt(r.spread["map50"]), fmt(r.mean["map50_95"]),
                      "-" if r.route == "leaky" or r.gap_pp["map50"] is None else f"{r.gap_pp['map50']:+.1f} pp",
                      {None: "-", True: "yes", False: "no"}[r.beyond_spread["map50"]], fmt(r.cost_s, 0))
    console.print(table)


@study_app.command("report")
@user_errors
def study_report(name: str, lang: Annotated[str, typer.Option(help="ko or en.")] = "en",
                 out: Annotated[Optional[Path], typer.Option(help="Output folder.")] = None, registry: RegistryOpt = None) -> None:
    """Write a study's report again from the registry (e.g. after more seeds finished)."""
    from npuyolo.report.render import render_study

    path = render_study(open_registry(registry, readonly=True), name, out, lang=lang)
    console.print(f"wrote {path}", highlight=False, markup=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
