"""`npuyolo compare`: any models deploy eval takes, scored once on one data set, compared with intervals.

Every model goes through the one pipeline `deploy eval` uses (square letterbox at the model's size, confidence 0.001,
IoU 0.7, Ultralytics' matching), so a run, its .pt, its ONNX export and its INT8 file compare like for like. Each
model's per-image statistics are kept (`stats/` beside the run, or under the registry's folder for a loose file),
keyed by the file's content, the size and the data set's val split, so a second comparison runs no model at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from npuyolo.data.check import check_dataset, load_data_yaml
from npuyolo.deploy.evaluate import DeployError, load_deployable, onnx_predictor, torch_predictor, validate_matched
from npuyolo.deploy.export import check_imgsz
from npuyolo.deploy.vendor import evaluate_compiled, is_compiled
from npuyolo.paths import safe_join, sha256_file, slug
from npuyolo.registry.db import Registry
from npuyolo.resolve import ModelRef, default_imgsz, resolve_model
from npuyolo.stats.compare import Comparison, compare_stats
from npuyolo.stats.matched import MatchedStats, StatsError, load_stats, save_stats

__all__ = ["ComparedModel", "CompareResult", "MAX_BOOTSTRAP", "compare_models", "identify", "model_stats", "remember", "short_labels", "stats_file",
           "val_fingerprint"]

MAX_BOOTSTRAP = 100_000


@dataclass(frozen=True)
class ComparedModel:
    label: str  # as the user named it
    source: Path  # the file that was scored (a run's best.pt, an ONNX file, a compiled model)
    kind: str  # pt | onnx | rknn | tflite
    stats_file: Path
    cached: bool  # statistics read back, no model run


@dataclass(frozen=True)
class CompareResult:
    comparison: Comparison
    models: list[ComparedModel]
    data: Path
    plot: Path | None = None  # the forest plot of the differences, where one was drawn

    def as_dict(self) -> dict:
        return {"data": str(self.data), "plot": str(self.plot) if self.plot else None, **self.comparison.as_dict(),
                "sources": [{"label": m.label, "source": str(m.source), "kind": m.kind, "stats": str(m.stats_file),
                             "cached": m.cached} for m in self.models]}


def val_fingerprint(data: str | Path) -> str:
    """The val split as scored: image names and sizes, label contents. A changed label or image is new data."""
    from npuyolo.ultra import check_det_dataset

    info = check_det_dataset(str(data))
    val = info["val"] if isinstance(info["val"], list) else [info["val"]]
    h = hashlib.sha256(json.dumps(sorted(info["names"].items()) if isinstance(info["names"], dict) else info["names"]).encode())
    for root in val:
        root = Path(root)
        images = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for img in images:
            h.update(f"{img.relative_to(root.parent) if root.is_dir() else img.name}:{img.stat().st_size}".encode())
            label = Path(str(img.parent).replace("/images", "/labels")) / (img.stem + ".txt")
            if label.is_file():
                h.update(label.read_bytes())
    return h.hexdigest()[:16]


def short_labels(refs: list[str]) -> list[str]:
    """How each model is named in tables: a file by the fewest trailing path parts that tell it apart from the others
    (`L4-leaky/best.pt`), a run by what the user typed."""
    parts = [Path(r).parts if ("/" in r or r.lower().endswith((".pt", ".onnx", ".rknn", ".tflite"))) else (r,) for r in refs]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return list(refs)


def _stats_dir(registry: Registry, run_id: int | None) -> Path:
    if run_id is not None:
        return registry.run_dir(registry.get_run(run_id), "stats")
    return safe_join(registry.root, "stats")


def identify(registry: Registry, ref: str) -> tuple[Path, str, int | None, int | None]:
    """What a model reference scores: (file, kind, run id or None, size or None: the checkpoint's own)."""
    text = str(ref)
    path = Path(text)
    if is_compiled(path):
        return path, path.suffix.lstrip(".") or "compiled", None, None
    if text.lower().endswith(".onnx"):
        return path, "onnx", registry.artifact_run(path), load_deployable(path).imgsz
    parsed = ModelRef.parse(text)
    if parsed.kind == "variant":
        raise DeployError(f"{text!r} is an untrained variant; compare trained models (a run, a .pt, an ONNX file)")
    if parsed.is_run:
        run = registry.get_run(text)
        best = run.artifact_path("weights/best", "weights/last")
        if best is None:
            raise DeployError(f"run {run.name} has no weights on disk")
        return Path(best), "pt", run.id, run.recipe.get("imgsz")
    return path, "pt", None, None


def stats_file(registry: Registry, source: Path, run_id: int | None, fingerprint: str, imgsz: int | None) -> Path:
    """Where a model's statistics on one val split are kept: keyed by the file's content, the data and the size."""
    if not source.is_file():
        raise DeployError(f"{source}: not found")
    folder = registry.run_dir(registry.get_run(run_id), "stats") if run_id is not None else safe_join(registry.root, "stats")
    return folder / f"{slug(source.stem, 'model')}-{sha256_file(source)[:16]}-{fingerprint}-{imgsz or 'auto'}.npz"


def remember(registry: Registry, stats: MatchedStats, file: Path) -> None:
    """Keep statistics for later comparisons (a read-only registry keeps nothing)."""
    if not registry.readonly:
        save_stats(stats, file)


def model_stats(registry: Registry, ref: str, data: str | Path, fingerprint: str | None = None) -> tuple[MatchedStats, ComparedModel]:
    """One model's matched statistics on `data`'s val split: read back when kept, else scored once and kept."""
    fingerprint = fingerprint or val_fingerprint(data)
    text = str(ref)
    source, kind, run_id, imgsz = identify(registry, text)
    cached = stats_file(registry, source, run_id, fingerprint, imgsz)
    if cached.is_file():
        try:
            return load_stats(cached), ComparedModel(text, source, kind, cached, True)
        except StatsError:
            pass  # damaged: scored again below, and replaced
    if kind == "onnx":
        predict, meta = onnx_predictor(source)
        names = {int(k): v for k, v in json.loads(meta["names"]).items()}
        _, stats = validate_matched(predict, data, imgsz, names)
    elif kind == "pt":
        resolved = resolve_model(ModelRef(str(source), "pt"))
        imgsz = imgsz or default_imgsz(resolved)
        check_imgsz(imgsz)
        model = resolved.model
        _, stats = validate_matched(torch_predictor(model), data, imgsz, dict(model.names))
    else:
        stats = evaluate_compiled(source, data).stats
        if stats is None:
            raise DeployError(f"{source}: its scoring kept no per-image statistics")
    remember(registry, stats, cached)
    return stats, ComparedModel(text, source, kind, cached, False)


def compare_models(registry: Registry, refs: list[str], data: str | Path, *, bootstrap: int = 1000, seed: int = 0,
                   progress=None) -> CompareResult:
    """Each model's mAP50, mAP50-95, P, R with 95% intervals; each pair's paired difference and verdict."""
    if not refs:
        raise DeployError("compare needs at least one model", param="models")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or not 100 <= bootstrap <= MAX_BOOTSTRAP:
        raise DeployError(f"bootstrap must be a whole number of resamples from 100 to {MAX_BOOTSTRAP}, got {bootstrap!r}",
                          param="bootstrap")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DeployError(f"seed must be a whole number >= 0, got {seed!r}", param="seed")
    if len(set(map(str, refs))) != len(refs):
        raise DeployError("the same model is named twice", param="models")
    data = Path(data)
    load_data_yaml(data)
    check_dataset(data, cache_dir=registry.root / "cache")
    fingerprint = val_fingerprint(data)
    stats, models = [], []
    for i, (ref, label) in enumerate(zip(refs, short_labels([str(r) for r in refs]))):
        if progress is not None:
            progress(f"scoring {label} ({i + 1}/{len(refs)})")
        s, m = model_stats(registry, str(ref), data, fingerprint)
        stats.append(s)
        models.append(dataclasses.replace(m, label=label))
    if progress is not None:
        progress(f"{bootstrap} paired resamples of {len(stats[0].images)} images")
    labels = [m.label for m in models]
    try:
        comparison = compare_stats(stats, labels, n=bootstrap, seed=seed)
    except StatsError as e:
        raise DeployError(str(e)) from None
    return CompareResult(comparison, models, data)
