"""Structured channel pruning with a dependency-graph pruner (torch-pruning), then fine-tuning as a new run."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from npuyolo.data.check import check_dataset
from npuyolo.deploy.eval.evaluate import torch_predictor, validate
from npuyolo.deploy.export import export_onnx, load_weights
from npuyolo.deploy.infer.latency import bench_onnx
from npuyolo.errors import NpuyoloError
from npuyolo.paths import atomic_path
from npuyolo.prune.modules import split_c2f
from npuyolo.train.recipe import Recipe
from npuyolo.train.trainer import train_variant

METHODS = ("l1", "group-norm")


class PruneError(NpuyoloError, ValueError):
    """A model or setting the pruner cannot handle."""


def _head_outputs(out):
    """The raw per-anchor box and class tensors, whatever mode the Detect head ran in."""
    preds = out[1] if isinstance(out, (tuple, list)) else out
    return [preds["boxes"], preds["scores"]]


def count(model: torch.nn.Module, imgsz: int) -> dict:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, imgsz, imgsz))
    return {"parameters": int(params), "gflops": round(2 * float(macs) / 1e9, 3)}


def prune_model(model: torch.nn.Module, ratio: float, method: str = "l1", imgsz: int = 640) -> torch.nn.Module:
    """A pruned copy: C2f blocks re-parametrised, then `ratio` of each prunable layer's channels removed.

    The last conv of each Detect branch (box distribution and class outputs) and the DFL keep their channels,
    so outputs keep their shapes and the host decode is unchanged.
    """
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise PruneError(f"ratio must be between 0 and 1, got {ratio}", param="ratio")
    if method not in METHODS:
        raise PruneError(f"method must be one of {', '.join(METHODS)}", param="method")
    cfg = (getattr(model, "yaml", {}) or {}).get("npuyolo") or {}
    if any(type(m).__name__ in ("C2PSA", "PSABlock", "Attention") for m in model.modules()):
        raise PruneError("the model has C2PSA attention (levels L0/L1); prune an attention-free level (L2 and up)")
    model = copy.deepcopy(model).float()
    split_c2f(model)
    detect = model.model[-1]
    ignored = [detect.dfl, *(b[-1] for b in detect.cv2), *(b[-1] for b in detect.cv3)]
    for p in model.parameters():
        p.requires_grad_(True)
    importance = tp.importance.MagnitudeImportance(p=1) if method == "l1" else tp.importance.GroupMagnitudeImportance(p=2)
    model.eval()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 3, imgsz, imgsz), importance=importance, pruning_ratio=ratio,
                                  ignored_layers=ignored, round_to=8, output_transform=_head_outputs)
    pruner.step()
    model.yaml = {**model.yaml, "npuyolo": {**cfg, "pruned": {"ratio": ratio, "method": method}}}
    return model


def save_checkpoint(model: torch.nn.Module, path: Path, extra: dict | None = None) -> Path:
    """An Ultralytics-style checkpoint (`model` holds the module), loadable by `load_checkpoint` and YOLO()."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a refused write is an OSError, not torch's RuntimeError
        torch.save({"date": datetime.now(timezone.utc).isoformat(), "model": copy.deepcopy(model).float(), "ema": None,
                    "epoch": -1, "train_args": extra or {}}, f)
    return path


@dataclass(frozen=True)
class PruneResult:
    """A pruned, fine-tuned run beside its parent: size, accuracy and ONNX Runtime latency before and after.

    `before`, `pruned_before_finetune` and `after` each hold parameters, gflops, map50, map50_95, precision, recall;
    `ort_p50_ms` the parent's and the pruned model's median latency ("parent", "pruned")."""

    run_id: int  # the fine-tuned run
    parent_run: int
    ratio: float
    method: str
    finetune_epochs: int
    before: dict[str, float]
    pruned_before_finetune: dict[str, float]
    after: dict[str, float]
    ort_p50_ms: dict[str, float]
    pruned_checkpoint: str

    def report(self) -> dict:
        """What the fine-tuned run records as its `prune/report` artefact (everything but its own id)."""
        return {k: v for k, v in self.as_dict().items() if k != "run_id"}

    def artefact(self) -> tuple[str, Path, dict]:
        """(kind, file, meta) the fine-tuned run records (`services.training.prune`): the pruned checkpoint, reported."""
        return "prune/report", Path(self.pruned_checkpoint), self.report()

    def as_dict(self) -> dict:
        """The shape `prune --json` has always printed."""
        return {"run_id": self.run_id, "parent_run": self.parent_run, "ratio": self.ratio, "method": self.method,
                "finetune_epochs": self.finetune_epochs, "before": self.before,
                "pruned_before_finetune": self.pruned_before_finetune, "after": self.after,
                "ort_p50_ms": self.ort_p50_ms, "pruned_checkpoint": self.pruned_checkpoint}


def prune_run(registry, ref: str, *, ratio: float = 0.3, method: str = "l1", finetune_epochs: int = 10,
              data: str | Path | None = None, bench_runs: int = 20, verbose: bool = True) -> PruneResult:
    """Prune a run's best weights, fine-tune them as a new run, and measure size, accuracy and latency before/after;
    recording the report on the new run is the caller's (`services.training.prune`)."""

    parent = registry.get_run(ref)
    best = parent.artifact_path("weights/best")
    if best is None:
        raise PruneError(f"run {parent.name} has no best weights on disk (status {parent.status})")
    if finetune_epochs < 1:
        raise PruneError("finetune_epochs must be at least 1 (a pruned model needs fine-tuning to recover)", param="finetune_epochs")
    data = Path(data or parent.data_path)

    check_dataset(data, cache_dir=registry.root / "cache")  # npuyolo's bounded check before Ultralytics reads the set
    recipe = Recipe.recorded(parent, epochs=finetune_epochs, warmup_epochs=0)
    imgsz = recipe.imgsz
    model = load_weights(best)
    pruned = prune_model(model, ratio, method, imgsz)
    out = registry.run_dir(parent, "prune")
    ckpt = save_checkpoint(pruned, out / f"pruned-{method}-{ratio:g}.pt", {"imgsz": imgsz})
    names = model.names
    before = {**count(model, imgsz), **_scores(validate(torch_predictor(model), data, imgsz, names))}
    pruned_only = {**count(pruned, imgsz), **_scores(validate(torch_predictor(pruned), data, imgsz, names))}
    result = train_variant(registry, parent.variant, data, recipe, name=registry.unique_name(f"{parent.name[:80]}-pruned{ratio:g}-{method}"),
                           weights=ckpt, series=None, verbose=verbose)
    tuned = load_weights(registry.get_run(result.run_id).artifact_path("weights/best"))
    after = {**count(tuned, imgsz), **_scores(validate(torch_predictor(tuned), data, imgsz, names))}
    latency = {}
    for label, m in (("parent", model), ("pruned", tuned)):
        onnx_path = export_onnx(m, out / f"{label}.onnx", imgsz=imgsz)
        latency[label] = bench_onnx(onnx_path, runs=bench_runs, warmup=3)["model"]["p50_ms"]
    return PruneResult(run_id=result.run_id, parent_run=parent.id, ratio=ratio, method=method,
                       finetune_epochs=finetune_epochs, before=before, pruned_before_finetune=pruned_only, after=after,
                       ort_p50_ms=latency, pruned_checkpoint=str(ckpt))


def _scores(r: dict) -> dict:
    return {k: r[k] for k in ("map50", "map50_95", "precision", "recall")}
