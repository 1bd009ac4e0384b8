"""Data sets: a synthetic traffic-sign set, and the check of any YOLO data set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from npuyolo.services.options import SynthOptions

__all__ = ["check", "synth"]


def synth(out: str | Path, options: SynthOptions | None = None, *,
          on_start: Callable[[int], None] | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """A synthetic traffic-sign set (6 classes) in YOLO format with its data.yaml, in a new or empty folder.
    `on_start(total)` is told how many images will be drawn (after the arguments were checked), `progress(n)` as
    they are."""
    from npuyolo.data.check import DataError
    from npuyolo.data.synth import CLASSES, check_synth_args, synthesize

    o = options or SynthOptions()
    if o.train < 1 or o.val < 1:
        raise DataError(["`train` and `val` must be at least 1"])
    check_synth_args(out, o.imgsz, o.seed, o.force)
    if on_start is not None:
        on_start(o.train + o.val)
    path = synthesize(out, o.train, o.val, o.imgsz, o.seed, progress=progress, force=o.force)
    return {"data": str(Path(path).resolve()), "train": o.train, "val": o.val, "classes": list(CLASSES)}


def check(data: str | Path) -> dict:
    """A data set validated: per-split image and per-class instance counts, its content hash, warnings."""
    from npuyolo.data.check import check_dataset

    return check_dataset(data).as_dict()
