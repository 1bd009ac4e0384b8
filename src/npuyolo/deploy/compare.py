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
import os
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

__all__ = ["ComparedModel", "CompareResult", "MAX_BOOTSTRAP", "compare_models", "identify", "keep", "model_stats", "short_labels", "stats_file",
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


def _val_images(val) -> list[Path]:
    """The val images as Ultralytics lists them (a folder searched recursively, or a .txt list whose `./` entries are
    relative to it), image suffixes only."""
    from npuyolo.ultra import IMG_FORMATS

    files: list[str] = []
    for entry in val if isinstance(val, list) else [val]:
        entry = Path(entry)
        if entry.is_dir():
            files += [str(f) for f in entry.rglob("*.*")]
        elif entry.is_file():
            parent = str(entry.parent) + os.sep
            files += [x.replace("./", parent, 1) if x.startswith("./") else x
                      for x in entry.read_text(errors="replace").strip().splitlines() if x.strip()]
    return sorted(Path(f) for f in files if Path(f).suffix[1:].lower() in IMG_FORMATS)


def val_fingerprint(data: str | Path) -> str:
    """The val split as it is scored: class names, and the content of every image and of the label file Ultralytics
    pairs with it (`img2label_paths`). Any edited pixel or label is new data, so kept statistics are not reused."""
    from npuyolo.ultra import check_det_dataset, img2label_paths

    info = check_det_dataset(str(data))
    names = sorted(info["names"].items()) if isinstance(info["names"], dict) else info["names"]
    h = hashlib.sha256(json.dumps(names, default=str).encode())
    images = _val_images(info["val"])
    for img, label in zip(images, img2label_paths([str(i) for i in images])):
        h.update(img.name.encode() + b"\0" + sha256_file(img).encode())
        h.update(sha256_file(label).encode() if Path(label).is_file() else b"no label")
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
        kind = "pt" if run.artifact_path("weights/best") else "pt (last.pt: its best.pt is gone)"
        return Path(best), kind, run.id, run.recipe.get("imgsz")
    return path, "pt", None, None


def stats_file(registry: Registry, source: Path, run_id: int | None, fingerprint: str, imgsz: int | None,
               digest: str | None = None) -> Path:
    """Where a model's statistics on one val split are kept: keyed by the file's content, the data and the size."""
    if not source.is_file():
        raise DeployError(f"{source}: not found")
    digest = digest or sha256_file(source)
    return _stats_dir(registry, run_id) / f"{slug(source.stem, 'model')}-{digest[:16]}-{fingerprint}-{imgsz or 'auto'}.npz"


def keep(registry: Registry, stats: MatchedStats, source: Path, run_id: int | None, fingerprint: str,
         imgsz: int | None, digest: str | None = None) -> MatchedStats:
    """Keep a model's statistics where `model_stats` looks for them, recording which file and data they are of.
    Keeping is a saving, never a condition: a read-only registry, a folder that cannot be written or something that
    is not a file at that place keeps nothing, and the answer stands. Returns the statistics with their origin."""
    digest = digest or sha256_file(source)
    stats = dataclasses.replace(stats, meta={**stats.meta, "source": str(source), "sha256": digest, "fingerprint": fingerprint})
    file = stats_file(registry, source, run_id, fingerprint, imgsz, digest)
    if registry.readonly or (os.path.lexists(file) and not file.is_file()) or file.is_symlink():
        return stats
    try:
        save_stats(stats, file)
    except OSError:
        pass
    return stats


def _kept(file: Path, digest: str, fingerprint: str) -> MatchedStats | None:
    """Statistics kept for exactly this file's content and this data (as their own record says), else None."""
    if not os.path.lexists(file):
        return None
    try:
        stats = load_stats(file)
    except StatsError:
        return None  # damaged, a link, not a file: scored again
    return stats if stats.meta.get("sha256") == digest and stats.meta.get("fingerprint") == fingerprint else None


def model_stats(registry: Registry, ref: str, data: str | Path, fingerprint: str | None = None,
                identified: tuple | None = None) -> tuple[MatchedStats, ComparedModel]:
    """One model's matched statistics on `data`'s val split: read back when kept, else scored once and kept.
    `identified`: what `identify` already said of `ref` (it opens an ONNX file: not done twice)."""
    fingerprint = fingerprint or val_fingerprint(data)
    text = str(ref)
    source, kind, run_id, imgsz = identified or identify(registry, text)
    size_key = imgsz  # the cache key's size: a checkpoint's own is only known once it is loaded
    if not source.is_file():
        raise DeployError(f"{source}: not found")
    digest = sha256_file(source)
    cached = stats_file(registry, source, run_id, fingerprint, imgsz, digest)
    kept = _kept(cached, digest, fingerprint)
    if kept is not None:
        return kept, ComparedModel(text, source, kind, cached, True)
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
    stats = keep(registry, stats, source, run_id, fingerprint, size_key, digest)
    return stats, ComparedModel(text, source, kind, cached, False)


def compare_models(registry: Registry, refs: list[str], data: str | Path, *, bootstrap: int = 1000, seed: int = 0,
                   progress=None) -> CompareResult:
    """Each model's mAP50, mAP50-95, P, R with 95% intervals; each pair's paired difference and verdict."""
    if len(refs) < 2:
        raise DeployError("compare needs two or more models")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or not 100 <= bootstrap <= MAX_BOOTSTRAP:
        raise DeployError(f"bootstrap must be a whole number of resamples from 100 to {MAX_BOOTSTRAP}, got {bootstrap!r}",
                          param="bootstrap")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DeployError(f"seed must be a whole number >= 0, got {seed!r}", param="seed")
    if len(set(map(str, refs))) != len(refs):
        raise DeployError("the same model is named twice")
    data = Path(data)
    load_data_yaml(data)
    check_dataset(data, cache_dir=registry.root / "cache")
    fingerprint = val_fingerprint(data)
    identified = [identify(registry, str(r)) for r in refs]  # before any scoring: one file named twice is refused
    real = [os.path.realpath(i[0]) for i in identified]
    if len(set(real)) != len(real):
        twice = next(str(r) for r, p in zip(refs, real) if real.count(p) > 1)
        raise DeployError(f"{twice} and another reference name the same file ({next(p for p in real if real.count(p) > 1)})")
    stats, models = [], []
    for i, (ref, label, known) in enumerate(zip(refs, short_labels([str(r) for r in refs]), identified)):
        if progress is not None:
            progress(f"scoring {label} ({i + 1}/{len(refs)})")
        s, m = model_stats(registry, str(ref), data, fingerprint, known)
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
