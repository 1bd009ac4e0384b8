"""The Ultralytics glue: npuyolo's DetectionTrainer subclasses (variants, atomic checkpoints, distillation, slope
annealing), the tracker filter (installed when the first npuyolo trainer is built, not at import), and the callbacks
that feed a run's records."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from npuyolo.train.anneal import set_slope
from npuyolo.train.kd import KDDistillationModel
from npuyolo.train.recipe import Recipe
from npuyolo.stats.matched import MatchedStats, StatsError, save_stats
from npuyolo.train.records import FINAL_STATS, PREVIOUS, RecordSink, numerics, software_versions
from npuyolo.ultra import DetectionTrainer, DistillationModel, intersect_dicts, unwrap_model
from npuyolo.variants.build import build_model
from npuyolo.variants.checkpoint import is_pruned
from npuyolo.yamlfile import load_yaml

__all__ = ["TRACKER_MODULES", "AnnealMixin", "NpuyoloDistillTrainer", "NpuyoloTrainer", "anneal_trainer", "attach_records",
           "distill_trainer", "install_tracker_filter", "keep_matched_stats", "keep_previous", "save_final_stats", "trainer_for",
           "with_teacher"]


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

    def __init__(self, *args, **kwargs):
        install_tracker_filter()  # before Ultralytics' BaseTrainer adds its tracker callbacks
        super().__init__(*args, **kwargs)

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

    def get_validator(self):
        validator = super().get_validator()
        keep_matched_stats(validator)
        return validator

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


def keep_matched_stats(validator) -> None:
    """Each validation's per-image statistics, snapshotted (with the image order) before `get_stats` clears them: the
    trainer's last validation, of best.pt, is kept with the run so its figures can be compared with intervals."""
    get_stats = validator.get_stats

    def snapshot_then_get_stats():
        files = list(getattr(getattr(validator.dataloader, "dataset", None), "im_files", None) or [])
        validator.npuyolo_matched = ({k: list(v) for k, v in validator.metrics.stats.items()}, files)
        return get_stats()

    validator.get_stats = snapshot_then_get_stats


def save_final_stats(trainer, sink: RecordSink) -> None:
    """The final validation's matched statistics as `stats/val-rect.npz` in the run's folder (the trainer validates
    in rectangular batches: `rect`), recorded as the run's `stats/val` artefact."""
    kept = getattr(getattr(trainer, "validator", None), "npuyolo_matched", None)
    if not kept:
        return
    per, files = kept
    names = trainer.data["names"] if isinstance(trainer.data["names"], dict) else dict(enumerate(trainer.data["names"]))
    try:
        stats = MatchedStats.from_validator(per, files, names, "rect", meta={"imgsz": trainer.args.imgsz,
                                                                          "data": str(trainer.args.data), "weights": "best"})
    except StatsError:  # the validator saw other images than its dataset lists: nothing trustworthy to keep
        return
    path = save_stats(stats, Path(trainer.save_dir) / "stats" / "val-rect.npz")
    sink.add_artifact(FINAL_STATS, path, {"pipeline": "rect", "images": stats.n_images})


_ultralytics_add_integration_callbacks = None  # Ultralytics' own function, wrapped below


def install_tracker_filter() -> None:
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


def attach_records(trainer: NpuyoloTrainer, sink: RecordSink) -> None:
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
            save_final_stats(t, sink)

    def on_pretrain_routine_end(t: NpuyoloTrainer) -> None:
        # t.amp is what Ultralytics trains with, after its (here offline) AMP check: recorded, not assumed
        fields = {"device": str(t.device), "save_dir": str(t.save_dir), "amp": int(bool(getattr(t, "amp", False))),
                  "versions_json": json.dumps({**software_versions(), "numerics": numerics(t)}, sort_keys=True)}
        if t.transferred:
            fields["weights_transferred"] = f"{t.transferred[0]}/{t.transferred[1]}"
        sink.update_run(**fields)

    trainer.add_callback("on_train_epoch_end", on_train_epoch_end)
    trainer.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer.add_callback("on_pretrain_routine_end", on_pretrain_routine_end)


def trainer_for(recipe: Recipe) -> type[NpuyoloTrainer]:
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


def with_teacher(overrides: dict, recipe: Recipe) -> dict:
    return {**overrides, "distill_model": recipe.distill.teacher_weights} if recipe.distill else overrides

