"""The operations both front doors share: the CLI (`npuyolo.cli`) and the Python API (`npuyolo.api.Workspace`) call
these and only format what comes back, so a command and its API method cannot drift apart (which model a reference
names, the default size, where outputs go, what is recorded in the registry).

Each function takes plain values and a registry path, opens the registry only when the model is a run, and returns a
typed record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npuyolo.deploy.eval.compare import CompareResult, compare_models
from npuyolo.deploy.export import ExportError, check_imgsz, export_onnx
from npuyolo.errors import NpuyoloError, storage_error
from npuyolo.paths import make_dir, safe_join
from npuyolo.registry.db import Registry, RunRecord
from npuyolo.resolve import ModelRef, default_imgsz, resolve_model
from npuyolo.train.anneal import with_anneal
from npuyolo.train.recipe import Recipe
from npuyolo.train.trainer import train_variant

__all__ = ["ExportRecord", "HEADS", "compare", "export_model", "train_model"]

HEADS = ("npu", "ultralytics")


@dataclass(frozen=True)
class ExportRecord:
    """One written ONNX file: where, for which run (None for a variant or a checkpoint), at which size and head."""

    onnx: Path
    run_id: int | None
    imgsz: int
    head: str | None  # None: the level's own head

    def as_dict(self) -> dict:
        return {"onnx": str(self.onnx), "run_id": self.run_id, "imgsz": self.imgsz, "head": self.head}


def export_model(model: str, out: str | Path | None = None, *, registry: str | Path | None = None,
                 imgsz: int | None = None, head: str | None = None, nc: int = 80, force: bool = False) -> ExportRecord:
    """Static-shape ONNX of a variant (untrained), run or .pt, at the size it was trained at unless `imgsz` says.

    A run's file goes to its own folder's export/ and is recorded as its `onnx/<head>` artefact; anything else goes
    to the working directory and touches no registry. `out` may replace an earlier npuyolo ONNX file; another file
    or a symlink only with `force`; never the registry.
    """
    if head not in (None, *HEADS):
        raise ExportError(f"head must be npu or ultralytics, got {head!r}")
    ref = ModelRef.parse(model)
    reg = Registry(registry) if ref.is_run else None  # exporting a variant or a file touches no registry
    resolved = resolve_model(ref, reg if reg is not None else registry, nc=nc)  # a path: asked only of a bare name
    imgsz = default_imgsz(resolved) if imgsz is None else imgsz
    check_imgsz(imgsz)
    name = f"{resolved.label}-{head or 'default'}-{imgsz}.onnx"
    if out is None:
        out = reg.run_dir(reg.get_run(resolved.run_id), "export") / name if reg is not None else Path(name)
    path = export_onnx(resolved.model, out, imgsz=imgsz, head=head, force=force, registry=registry).resolve()
    if reg is not None:
        reg.add_artifact(resolved.run_id, f"onnx/{head or 'default'}", path, {"imgsz": imgsz})
    return ExportRecord(path, resolved.run_id, imgsz, head)


def train_model(registry: Registry, variant: str, data: str | Path, *, recipe: str | Path | None = None,
                name: str | None = None, weights: str | Path | None = None, act_anneal: str | None = None,
                anneal_epochs: str | None = None, anneal_schedule: str = "linear", verbose: bool = True,
                **overrides: Any) -> RunRecord:
    """Train a variant: the report's recipe, then the recipe file, then `overrides` (None: not given), with an optional
    LeakyReLU -> ReLU slope schedule; returns the run as recorded."""
    r = with_anneal(Recipe.load(recipe, **overrides), act_anneal, anneal_epochs, anneal_schedule)
    return registry.get_run(train_variant(variant, data, r, registry, name=name, weights=weights, verbose=verbose).run_id)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_plot_path(plot: str | Path) -> Path:
    """A forest plot's file: a .png name in an existing folder (or one that can be made), never over a file that is
    not a PNG (a user's notes are not overwritten by a plot)."""
    path = Path(plot)
    if path.suffix.lower() != ".png" or not path.name.strip() or path.name == ".png":
        raise NpuyoloError(f"plot must be a .png file name, got {str(plot)!r}", param="plot")
    if os.path.lexists(path):
        if not path.is_file() or path.is_symlink():
            raise NpuyoloError(f"plot {path} exists and is not a regular file", param="plot")
        with open(path, "rb") as fh:
            if fh.read(8) != PNG_MAGIC:
                raise NpuyoloError(f"plot {path} exists and is not a PNG; name another file", param="plot")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NpuyoloError(f"plot {path}: {parent} is not a folder", param="plot")
    return path


def compare(registry: Registry, models: list[str], data: str | Path, *, bootstrap: int = 1000, seed: int = 0,
            plot: str | Path | None = None, draw: bool = True, progress=None) -> CompareResult:
    """`npuyolo compare`: every model scored on one data set (statistics kept, so a second call runs no model), each
    pair's paired-bootstrap difference and verdict, and a forest plot of the mAP50 differences (to `plot`, else under
    the registry's folder) when there is a pair to draw. A registry opened read-only (or a folder that refuses the
    plot) keeps nothing and draws nothing there: the result's `note` says so, in one line."""
    from npuyolo.report.plots import forest_plot  # matplotlib: loaded by compare only, not by train or export

    if draw and plot is not None:
        check_plot_path(plot)  # before any model is scored: a bad place is one line, not lost work
    result = compare_models(registry, [str(m) for m in models], data, bootstrap=bootstrap, seed=seed, progress=progress)
    pairs = [p for p in result.comparison.pairs if p.metric == "map50"]
    if not draw or not pairs:
        return result
    title = f"mAP50 differences on {result.comparison.images} images ({bootstrap} paired resamples)"
    if plot is not None:
        path = Path(plot)
        make_dir(path.parent)
        forest_plot(pairs, path, title)
        return dataclasses.replace(result, plot=path.resolve())
    why = f"the registry {registry.path} is opened read-only" if registry.readonly else None
    if why is None:  # our own place: a folder that cannot be written loses the plot, never the answer
        key = hashlib.sha1(json.dumps([m.label for m in result.models] + [str(result.data), bootstrap, seed]).encode()).hexdigest()[:10]
        path = safe_join(registry.root, "compare", f"forest-{key}.png")
        try:
            make_dir(path.parent)
            forest_plot(pairs, path, title)
            return dataclasses.replace(result, plot=path.resolve())
        except OSError as e:
            why = str(storage_error(e, path, writing=True) or f"cannot write {path}: {e.strerror or e}")
    said = "no forest plot drawn (give a plot file to draw one)"
    said = f"{result.note}; {said}" if result.note else f"{said}: {why}"
    return dataclasses.replace(result, note=said)
