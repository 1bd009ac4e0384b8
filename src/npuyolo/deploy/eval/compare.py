"""`npuyolo compare`: any models deploy eval takes, scored once on one data set, compared with intervals.

Every model goes through the one pipeline `deploy eval` uses (square letterbox at the model's size, confidence 0.001,
IoU 0.7, Ultralytics' matching), so a run, its .pt, its ONNX export and its INT8 file compare like for like. Each
model's per-image statistics are kept (`stats/` beside the run, or under the registry's folder for a loose file),
keyed by the file's content, the size and the data set's val split, so a second comparison runs no model at all.
Compare records no row: a registry that cannot be written is opened read-only, its kept statistics are read back, and
what could not be kept is said once, in the result's `note`. Every model's classes are compared, with each other and with
the data set's, before any model runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from npuyolo.data.check import check_dataset, load_data_yaml
from npuyolo.deploy.eval.evaluate import DeployError, load_deployable, onnx_predictor, torch_predictor, validate_matched
from npuyolo.deploy.export import check_imgsz
from npuyolo.deploy.eval.vendor import evaluate_compiled, is_compiled, read_compiled
from npuyolo.errors import NpuyoloError, storage_error
from npuyolo.npu.onnxfile import onnx_metadata
from npuyolo.paths import safe_join, sha256_file, slug
from npuyolo.registry.db import Registry, RegistryError
from npuyolo.resolve import ModelRef, default_imgsz, resolve_model
from npuyolo.stats.compare import Comparison, compare_stats
from npuyolo.stats.matched import MatchedStats, StatsError, load_stats, save_stats
from npuyolo.variants.checkpoint import read_checkpoint

__all__ = ["ClassMismatchError", "ComparedModel", "CompareResult", "MAX_BOOTSTRAP", "check_classes", "compare_models", "compare_registry",
           "identify", "keep", "model_stats", "short_labels", "stats_file", "val_fingerprint"]

MAX_BOOTSTRAP = 100_000


@dataclass(frozen=True)
class ComparedModel:
    label: str  # as the user named it
    source: Path  # the file that was scored (a run's best.pt, an ONNX file, a compiled model)
    kind: str  # pt | onnx | rknn | tflite
    stats_file: Path
    cached: bool  # statistics read back, no model run
    not_kept: str | None = None  # scored, but its statistics could not be kept: why


@dataclass(frozen=True)
class CompareResult:
    comparison: Comparison
    models: list[ComparedModel]
    data: Path
    plot: Path | None = None  # the forest plot of the differences, where one was drawn
    note: str | None = None  # one line: what could not be kept (statistics, the plot) and why

    def as_dict(self) -> dict:
        return {"data": str(self.data), "plot": str(self.plot) if self.plot else None, "note": self.note,
                **self.comparison.as_dict(),
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


class ClassMismatchError(DeployError):
    """Models that predict other classes than each other, or than the data set labels: refused before any scoring."""


def compare_registry(path: str | Path | None = None) -> Registry:
    """The registry compare reads: opened for writing where it can be (each model's statistics and the plot are kept
    under its folder), else read-only, as read commands open it. Compare records no row, so a registry that cannot be
    written (a read-only file or folder) still answers; it keeps nothing there and its result's note says so."""
    try:
        return Registry(path)
    except RegistryError as writable:
        try:
            return Registry(path, readonly=True)
        except RegistryError:
            raise writable from None


def _stats_dir(registry: Registry, run_id: int | None) -> Path:
    """Where statistics are kept (not made here: `keep` makes it, and a read-only registry is never written)."""
    if run_id is None:
        return safe_join(registry.root, "stats")
    run = registry.get_run(run_id)
    if not registry.readonly:
        try:
            return registry.run_dir(run, "stats")  # also refuses a run folder outside the registry's (an edited registry)
        except OSError:
            pass  # a run folder that cannot be written: kept statistics are still read back, nothing is kept
    base = Path(run.save_dir) if run.save_dir else registry.root / "train" / f"{run.id}-{slug(run.name)}"
    return safe_join(registry.root, base, "stats")


def _names(names) -> list[str] | None:
    """Class names in id order, from a model's {id: name} mapping or list; None when there are none to read."""
    if isinstance(names, dict) and names and all(str(k).lstrip("-").isdigit() for k in names):
        return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    return None


def _checkpoint_names(path: Path) -> list[str] | None:
    """A .pt's class names, read (safely) from its model without scoring; None where it cannot be read: its scoring
    then says why, as it always did."""
    try:
        ckpt = read_checkpoint(path)
    except NpuyoloError:
        return None
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    model = getattr(model, "student_model", model)  # a distillation checkpoint: the student is the model
    return _names(getattr(model, "names", None))


def _compiled_names(path: Path) -> list[str] | None:
    """A compiled model's classes: those of the ONNX file it was built from, as its manifest names it."""
    try:
        return _names(json.loads(onnx_metadata(read_compiled(path).onnx).get("names", "null")))
    except (NpuyoloError, ValueError):
        return None


def identify(registry: Registry, ref: str) -> tuple[Path, str, int | None, int | None, list[str] | None]:
    """What a model reference scores: (file, kind, run id or None, size or None: the checkpoint's own, class names or
    None). The names are read cheaply: a run's record, an ONNX file's metadata, a compiled model's source ONNX file;
    a loose checkpoint's are None here (loading it costs a second; `_checkpoint_names` reads them when needed)."""
    text = str(ref)
    path = Path(text)
    if is_compiled(path):
        return path, path.suffix.lstrip(".") or "compiled", None, None, _compiled_names(path)
    if text.lower().endswith(".onnx"):
        model = load_deployable(path)
        return path, "onnx", registry.artifact_run(path), model.imgsz, _names(model.names)
    parsed = ModelRef.parse(text)
    if parsed.kind == "variant":
        raise DeployError(f"{text!r} is an untrained variant; compare trained models (a run, a .pt, an ONNX file)")
    if parsed.is_run:
        run = registry.get_run(text)
        best = run.artifact_path("weights/best", "weights/last")
        if best is None:
            raise DeployError(f"run {run.name} has no weights on disk")
        kind = "pt" if run.artifact_path("weights/best") else "pt (last.pt: its best.pt is gone)"
        return Path(best), kind, run.id, run.recipe.imgsz, _names(run.class_names)
    return path, "pt", None, None, None  # read from the checkpoint only where no statistics are kept (compare_models)


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _brief(names: list[str], shown: int = 4) -> str:
    """`6 classes (speed_limit, warning, stop, mandatory, …)`."""
    listed = ", ".join(_short(n) for n in names[:shown])
    return f"{len(names)} class{'es' if len(names) != 1 else ''} ({listed}{', …' if len(names) > shown else ''})"


def _difference(a: list[str], b: list[str]) -> str:
    """Where two lists of one length first differ, when that is past what `_brief` shows."""
    if len(a) != len(b):
        return ""
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"; class {i} is {_short(a[i])!r} against {_short(b[i])!r}" if i >= 4 else ""


def check_classes(labels: list[str], names: list[list[str] | None], data: Path, data_names: list[str]) -> None:
    """Every model must predict the data set's classes, by the same names in the same order (so all alike): else one
    line naming both class lists, before any model is scored. A model whose names cannot be read cheaply is checked
    as it is scored."""
    known = [(label, n) for label, n in zip(labels, names) if n is not None]
    if not known:
        return
    first, a = known[0]
    for label, b in known[1:]:
        if b != a:
            raise ClassMismatchError(f"{first} and {label} predict different classes ({first}: {_brief(a)}; {label}: "
                                     f"{_brief(b)}{_difference(a, b)}); compare models trained on the same classes")
    data_names = [str(n) for n in data_names]
    if a != data_names:
        raise ClassMismatchError(f"{first} predicts other classes than the data set {data} ({first}: {_brief(a)}; the data set: "
                                 f"{_brief(data_names)}{_difference(a, data_names)}); compare on the data set the models "
                                 "were trained on")


def stats_file(registry: Registry, source: Path, run_id: int | None, fingerprint: str, imgsz: int | None,
               digest: str | None = None) -> Path:
    """Where a model's statistics on one val split are kept: keyed by the file's content, the data and the size."""
    if not source.is_file():
        raise DeployError(f"{source}: not found")
    digest = digest or sha256_file(source)
    return _stats_dir(registry, run_id) / f"{slug(source.stem, 'model')}-{digest[:16]}-{fingerprint}-{imgsz or 'auto'}.npz"


def keep(registry: Registry, stats: MatchedStats, source: Path, run_id: int | None, fingerprint: str,
         imgsz: int | None, digest: str | None = None, said: list[str] | None = None) -> MatchedStats:
    """Keep a model's statistics where `model_stats` looks for them, recording which file and data they are of.
    Keeping is a saving, never a condition: a read-only registry, a folder that cannot be written or something that
    is not a file at that place keeps nothing, and the answer stands (`said`, when given, gets why, in a few words).
    Returns the statistics with their origin."""
    digest = digest or sha256_file(source)
    stats = dataclasses.replace(stats, meta={**stats.meta, "source": str(source), "sha256": digest, "fingerprint": fingerprint})
    file = stats_file(registry, source, run_id, fingerprint, imgsz, digest)
    why = None
    if registry.readonly:
        why = f"the registry {registry.path} is opened read-only"
    elif (os.path.lexists(file) and not file.is_file()) or file.is_symlink():
        why = f"{file} is not a regular file"
    else:
        try:
            save_stats(stats, file)
        except OSError as e:
            why = str(storage_error(e, file, writing=True) or f"cannot write {file}: {e.strerror or e}")
    if why is not None and said is not None:
        said.append(why)
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


def _lookup(registry: Registry, identified: tuple, fingerprint: str) -> tuple[str, Path, MatchedStats | None]:
    """(the file's digest, where its statistics are kept, the kept statistics or None)."""
    source, _, run_id, imgsz, _ = identified
    if not source.is_file():
        raise DeployError(f"{source}: not found")
    digest = sha256_file(source)
    file = stats_file(registry, source, run_id, fingerprint, imgsz, digest)
    return digest, file, _kept(file, digest, fingerprint)


def model_stats(registry: Registry, ref: str, data: str | Path, fingerprint: str | None = None,
                identified: tuple | None = None, looked: tuple | None = None) -> tuple[MatchedStats, ComparedModel]:
    """One model's matched statistics on `data`'s val split: read back when kept, else scored once and kept.
    `identified`: what `identify` already said of `ref` (it opens an ONNX file: not done twice); `looked`: what
    `_lookup` already found (the file is hashed once)."""
    fingerprint = fingerprint or val_fingerprint(data)
    text = str(ref)
    identified = identified or identify(registry, text)
    source, kind, run_id, imgsz, _ = identified
    size_key = imgsz  # the cache key's size: a checkpoint's own is only known once it is loaded
    digest, cached, kept = looked or _lookup(registry, identified, fingerprint)
    if kept is not None:
        return kept, ComparedModel(text, source, kind, cached, True)
    if kind == "onnx":
        predict, meta = onnx_predictor(source)
        names = {int(k): v for k, v in json.loads(meta["names"]).items()}
        _, stats = validate_matched(predict, data, imgsz, names)
    elif kind.startswith("pt"):
        resolved = resolve_model(None, ModelRef(str(source), "pt"))
        imgsz = imgsz or default_imgsz(resolved)
        check_imgsz(imgsz)
        model = resolved.model
        _, stats = validate_matched(torch_predictor(model), data, imgsz, dict(model.names))
    else:
        stats = evaluate_compiled(source, data).stats
        if stats is None:
            raise DeployError(f"{source}: its scoring kept no per-image statistics")
    said: list[str] = []
    stats = keep(registry, stats, source, run_id, fingerprint, size_key, digest, said)
    return stats, ComparedModel(text, source, kind, cached, False, said[0] if said else None)


def _check_data(registry: Registry, data: Path) -> None:
    """The data set's check, its report cached under the registry's folder where that can be written."""
    if registry.readonly:
        check_dataset(data)
        return
    try:
        check_dataset(data, cache_dir=registry.root / "cache")
    except OSError:  # the cache could not be written (a read-only or full folder): the check itself stands
        check_dataset(data)


def compare_models(registry: Registry, refs: list[str], data: str | Path, *, bootstrap: int = 1000, seed: int = 0,
                   progress=None) -> CompareResult:
    """Each model's mAP50, mAP50-95, P, R with 95% intervals; each pair's paired difference and verdict.
    Refused before any model runs: models of other classes than each other or the data set, one file named twice."""
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
    data_names = load_data_yaml(data)[2]
    _check_data(registry, data)
    fingerprint = val_fingerprint(data)
    identified = [identify(registry, str(r)) for r in refs]  # before any scoring: one file named twice is refused
    real = [os.path.realpath(i[0]) for i in identified]
    if len(set(real)) != len(real):
        twice = next(str(r) for r, p in zip(refs, real) if real.count(p) > 1)
        raise DeployError(f"{twice} and another reference name the same file ({next(p for p in real if real.count(p) > 1)})")
    labels = short_labels([str(r) for r in refs])
    looked = [_lookup(registry, i, fingerprint) for i in identified]
    # each model's classes: its kept statistics' own, else its record's or metadata's, else its checkpoint's
    names = [_names(kept.names) if kept is not None else known if known is not None
             else _checkpoint_names(source) if kind.startswith("pt") else None
             for (source, kind, _, _, known), (_, _, kept) in zip(identified, looked)]
    check_classes(labels, names, data, data_names)
    stats, models = [], []
    for i, (ref, label, known, found) in enumerate(zip(refs, labels, identified, looked)):
        if progress is not None:
            progress(f"scoring {label} ({i + 1}/{len(refs)})")
        s, m = model_stats(registry, str(ref), data, fingerprint, known, found)
        stats.append(s)
        models.append(dataclasses.replace(m, label=label))
    if progress is not None:
        progress(f"{bootstrap} paired resamples of {len(stats[0].images)} images")
    try:
        comparison = compare_stats(stats, labels, n=bootstrap, seed=seed)
    except StatsError as e:
        raise DeployError(str(e)) from None
    not_kept = [m for m in models if m.not_kept]
    note = None
    if not_kept:
        note = (f"statistics of {', '.join(m.label for m in not_kept)} not kept: {not_kept[0].not_kept}; "
                f"a second comparison scores {'it' if len(not_kept) == 1 else 'them'} again")
    return CompareResult(comparison, models, data, note=note)
