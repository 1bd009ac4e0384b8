"""Training on Ultralytics' own trainer (subclassed, not forked), with every epoch written to the registry."""

from __future__ import annotations

import copy
import json
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from npuyolo.data.check import check_dataset
from npuyolo.offline import install_guards
from npuyolo.registry.db import Registry, RegistryError
from npuyolo.train.recipe import Recipe
from npuyolo.variants.build import build_model, model_yaml
from npuyolo.variants.spec import parse_variant

install_guards()

from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils.torch_utils import intersect_dicts  # noqa: E402


class TrainError(RuntimeError):
    """A run that cannot start or continue (bad resume target, missing checkpoint...)."""


class NpuyoloTrainer(DetectionTrainer):
    """DetectionTrainer that builds npuyolo variants (YAML edits + module transforms) and counts transfers."""

    transferred: tuple[int, int] | None = None

    def get_model(self, cfg=None, weights=None, verbose=True):
        from npuyolo.prune.prune import is_pruned

        source = ((weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights) if weights else None
        if source is not None and is_pruned(source):
            # a pruned model is its own architecture: fine-tune the module itself, not a rebuild from YAML
            model = self.set_model_names_for_load(copy.deepcopy(source).float())
            n = len(model.state_dict())
            self.transferred = (n, n)
            return model
        if isinstance(cfg, (str, Path)):
            cfg = yaml.safe_load(Path(cfg).read_text(encoding="utf-8"))
        names = list(self.data["names"].values()) if isinstance(self.data["names"], dict) else list(self.data["names"])
        model = build_model(cfg, nc=self.data["nc"], names=names, verbose=False)
        model = self.set_model_names_for_load(model)
        if source is not None:
            model.load(weights, verbose=verbose)
            sd = model.state_dict()
            self.transferred = (len(intersect_dicts(source.float().state_dict(), sd)), len(sd))
        return model


class NpuyoloDistillTrainer(NpuyoloTrainer):
    """Trains the student with Ultralytics' distillation loop, using npuyolo's logit + feature KD model."""

    kd: dict = {}

    def _wrap(self) -> None:
        from ultralytics.nn.distill_model import DistillationModel
        from ultralytics.utils.torch_utils import unwrap_model

        from npuyolo.distill.model import KDDistillationModel

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


def _attach_registry(trainer: NpuyoloTrainer, registry: Registry, run_id: int) -> None:
    trained = {"pending": False}

    def on_train_epoch_end(t: DetectionTrainer) -> None:
        trained["pending"] = True

    def on_fit_epoch_end(t: DetectionTrainer) -> None:
        row = {k: (float(v) if v is not None else None) for k, v in _epoch_row(t).items()}
        if trained["pending"]:
            # runs after last.pt is saved, so every recorded epoch is also in the checkpoint a resume starts from
            extra = {k.split("/", 1)[1]: v for k, v in t.label_loss_items(t.tloss, prefix="train").items()
                     if k not in ("train/box_loss", "train/cls_loss", "train/dfl_loss")} if t.tloss else {}
            registry.record_epoch(run_id, t.epoch + 1, extra=extra or None, **row)
            trained["pending"] = False
        else:  # Ultralytics' final_eval: validation of best.pt after the last epoch
            best = {k: row[k] for k in ("precision", "recall", "map50", "map50_95")}
            registry.update_run(run_id, best_json=json.dumps({"weights": str(t.best), **best}))

    def on_pretrain_routine_end(t: NpuyoloTrainer) -> None:
        fields = {"device": str(t.device), "save_dir": str(t.save_dir)}
        if t.transferred:
            fields["weights_transferred"] = f"{t.transferred[0]}/{t.transferred[1]}"
        registry.update_run(run_id, **fields)

    trainer.add_callback("on_train_epoch_end", on_train_epoch_end)
    trainer.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer.add_callback("on_pretrain_routine_end", on_pretrain_routine_end)


def path_safe(name: str) -> str:
    """Run and variant names as folder/file names (hybrid names carry ':', ',' and '=')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def model_yaml_path(save_dir: Path, scale: str, variant: str) -> Path:
    """Named like Ultralytics' own YAMLs (yolo11n-...), which is how plain Ultralytics infers the scale."""
    return save_dir / f"yolo11{scale}-{path_safe(variant)}.yaml"


@dataclass
class RunResult:
    run_id: int
    name: str
    status: str
    save_dir: Path


def _run_trainer(trainer: NpuyoloTrainer, registry: Registry, run_id: int) -> RunResult:
    """Train, then close the run in the registry whatever happens (finished / interrupted / failed)."""
    _attach_registry(trainer, registry, run_id)
    try:
        trainer.train()
    except KeyboardInterrupt:
        registry.set_status(run_id, "interrupted", error="stopped by the user (Ctrl-C)")
        raise
    except BaseException as e:
        registry.set_status(run_id, "failed", error=f"{type(e).__name__}: {e}")
        raise
    wdir = Path(trainer.save_dir) / "weights"
    for kind in ("best", "last"):
        if (wdir / f"{kind}.pt").exists():
            registry.add_artifact(run_id, f"weights/{kind}", wdir / f"{kind}.pt")
    registry.set_status(run_id, "finished")
    run = registry.run(run_id)
    return RunResult(run_id, run["name"], run["status"], Path(trainer.save_dir))


def train_variant(variant: str, data: str | Path, recipe: Recipe, registry: Registry, *, name: str | None = None,
                  weights: str | Path | None = None, series: str | None = None, verbose: bool = True,
                  on_created: Callable[[int], None] | None = None) -> RunResult:
    """Check the data, register the run, train it with Ultralytics, record every epoch."""
    spec = parse_variant(variant)
    data = Path(data).resolve()
    report = check_dataset(data, cache_dir=registry.path.parent / "cache")
    if weights is not None and not Path(weights).is_file():
        raise TrainError(f"--weights {weights}: no such file (npuyolo never downloads weights; pass a local .pt)")
    run_id = registry.create_run(name=name, variant=spec.name, recipe=recipe.model_dump(), data_path=str(data),
                                 data_hash=report.content_hash, class_names=report.names,
                                 weights_source=str(Path(weights).resolve()) if weights else None,
                                 device=recipe.device or "auto", versions=software_versions(), series=series)
    if on_created:
        on_created(run_id)
    run_name = registry.run(run_id)["name"]
    save_dir = registry.path.parent / "train" / path_safe(run_name)
    save_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = model_yaml_path(save_dir, spec.scale, spec.name)
    yaml_path.write_text(yaml.safe_dump(model_yaml(spec, nc=len(report.names), names=report.names), sort_keys=False))
    registry.add_artifact(run_id, "model_yaml", yaml_path)
    overrides = {
        **recipe.ultralytics_args(),
        "model": str(yaml_path), "data": str(data), "project": str(save_dir.parent), "name": save_dir.name,
        "exist_ok": True, "pretrained": str(Path(weights).resolve()) if weights else False, "verbose": verbose,
        "amp": False,
    }
    return _run_trainer(_trainer_for(recipe)(overrides=_with_teacher(overrides, recipe)), registry, run_id)


def _trainer_for(recipe: Recipe) -> type[NpuyoloTrainer]:
    if recipe.distill:
        return distill_trainer({k: recipe.distill[k] for k in ("alpha", "beta", "gamma", "temperature")})
    return NpuyoloTrainer


def _with_teacher(overrides: dict, recipe: Recipe) -> dict:
    return {**overrides, "distill_model": recipe.distill["teacher_weights"]} if recipe.distill else overrides


def resume_run(ref: str | int, registry: Registry, verbose: bool = True) -> RunResult:
    """Continue an interrupted or failed run from its last checkpoint (or from the start if it has none)."""
    run = registry.run(ref)
    if run["status"] == "finished":
        raise TrainError(f"run {run['name']} already finished; start a new run instead")
    if run["status"] == "running":
        raise TrainError(f"run {run['name']} is still running (pid {run['pid']})")
    save_dir = Path(run["save_dir"] or registry.path.parent / "train" / path_safe(run["name"]))
    last = save_dir / "weights" / "last.pt"
    registry.claim_run(run["id"])
    if last.exists():
        ckpt_epoch = int(torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1))
        registry.truncate_epochs(run["id"], ckpt_epoch + 1)
        recipe = Recipe(**run["recipe"])
        trainer = _trainer_for(recipe)(overrides={"model": str(last), "resume": str(last), "data": run["data_path"], "verbose": verbose})
    else:  # killed before the first checkpoint: start over with the recorded recipe
        registry.truncate_epochs(run["id"], 0)
        yaml_path = Path(next((a["path"] for a in run["artifacts"] if a["kind"] == "model_yaml"), save_dir / "model.yaml"))
        if not yaml_path.exists():
            raise TrainError(f"run {run['name']} has neither {last} nor {yaml_path}; nothing to resume from")
        recipe = Recipe(**run["recipe"])
        trainer = _trainer_for(recipe)(overrides=_with_teacher({
            **recipe.ultralytics_args(), "model": str(yaml_path), "data": run["data_path"], "project": str(save_dir.parent),
            "name": save_dir.name, "exist_ok": True, "pretrained": run["weights_source"] or False, "verbose": verbose, "amp": False,
        }, recipe))
    return _run_trainer(trainer, registry, run["id"])


__all__ = ["NpuyoloTrainer", "RegistryError", "RunResult", "TrainError", "resume_run", "train_variant"]
