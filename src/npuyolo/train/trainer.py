"""Training on Ultralytics' own trainer (subclassed, not forked), with every epoch written to the registry."""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from npuyolo.data.check import check_dataset
from npuyolo.errors import USER_OS_ERRNOS, CheckpointError, NpuyoloError
from npuyolo.paths import slug, write_text
from npuyolo.registry.db import Registry, RegistryError, RunRecord, validate_run_name
from npuyolo.train.recipe import Recipe
from npuyolo.ultra import DetectionTrainer, intersect_dicts
from npuyolo.variants.build import build_model, model_yaml
from npuyolo.variants.checkpoint import is_pruned, read_checkpoint, trust_npuyolo_classes
from npuyolo.variants.spec import parse_variant
from npuyolo.yamlfile import load_yaml

PREVIOUS = "last.prev.pt"  # the checkpoint before last.pt, kept while a run trains
# OS errors a user fixes (space, permissions, read-only media): one line, and the run is recorded failed with it
_USER_OS_ERRORS = USER_OS_ERRNOS


class TrainError(NpuyoloError, RuntimeError):
    """A run that cannot start or continue (bad resume target, missing checkpoint...)."""


TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wb", "clearml": "clearml", "comet": "comet",
                   "dvc": "dvc", "neptune": "neptune", "raytune": "raytune", "platform": "platform"}


class NpuyoloTrainer(DetectionTrainer):
    """DetectionTrainer that builds npuyolo variants (YAML edits + module transforms) and counts transfers.

    Ultralytics adds tracker callbacks (W&B, ClearML, Comet, MLflow, TensorBoard...) whenever their package is
    installed and its setting is on; npuyolo keeps only the trackers the recipe names (`trackers:`), so nothing
    reports anywhere unless the user asked for it.
    """

    transferred: tuple[int, int] | None = None
    trackers: tuple[str, ...] = ()

    def drop_unrequested_trackers(self) -> None:
        allowed = {f"ultralytics.utils.callbacks.{TRACKER_MODULES[t]}" for t in self.trackers}
        for event, funcs in self.callbacks.items():
            self.callbacks[event] = [f for f in funcs if not _is_tracker(f) or getattr(f, "__module__", "") in allowed]


    def get_model(self, cfg=None, weights=None, verbose=True):
        source = ((weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights) if weights else None
        if source is not None and is_pruned(source):
            # a pruned model is its own architecture: fine-tune the module itself, not a rebuild from YAML
            model = self.set_model_names_for_load(copy.deepcopy(source).float())
            n = len(model.state_dict())
            self.transferred = (n, n)
            return model
        if isinstance(cfg, (str, Path)):
            cfg = load_yaml(cfg)  # the run folder's model YAML: bounded like every YAML npuyolo reads
        names = list(self.data["names"].values()) if isinstance(self.data["names"], dict) else list(self.data["names"])
        model = build_model(cfg, nc=self.data["nc"], names=names, verbose=False)
        model = self.set_model_names_for_load(model)
        if source is not None:
            model.load(weights, verbose=verbose)
            sd = model.state_dict()
            self.transferred = (len(intersect_dicts(source.float().state_dict(), sd)), len(sd))
        return model

    def save_model(self):
        """Ultralytics' checkpoints, written atomically; the previous last.pt is kept as last.prev.pt.

        A process killed mid-write leaves only a `.partial` file; last.pt is always a complete checkpoint.
        """
        final_last, final_best = self.last, self.best
        tmp_last, tmp_best = (p.with_name(f".{p.name}.partial") for p in (final_last, final_best))
        self.last, self.best = tmp_last, tmp_best
        try:
            saved = super().save_model()
        finally:
            self.last, self.best = final_last, final_best
        if tmp_last.exists():
            if final_last.exists():
                keep_previous(final_last)
            os.replace(tmp_last, final_last)
        if tmp_best.exists():
            os.replace(tmp_best, final_best)
        return saved


_ultralytics_add_integration_callbacks = None  # Ultralytics' own function, wrapped below


def _install_tracker_filter() -> None:
    """Filter right where Ultralytics adds its tracker callbacks, before `on_pretrain_routine_start` (where W&B,
    ClearML... open their runs) fires. Other Ultralytics trainers in the process are left exactly as they were."""
    global _ultralytics_add_integration_callbacks
    import ultralytics.utils.callbacks as package
    import ultralytics.utils.callbacks.base as base

    if getattr(base.add_integration_callbacks, "npuyolo_filter", False):
        return
    _ultralytics_add_integration_callbacks = base.add_integration_callbacks
    package_name = package.__name__

    def add_integration_callbacks(instance):
        if not isinstance(instance, NpuyoloTrainer):
            return _ultralytics_add_integration_callbacks(instance)
        # trackers the recipe did not name are not even imported (Ray Tune's, for one, would import all of Ray)
        allowed = {f".{TRACKER_MODULES[t]}" for t in instance.trackers}
        real_import = base.import_module

        def import_requested(name, package=None):
            if package == package_name and name.lstrip(".") in TRACKER_MODULES.values() and name not in allowed:
                return SimpleNamespace(callbacks={})
            return real_import(name, package)

        base.import_module = import_requested
        try:
            _ultralytics_add_integration_callbacks(instance)
        finally:
            base.import_module = real_import
        instance.drop_unrequested_trackers()

    add_integration_callbacks.npuyolo_filter = True
    base.add_integration_callbacks = package.add_integration_callbacks = add_integration_callbacks


_install_tracker_filter()


def _is_tracker(func) -> bool:
    module = getattr(func, "__module__", "") or ""
    return module.startswith("ultralytics.utils.callbacks.") and module.rsplit(".", 1)[-1] in TRACKER_MODULES.values()


def keep_previous(last: Path) -> None:
    """last.pt -> last.prev.pt without a moment where last.pt is missing (hard link, or a copy where links fail)."""
    prev, staged = last.with_name(PREVIOUS), last.with_name(f".{PREVIOUS}.partial")
    staged.unlink(missing_ok=True)
    try:
        os.link(last, staged)
    except OSError:
        shutil.copyfile(last, staged)
    os.replace(staged, prev)


class NpuyoloDistillTrainer(NpuyoloTrainer):
    """Trains the student with Ultralytics' distillation loop, using npuyolo's logit + feature KD model."""

    kd: dict = {}

    def _wrap(self) -> None:
        from npuyolo.train.kd import KDDistillationModel
        from npuyolo.ultra import DistillationModel, unwrap_model

        model = unwrap_model(self.model)
        if isinstance(model, KDDistillationModel) or not self.args.distill_model:
            return
        projector = None
        if isinstance(model, DistillationModel):  # resumed: Ultralytics rebuilt its own class around our weights
            projector = model.projector.state_dict()
            teacher, student = model.teacher_model, model.student_model
        else:
            teacher, student = self.args.distill_model, model
        student.args = self.args
        self.model = KDDistillationModel(teacher_model=teacher, student_model=student, **self.kd)
        if projector is not None:
            self.model.projector.load_state_dict(projector)

    def setup_model(self):
        ckpt = super().setup_model()
        if ckpt is not None:  # resume: rebuild our class around the checkpoint's student
            self._wrap()
        return ckpt

    def set_model_attributes(self):
        super().set_model_attributes()
        self._wrap()


def distill_trainer(kd: dict) -> type[NpuyoloDistillTrainer]:
    return type("BoundDistillTrainer", (NpuyoloDistillTrainer,), {"kd": dict(kd)})


class AnnealMixin:
    """Sets the LeakyReLU slope of the annealed positions at the start of every epoch (model and EMA alike).

    While the slope is above 0 no best.pt is kept (and early stopping does not count), so the run's best
    weights always come from the pure-ReLU epochs. The slope is a function of the epoch, so a resume
    continues the schedule where it stopped.
    """

    schedule = None  # AnnealSchedule, bound by anneal_trainer()
    act_slope: float | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback("on_train_epoch_start", AnnealMixin._apply_slope)

    @staticmethod
    def _apply_slope(trainer) -> None:
        from npuyolo.train.anneal import set_slope
        from npuyolo.ultra import unwrap_model

        trainer.act_slope = trainer.schedule.slope_at(trainer.epoch + 1)
        for model in (unwrap_model(trainer.model), trainer.ema.ema if trainer.ema else None):
            if model is not None:
                set_slope(getattr(model, "student_model", model), trainer.act_slope)

    def validate(self):
        metrics, fitness = super().validate()
        if self.act_slope:  # still annealing: this is not a ReLU model yet
            self.best_fitness = None
            self.stopper.best_fitness, self.stopper.best_epoch = 0.0, self.epoch + 1
        return metrics, fitness

    def epoch_extra(self) -> dict:
        return {"act_slope": self.act_slope} if self.act_slope is not None else {}


def anneal_trainer(base: type[NpuyoloTrainer], schedule) -> type[NpuyoloTrainer]:
    return type(f"Annealed{base.__name__}", (AnnealMixin, base), {"schedule": schedule})


def software_versions() -> dict[str, str]:
    """Versions from the modules themselves (importlib.metadata scans site-packages: ~1.5 s here)."""
    import importlib

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("npuyolo", "ultralytics", "onnx", "onnxruntime", "numpy"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
            pass
    return versions


def _epoch_row(trainer: DetectionTrainer) -> dict:
    losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    m = trainer.metrics or {}
    return {
        "box_loss": losses.get("train/box_loss"),
        "cls_loss": losses.get("train/cls_loss"),
        "dfl_loss": losses.get("train/dfl_loss"),
        "precision": m.get("metrics/precision(B)"),
        "recall": m.get("metrics/recall(B)"),
        "map50": m.get("metrics/mAP50(B)"),
        "map50_95": m.get("metrics/mAP50-95(B)"),
        "lr": next(iter(trainer.lr.values())) if trainer.lr else None,
        "epoch_time_s": getattr(trainer, "epoch_time", None),
    }


class RecordSink:
    """Where a training process sends what the registry keeps about its run: epochs, run fields, artefacts, status.

    Local runs write straight into the registry (`RegistrySink`); a run trained by a Ray worker sends the same
    calls back to the driver (`npuyolo.train.executors`), which alone opens the registry.
    """

    def record_epoch(self, epoch: int, extra: dict | None = None, **row: float | None) -> None: ...
    def update_run(self, **fields) -> None: ...
    def add_artifact(self, kind: str, path: str | Path, meta: dict | None = None) -> None: ...
    def set_status(self, status: str, error: str | None = None) -> None: ...


class RegistrySink(RecordSink):
    """The registry itself, for one run: every call is one transaction, as before."""

    def __init__(self, registry: Registry, run_id: int):
        self.registry, self.run_id = registry, run_id

    def record_epoch(self, epoch, extra=None, **row):
        self.registry.record_epoch(self.run_id, epoch, extra=extra, **row)

    def update_run(self, **fields):
        self.registry.update_run(self.run_id, **fields)

    def add_artifact(self, kind, path, meta=None):
        self.registry.add_artifact(self.run_id, kind, path, meta)

    def set_status(self, status, error=None):
        self.registry.set_status(self.run_id, status, error=error)


def _attach_registry(trainer: NpuyoloTrainer, sink: RecordSink) -> None:
    trained = {"pending": False}

    def on_train_epoch_end(t: DetectionTrainer) -> None:
        trained["pending"] = True

    def on_fit_epoch_end(t: DetectionTrainer) -> None:
        row = {k: (float(v) if v is not None else None) for k, v in _epoch_row(t).items()}
        if trained["pending"]:
            # runs after last.pt is saved, so every recorded epoch is also in the checkpoint a resume starts from
            extra = {k.split("/", 1)[1]: v for k, v in t.label_loss_items(t.tloss, prefix="train").items()
                     if k not in ("train/box_loss", "train/cls_loss", "train/dfl_loss")} if t.tloss else {}
            extra.update(t.epoch_extra() if hasattr(t, "epoch_extra") else {})
            sink.record_epoch(t.epoch + 1, extra=extra or None, **row)
            trained["pending"] = False
        else:  # Ultralytics' final_eval: validation of best.pt after the last epoch
            best = {k: row[k] for k in ("precision", "recall", "map50", "map50_95")}
            sink.update_run(best_json=json.dumps({"weights": str(t.best), **best}))

    def on_pretrain_routine_end(t: NpuyoloTrainer) -> None:
        # t.amp is what Ultralytics trains with, after its (here offline) AMP check: recorded, not assumed
        fields = {"device": str(t.device), "save_dir": str(t.save_dir), "amp": int(bool(getattr(t, "amp", False)))}
        if t.transferred:
            fields["weights_transferred"] = f"{t.transferred[0]}/{t.transferred[1]}"
        sink.update_run(**fields)

    trainer.add_callback("on_train_epoch_end", on_train_epoch_end)
    trainer.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer.add_callback("on_pretrain_routine_end", on_pretrain_routine_end)


def model_yaml_path(save_dir: Path, scale: str, variant: str) -> Path:
    """Named like Ultralytics' own YAMLs (yolo11n-...), which is how plain Ultralytics infers the scale."""
    return save_dir / f"yolo11{scale}-{slug(variant, 'model')}.yaml"


@dataclass
class RunResult:
    run_id: int
    name: str
    status: str
    save_dir: Path


def preflight(overrides: dict) -> None:
    """Catch what Ultralytics would reject while building its trainer (unknown keys, absent devices) before a run exists."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.torch_utils import select_device

    from ultralytics.utils import LOGGER

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
        _attach_registry(trainer, sink)
        if on_trainer:
            on_trainer(trainer)
        trainer.train()
    except KeyboardInterrupt:
        sink.set_status("interrupted", error="stopped by the user (Ctrl-C)")
        raise
    except BaseException as e:
        message = " ".join(f"{type(e).__name__}: {e}".split())[:2000]
        sink.set_status("failed", error=message)
        if isinstance(e, OSError) and e.errno in _USER_OS_ERRORS:
            raise TrainError(f"{label} failed: {e}") from e
        raise
    wdir = Path(trainer.save_dir) / "weights"
    if not Path(trainer.save_dir).is_dir():  # deleted while it trained: nothing on disk to call finished
        sink.set_status("failed", error=f"the run's folder {trainer.save_dir} was deleted while it trained")
        raise TrainError(f"{label} failed: its folder {trainer.save_dir} was deleted while it trained; nothing was kept")
    for kind in ("best", "last"):
        if (wdir / f"{kind}.pt").exists():
            sink.add_artifact(f"weights/{kind}", wdir / f"{kind}.pt")
    (wdir / PREVIOUS).unlink(missing_ok=True)  # only needed while the run could still be resumed
    sink_trackers(sink, trainer)
    sink.set_status("finished")
    return Path(trainer.save_dir)


def _run_trainer(build: Callable[[], NpuyoloTrainer], registry: Registry, run_id: int) -> RunResult:
    """Train in this process, writing straight into the registry."""
    save_dir = train_into(build, RegistrySink(registry, run_id), f"run {run_id}")
    if not registry.path.is_file():  # SQLite kept writing into the deleted file: the record is gone with it
        raise TrainError(f"run {run_id}: the registry {registry.path} was deleted while it trained; nothing was recorded")
    run = registry.get_run(run_id)
    return RunResult(run_id, run.name, run.status, save_dir)


def record_trackers(registry: Registry, run_id: int, trainer) -> None:
    sink_trackers(RegistrySink(registry, run_id), trainer)


def sink_trackers(sink: RecordSink, trainer) -> None:
    """Where the trackers the recipe named put this run: TensorBoard's log folder, MLflow's run id and URI."""
    trackers = getattr(trainer, "trackers", ()) or ()
    if "tensorboard" in trackers:
        sink.add_artifact("tracker/tensorboard", Path(trainer.save_dir), {"logdir": str(trainer.save_dir)})
    if "mlflow" in trackers:
        try:
            import mlflow

            last = mlflow.last_active_run()
        except Exception:  # mlflow absent or its store unreadable: nothing to point at
            last = None
        if last is not None:
            uri = mlflow.get_tracking_uri()
            sink.add_artifact("tracker/mlflow", f"{uri}#{last.info.run_id}", {"uri": uri, "run_id": last.info.run_id})


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
        return _trainer_for(self.recipe)(overrides=dict(self.overrides))


def train_variant(variant: str, data: str | Path, recipe: Recipe, registry: Registry, *, name: str | None = None,
                  weights: str | Path | None = None, series: str | None = None, verbose: bool = True,
                  on_created: Callable[[int], None] | None = None) -> RunResult:
    """Check the data, register the run, train it with Ultralytics, record every epoch."""
    prepared = prepare_variant(variant, data, recipe, registry, name=name, weights=weights, series=series,
                               verbose=verbose, on_created=on_created)
    return _run_trainer(prepared.build, registry, prepared.run_id)


def prepare_variant(variant: str, data: str | Path, recipe: Recipe, registry: Registry, *, name: str | None = None,
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
        registry.set_status(run_id, "failed", error=" ".join(f"{type(e).__name__}: {e}".split())[:2000])
        if isinstance(e, OSError) and e.errno in _USER_OS_ERRORS:
            raise TrainError(f"run {run_id} failed: {e}") from e
        raise
    overrides = {**base, "model": str(yaml_path), "project": str(save_dir.parent), "name": save_dir.name}
    return PreparedRun(run_id, recipe, _with_teacher(overrides, recipe))


def _has_relu(spec) -> bool:
    if spec.stage_activations is not None:
        return any(act == "relu" for act, _ in spec.stage_activations.values())
    return spec.activation == "relu"


def _trainer_for(recipe: Recipe) -> type[NpuyoloTrainer]:
    """The trainer class a recipe needs: distillation, annealing and named trackers layered on NpuyoloTrainer."""
    base = NpuyoloTrainer
    if recipe.distill:
        base = distill_trainer(recipe.distill.loss_weights())
    if recipe.trackers:
        base = type(f"Tracked{base.__name__}", (base,), {"trackers": tuple(recipe.trackers)})
    if recipe.act_anneal:
        from npuyolo.train.anneal import AnnealSchedule

        base = anneal_trainer(base, AnnealSchedule(**recipe.act_anneal))
    return base


def _with_teacher(overrides: dict, recipe: Recipe) -> dict:
    return {**overrides, "distill_model": recipe.distill.teacher_weights} if recipe.distill else overrides


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


def close_if_trained(ref: str | int, registry: Registry) -> bool:
    """Record as finished a run whose training completed on disk but whose end never reached the registry.

    Ultralytics strips last.pt at the end of training (epoch -1); a stop that lands between that and the final
    record (a Ctrl-C on a Ray driver, a kill) leaves the run `interrupted` with nothing left to train, and resuming
    it fails. With every epoch recorded it is closed as finished; otherwise the gap is named.
    """
    run = registry.get_run(ref)
    if run.status in ("finished", "running"):
        return False
    wdir = (Path(run.save_dir) if run.save_dir else registry.run_dir(run)) / "weights"
    last = wdir / "last.pt"
    try:
        if not last.exists() or _checkpoint_epoch(last) != -1:
            return False
    except CheckpointError:
        return False
    if len(run.epochs) < run.recipe["epochs"]:
        raise TrainError(f"run {run.name} finished training on disk, but only {len(run.epochs)} of its {run.recipe['epochs']} "
                         f"epochs were recorded; its weights are in {wdir}")
    sink = RegistrySink(registry, run.id)
    for kind in ("best", "last"):
        if (wdir / f"{kind}.pt").exists():
            sink.add_artifact(f"weights/{kind}", wdir / f"{kind}.pt")
    (wdir / PREVIOUS).unlink(missing_ok=True)
    sink.set_status("finished")
    return True


def resume_run(ref: str | int, registry: Registry, verbose: bool = True, source: str = "last") -> RunResult:
    """Continue an interrupted or failed run from its last checkpoint (or from the start if it has none)."""
    if source == "last" and close_if_trained(ref, registry):
        run = registry.get_run(ref)
        return RunResult(run.id, run.name, run.status, Path(run.save_dir) if run.save_dir else registry.run_dir(run))
    prepared = prepare_resume(ref, registry, verbose=verbose, source=source)
    return _run_trainer(prepared.build, registry, prepared.run_id)


def prepare_resume(ref: str | int, registry: Registry, verbose: bool = True, source: str = "last") -> PreparedRun:
    """Claim an interrupted or failed run again and drop the epochs its checkpoint does not hold."""
    run = registry.get_run(ref)
    if run.status == "finished":
        raise TrainError(f"run {run.name} already finished; start a new run instead")
    if run.status == "running":
        raise TrainError(f"run {run.name} is still running (pid {run.pid})")
    save_dir = Path(run.save_dir) if run.save_dir else registry.run_dir(run)
    found = _resume_checkpoint(run, save_dir, source)
    recipe = Recipe(**run.recipe)
    if found is None:  # killed before the first checkpoint: start over with the recorded recipe
        yaml_art = run.artifact("model_yaml")
        yaml_path = Path(yaml_art.path) if yaml_art else save_dir / "model.yaml"
        if not yaml_path.exists():
            raise TrainError(f"run {run.name} has neither a checkpoint nor {yaml_path}; nothing to resume from")
        overrides = _with_teacher({
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
    return PreparedRun(run.id, recipe, overrides, action="resume")


__all__ = ["close_if_trained", "NpuyoloTrainer", "PreparedRun", "RecordSink", "RegistryError", "RegistrySink", "RunResult", "TrainError",
           "prepare_resume", "prepare_variant", "resume_run", "train_into", "train_variant"]
