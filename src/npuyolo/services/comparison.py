"""`compare`: is the difference real? Models scored on one data set, each pair with its paired interval."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from npuyolo.errors import NpuyoloError
from npuyolo.services.options import CompareOptions

__all__ = ["PNG_MAGIC", "check_plot_path", "compare"]

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


def compare(registry: Any, models: list[str], data: str | Path, options: CompareOptions | None = None, *,
            progress: Callable[[str], None] | None = None, **fields: Any):
    """Every model scored on one data set (statistics kept, so a second call runs no model), each pair's
    paired-bootstrap difference and verdict, and a forest plot of the mAP50 differences (to `plot`, else under the
    registry's folder) when there is a pair to draw. A registry opened read-only (or a folder that refuses the plot)
    keeps nothing and draws nothing there: the result's `note` says so, in one line. Returns a `CompareResult`.

    `registry`: an open `Registry`, or its file (opened read-only where it cannot be written)."""
    from npuyolo.deploy.eval.compare import compare_models, compare_registry
    from npuyolo.errors import storage_error
    from npuyolo.paths import make_dir, safe_join
    from npuyolo.registry.db import Registry
    from npuyolo.report.plots import forest_plot  # matplotlib: loaded by compare only, not by train or export

    o = CompareOptions.of(options, **fields)
    if o.draw and o.plot is not None:
        check_plot_path(o.plot)  # before any model is scored: a bad place is one line, not lost work
    reg = registry if isinstance(registry, Registry) else compare_registry(registry)
    result = compare_models(reg, [str(m) for m in models], data, bootstrap=o.bootstrap, seed=o.seed, progress=progress)
    pairs = [p for p in result.comparison.pairs if p.metric == "map50"]
    if not o.draw or not pairs:
        return result
    title = f"mAP50 differences on {result.comparison.images} images ({o.bootstrap} paired resamples)"
    if o.plot is not None:
        path = Path(o.plot)
        make_dir(path.parent)
        forest_plot(pairs, path, title)
        return dataclasses.replace(result, plot=path.resolve())
    why = f"the registry {reg.path} is opened read-only" if reg.readonly else None
    if why is None:  # our own place: a folder that cannot be written loses the plot, never the answer
        key = hashlib.sha1(json.dumps([m.label for m in result.models] + [str(result.data), o.bootstrap, o.seed]).encode()).hexdigest()[:10]
        path = safe_join(reg.root, "compare", f"forest-{key}.png")
        try:
            make_dir(path.parent)
            forest_plot(pairs, path, title)
            return dataclasses.replace(result, plot=path.resolve())
        except OSError as e:
            why = str(storage_error(e, path, writing=True) or f"cannot write {path}: {e.strerror or e}")
    said = "no forest plot drawn (give a plot file to draw one)"
    said = f"{result.note}; {said}" if result.note else f"{said}: {why}"
    return dataclasses.replace(result, note=said)
