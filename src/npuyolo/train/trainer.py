"""A run's lifecycle: prepare it in the registry (folder claimed, model YAML written), train it through the glue
(`train.glue`) into its records (`train.records`), close it whatever happens, resume it. The names the glue and the
records modules define are re-exported here for callers of the old single module."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from npuyolo import offline
from npuyolo.data.check import check_dataset
from npuyolo.errors import USER_OS_ERRNOS, CheckpointError, NpuyoloError
from npuyolo.paths import slug, write_text
from npuyolo.registry.db import Registry, RegistryError, RunRecord, validate_run_name
from npuyolo.registry.schema import RunStatus
from npuyolo.train.glue import (
    NpuyoloTrainer,
    attach_records,
    keep_previous,
    trainer_for,
    with_teacher,
)
from npuyolo.train.recipe import Recipe
from npuyolo.train.records import (
    PREVIOUS,
    RecordSink,
    RegistrySink,
    finish_run,
    record_trackers,
    software_versions,
)
from npuyolo.variants.build import model_yaml
from npuyolo.variants.checkpoint import read_checkpoint, trust_npuyolo_classes
from npuyolo.variants.spec import parse_variant

__all__ = ["PREVIOUS", "PreparedRun", "RecordSink", "RegistrySink", "RunResult", "TrainError", "close_if_trained",
           "keep_previous", "preflight", "prepare_resume", "prepare_variant", "record_trackers", "resume_run", "run_prepared", "train_into",
           "train_variant", "trainer_for"]

# OS errors a user fixes (space, permissions, read-only media): one line, and the run is recorded failed with it
_USER_OS_ERRORS = USER_OS_ERRNOS


class TrainError(NpuyoloError, RuntimeError):
    """A run that cannot start or continue (bad resume target, missing checkpoint...)."""


def model_yaml_path(save_dir: Path, scale: str, variant: str) -> Path:
    """Named like Ultralytics' own YAMLs (yolo11n-...), which is how plain Ultralytics infers the scale."""
    return save_dir / f"yolo11{scale}-{slug(variant, 'model')}.yaml"


@dataclass
class RunResult:
    run_id: int
    name: str
    status: RunStatus
    save_dir: Path


def preflight(overrides: dict) -> None:
    """Catch what Ultralytics would reject while building its trainer (unknown keys, absent devices) before a run exists."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import LOGGER
    from ultralytics.utils.torch_utils import select_device

    level = LOGGER.level
    LOGGER.setLevel(logging.ERROR)  # Ultralytics logs its banner and a copy of the message before raising: one line only
    try:
        args = get_cfg(overrides={k: v for k, v in overrides.items() if k != "distill_model"})
        if args.device not in (None, ""):
            select_device(args.device, verbose=False)
    except (SyntaxError, ValueError, TypeError, KeyError) as e:
        raise TrainError(" ".join(str(e).replace("ERROR ❌️", "").split())) from e
    finally:
        LOGGER.setLevel(level)


def train_into(build: Callable[[], NpuyoloTrainer], sink: RecordSink, label: str,
               on_trainer: Callable[[NpuyoloTrainer], None] | None = None) -> Path:
    """Build and train, then close the run through `sink` whatever happens (finished / interrupted / failed).

    A failure while the trainer is built is recorded too (`failed`, with its message), never left `running`.
    Returns the run's folder. `on_trainer` sees the built trainer before it trains (executors add callbacks).
    """
    trust_npuyolo_classes()  # Ultralytics' own loads (resume, teacher, pretrained) may meet npuyolo modules
    try:
        trainer = build()
        attach_records(trainer, sink)
        if on_trainer:
            on_trainer(trainer)
        trainer.train()
    except KeyboardInterrupt:
        sink.set_status(RunStatus.INTERRUPTED, error="stopped by the user (Ctrl-C)")
        raise
    except BaseException as e:
        message = " ".join(f"{type(e).__name__}: {e}".split())[:2000]
        sink.set_status(RunStatus.FAILED, error=message)
        if isinstance(e, OSError) and e.errno in _USER_OS_ERRORS:
            raise TrainError(f"{label} failed: {e}") from e
        raise
    if not Path(trainer.save_dir).is_dir():  # deleted while it trained: nothing on disk to call finished
        sink.set_status(RunStatus.FAILED, error=f"the run's folder {trainer.save_dir} was deleted while it trained")
        raise TrainError(f"{label} failed: its folder {trainer.save_dir} was deleted while it trained; nothing was kept")
    finish_run(sink, trainer.save_dir, trainer=trainer)
    return Path(trainer.save_dir)


def run_prepared(registry: Registry, prepared: PreparedRun) -> RunResult:
    """Train a prepared run in this process, writing straight into the registry."""
    return _run_trainer(registry, prepared.build, prepared.run_id)


def _run_trainer(registry: Registry, build: Callable[[], NpuyoloTrainer], run_id: int) -> RunResult:
    """Train in this process, writing straight into the registry."""
    save_dir = train_into(build, RegistrySink(registry, run_id), f"run {run_id}")
    if not registry.path.is_file():  # SQLite kept writing into the deleted file: the record is gone with it
        raise TrainError(f"run {run_id}: the registry {registry.path} was deleted while it trained; nothing was recorded")
    run = registry.get_run(run_id)
    return RunResult(run_id, run.name, run.status, save_dir)


@dataclass
class PreparedRun:
    """A run the registry holds (`running`, folder claimed), with what its trainer is built from.

    Made in the process that owns the registry; `build()` can run there or in a worker that never opens it.
    """

    run_id: int
    recipe: Recipe
    overrides: dict
    action: str = "train"  # train | resume

    def build(self) -> NpuyoloTrainer:
        use_cpu_threads(self.recipe.threads)
        return trainer_for(self.recipe)(overrides=dict(self.overrides))


MAX_DEFAULT_THREADS = 8  # Ultralytics' own cap: a nano model gains nothing from more


def default_cpu_threads() -> int:
    """Torch threads of a CPU run that does not set `threads`: OMP_NUM_THREADS where set (Ray sets it to a task's
    CPUs, so members trained side by side do not each take every core), else every core this process may use, at most
    8. Ultralytics' own default, cores - 1, trains at half speed on 2 cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env == offline.ULTRALYTICS_OMP_DEFAULT and offline.OMP_NUM_THREADS_BEFORE_ULTRALYTICS is None:
        env = ""  # Ultralytics' own import-time default, not the user's choice
    if env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


def use_cpu_threads(threads: int | None) -> None:
    """The torch threads Ultralytics sets when its trainer picks the CPU (`select_device`)."""
    import ultralytics.utils.torch_utils as torch_utils

    torch_utils.NUM_THREADS = threads or default_cpu_threads()


def train_variant(registry: Registry, variant: str, data: str | Path, recipe: Recipe, *, name: str | None = None,
                  weights: str | Path | None = None, series: str | None = None, verbose: bool = True,
                  on_created: Callable[[int], None] | None = None) -> RunResult:
    """Check the data, register the run, train it with Ultralytics, record every epoch."""
    prepared = prepare_variant(registry, variant, data, recipe, name=name, weights=weights, series=series,
                               verbose=verbose, on_created=on_created)
    return _run_trainer(registry, prepared.build, prepared.run_id)


def prepare_variant(registry: Registry, variant: str, data: str | Path, recipe: Recipe, *, name: str | None = None,
                    weights: str | Path | None = None, series: str | None = None, verbose: bool = True,
                    on_created: Callable[[int], None] | None = None) -> PreparedRun:
    """Check the data, register the run and write its model YAML; training is left to the caller."""
    spec = parse_variant(variant)
    data = Path(data).resolve()
    if name is not None:
        name = validate_run_name(name)
    if recipe.act_anneal and not _has_relu(spec):
        raise TrainError(f"act_anneal anneals into ReLU, but {spec.name} has no ReLU stage; use e.g. L4-relu", param="act_anneal")
    report = check_dataset(data, cache_dir=registry.root / "cache")
    if weights is not None:
        if not Path(weights).is_file():
            raise TrainError(f"weights {weights}: no such file (npuyolo never downloads weights; pass a local .pt)", param="weights")
        read_checkpoint(weights)  # refuses a corrupt file or one whose pickle would run code, before a run exists
    base = {  # AMP as the recipe says (Ultralytics' default: on); npuyolo's offline check keeps it off on CPU
        **recipe.ultralytics_args(), "data": str(data), "exist_ok": True, "verbose": verbose,
        "pretrained": str(Path(weights).resolve()) if weights else False,
    }
    preflight({**base, "model": "yolo11n.yaml"})
    run_id = registry.create_run(name=name, variant=spec.name, recipe=recipe.model_dump(), data_path=str(data),
                                 data_hash=report.content_hash, class_names=report.names,
                                 weights_source=str(Path(weights).resolve()) if weights else None,
                                 device=recipe.device or "auto", versions=software_versions(), series=series)
    if on_created:
        on_created(run_id)
    save_dir = Path(registry.get_run(run_id).save_dir)
    try:
        yaml_path = model_yaml_path(save_dir, spec.scale, spec.name)
        write_text(yaml_path, yaml.safe_dump(model_yaml(spec, nc=len(report.names), names=report.names), sort_keys=False))
        registry.add_artifact(run_id, "model_yaml", yaml_path)
    except BaseException as e:  # recorded like a failed build: never left `running`
        registry.set_status(run_id, RunStatus.FAILED, error=" ".join(f"{type(e).__name__}: {e}".split())[:2000])
        if isinstance(e, OSError) and e.errno in _USER_OS_ERRORS:
            raise TrainError(f"run {run_id} failed: {e}") from e
        raise
    overrides = {**base, "model": str(yaml_path), "project": str(save_dir.parent), "name": save_dir.name}
    return PreparedRun(run_id, recipe, with_teacher(overrides, recipe))


def _has_relu(spec) -> bool:
    if spec.stage_activations is not None:
        return any(act == "relu" for act, _ in spec.stage_activations.values())
    return spec.activation == "relu"


RESUME_SOURCES = ("last", "previous", "best")


def _checkpoint_epoch(path: Path) -> int:
    return int(read_checkpoint(path).get("epoch", -1))


def _resume_checkpoint(run: RunRecord, save_dir: Path, source: str) -> tuple[Path, int] | None:
    """The checkpoint a resume starts from and its epoch; None when the run never wrote one.

    A corrupt last.pt is explained with the alternatives that do load (previous checkpoint, best.pt).
    """
    if source not in RESUME_SOURCES:
        raise TrainError(f"from must be one of {', '.join(RESUME_SOURCES)}, got {source!r}", param="from")
    wdir = save_dir / "weights"
    files = {"last": wdir / "last.pt", "previous": wdir / PREVIOUS, "best": wdir / "best.pt"}
    chosen = files[source]
    for other in (p for k, p in files.items() if k != source and p.exists()):
        try:  # Ultralytics itself opens best.pt again at the end of training (strip_optimizer, final validation)
            read_checkpoint(other)
        except CheckpointError as e:
            if "refused" in str(e):
                raise TrainError(f"{e}; move it away before resuming this run") from e
    if source == "last" and not chosen.exists():
        return None
    if not chosen.exists():
        raise TrainError(f"run {run.name} has no {chosen.name} to resume from")
    try:
        return chosen, _checkpoint_epoch(chosen)
    except CheckpointError as e:
        offers = []
        for alt in ("previous", "best"):
            if alt != source and files[alt].exists():
                try:
                    offers.append(f"`npuyolo train --resume {run.id} --from {alt}` (epoch {_checkpoint_epoch(files[alt]) + 1})")
                except CheckpointError:
                    pass
        hint = ("; resume from a good checkpoint with " + " or ".join(offers)) if offers else "; no other checkpoint of this run loads"
        raise TrainError(f"{e}{hint}") from e


def close_if_trained(registry: Registry, ref: str | int) -> bool:
    """Record as finished a run whose training completed on disk but whose end never reached the registry.

    Ultralytics strips last.pt at the end of training (epoch -1); a stop that lands between that and the final
    record (a Ctrl-C on a Ray driver, a kill) leaves the run `interrupted` with nothing left to train, and resuming
    it fails. With every epoch recorded it is closed as finished; otherwise the gap is named.
    """
    run = registry.get_run(ref)
    if run.status in (RunStatus.FINISHED, RunStatus.RUNNING):
        return False
    wdir = (Path(run.save_dir) if run.save_dir else registry.run_dir(run)) / "weights"
    last = wdir / "last.pt"
    try:
        if not last.exists() or _checkpoint_epoch(last) != -1:
            return False
    except CheckpointError:
        return False
    if len(run.epochs) < run.recipe.epochs:
        raise TrainError(f"run {run.name} finished training on disk, but only {len(run.epochs)} of its {run.recipe.epochs} "
                         f"epochs were recorded; its weights are in {wdir}")
    finish_run(RegistrySink(registry, run.id), wdir.parent)
    return True


def resume_run(registry: Registry, ref: str | int, verbose: bool = True, source: str = "last") -> RunResult:
    """Continue an interrupted or failed run from its last checkpoint (or from the start if it has none)."""
    if source == "last" and close_if_trained(registry, ref):
        run = registry.get_run(ref)
        return RunResult(run.id, run.name, run.status, Path(run.save_dir) if run.save_dir else registry.run_dir(run))
    prepared = prepare_resume(registry, ref, verbose=verbose, source=source)
    return _run_trainer(registry, prepared.build, prepared.run_id)


def prepare_resume(registry: Registry, ref: str | int, verbose: bool = True, source: str = "last") -> PreparedRun:
    """Claim an interrupted or failed run again and drop the epochs its checkpoint does not hold."""
    run = registry.get_run(ref)
    if run.status == RunStatus.FINISHED:
        raise TrainError(f"run {run.name} already finished; start a new run instead")
    if run.status == RunStatus.RUNNING:
        raise TrainError(f"run {run.name} is still running (pid {run.pid})")
    save_dir = Path(run.save_dir) if run.save_dir else registry.run_dir(run)
    found = _resume_checkpoint(run, save_dir, source)
    recipe = Recipe.recorded(run)
    if found is None:  # killed before the first checkpoint: start over with the recorded recipe
        yaml_art = run.artifact("model_yaml")
        yaml_path = Path(yaml_art.path) if yaml_art else save_dir / "model.yaml"
        if not yaml_path.exists():
            raise TrainError(f"run {run.name} has neither a checkpoint nor {yaml_path}; nothing to resume from")
        overrides = with_teacher({
            **recipe.ultralytics_args(), "model": str(yaml_path), "data": run.data_path, "project": str(save_dir.parent),
            "name": save_dir.name, "exist_ok": True, "pretrained": run.weights_source or False, "verbose": verbose,
        }, recipe)
        keep_epochs = 0
    else:
        checkpoint, epoch = found
        last = save_dir / "weights" / "last.pt"
        if checkpoint != last and last.exists():
            os.replace(last, last.with_name("last.pt.corrupt"))  # kept for inspection; the resume writes a new last.pt
        overrides = {"model": str(checkpoint), "resume": str(checkpoint), "data": run.data_path, "verbose": verbose}
        keep_epochs = epoch + 1
    registry.claim_run(run.id)
    registry.truncate_epochs(run.id, keep_epochs)
    backfill_epochs(registry, run.id, save_dir, keep_epochs)
    return PreparedRun(run.id, recipe, overrides, action="resume")


# results.csv column -> epoch field (the rest of a row, other losses and schedules, was never in results.csv)
RESULTS_COLUMNS = {"box_loss": "train/box_loss", "cls_loss": "train/cls_loss", "dfl_loss": "train/dfl_loss",
                   "precision": "metrics/precision(B)", "recall": "metrics/recall(B)", "map50": "metrics/mAP50(B)",
                   "map50_95": "metrics/mAP50-95(B)", "lr": "lr/pg0"}


def backfill_epochs(registry: Registry, run_id: int, save_dir: Path, upto: int) -> list[int]:
    """Record the epochs a checkpoint holds but the registry lost: Ultralytics saves last.pt before the epoch's record
    is written, so a stop between the two resumed after an epoch the registry never saw. Ultralytics writes
    results.csv before last.pt, so the epoch's figures are there; they are recorded with `extra.from_results_csv`."""
    have = {e.epoch for e in registry.get_run(run_id).epochs}
    missing = [e for e in range(1, upto + 1) if e not in have]
    csv_path = save_dir / "results.csv"
    if not missing or not csv_path.is_file():
        return []

    def number(text: str | None) -> float | None:
        try:
            return float(text) if text not in (None, "") else None
        except ValueError:
            return None

    rows: dict[int, dict] = {}
    epoch_time: dict[int, float | None] = {}
    previous = 0.0  # Ultralytics' `time` column: seconds since training started
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            epoch, elapsed = number(row.get("epoch")), number(row.get("time"))
            if epoch is None:
                continue
            rows[int(epoch)] = row
            epoch_time[int(epoch)] = None if elapsed is None or previous is None else elapsed - previous
            previous = elapsed
    done = []
    for epoch in missing:
        if epoch in rows:
            registry.record_epoch(run_id, epoch, extra={"from_results_csv": 1.0}, epoch_time_s=epoch_time[epoch],
                                  **{field: number(rows[epoch].get(column)) for field, column in RESULTS_COLUMNS.items()})
            done.append(epoch)
    return done


__all__ = ["close_if_trained", "NpuyoloTrainer", "PreparedRun", "RecordSink", "RegistryError", "RegistrySink", "RunResult", "TrainError",
           "prepare_resume", "prepare_variant", "resume_run", "run_prepared", "train_into", "train_variant"]
