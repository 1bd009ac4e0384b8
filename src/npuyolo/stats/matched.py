"""Per-image matched statistics of one validation: what any later comparison needs, without running the model again.

Ultralytics' validator reduces every image to the same five arrays (`DetectionValidator.update_metrics`): a
true-positive matrix over the 10 IoU thresholds 0.50:0.95, confidence and class of each kept prediction, and the
classes of the image's labels. Kept per image (with the image's name), they let mAP, P and R be recomputed for any
resample of the images — a paired bootstrap, a seed study — in milliseconds, and to the digit Ultralytics gives.

Stored as a compressed `.npz` holding numbers and strings only (loaded with `allow_pickle=False`: never unpickled).
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npuyolo.errors import NpuyoloError
from npuyolo.paths import atomic_path

__all__ = ["FORMAT", "MatchedStats", "StatsError", "load_stats", "save_stats"]

FORMAT = 1
MAX_STATS_BYTES = 256 << 20  # a stats file of 175 images at 320 px is ~0.1 MB; anything this size is not ours
MAX_UNPACKED_BYTES = 512 << 20  # what its arrays may unpack to (a small file can inflate to gigabytes)


class StatsError(NpuyoloError, ValueError):
    """Statistics that cannot be used: damaged, of other images or classes, or missing."""


@dataclass(frozen=True)
class MatchedStats:
    """One validation, image by image. `pred_img`/`target_img` index `images`; predictions keep the validator's order.

    `pipeline` names how the images were prepared (`letterbox`: square, as deploy eval and compare score every
    artefact; `rect`: the trainer's rectangular batches), so two files from different pipelines are never mixed.
    """

    images: tuple[str, ...]
    names: dict[int, str]
    tp: np.ndarray  # [N, 10] bool
    conf: np.ndarray  # [N] float32
    pred_cls: np.ndarray  # [N] int
    pred_img: np.ndarray  # [N] int
    target_cls: np.ndarray  # [M] int
    target_img: np.ndarray  # [M] int
    pipeline: str = "letterbox"
    meta: dict = field(default_factory=dict)  # imgsz, conf, iou, data, artefact: what the figures were measured with

    @classmethod
    def from_validator(cls, per_image: dict[str, list], image_files: list[str], names: dict[int, str],
                       pipeline: str, meta: dict | None = None) -> MatchedStats:
        """From `metrics.stats` of an Ultralytics validator (one list entry per image, in the loader's order)."""
        n = len(per_image["tp"])
        if len(image_files) != n:
            raise StatsError(f"validator kept {n} images' statistics for {len(image_files)} image files")
        root = os.path.commonpath([str(Path(f).parent) for f in image_files]) if image_files else ""
        images = tuple(os.path.relpath(f, root) if root else str(f) for f in image_files)
        counts = [len(c) for c in per_image["conf"]]
        tcounts = [len(c) for c in per_image["target_cls"]]

        def cat(key: str, dtype, width: int | None = None) -> np.ndarray:
            parts = [np.asarray(a, dtype=dtype).reshape((-1, width) if width else -1) for a in per_image[key]]
            return np.concatenate(parts) if parts else np.zeros((0, width) if width else 0, dtype)

        return cls(images=images, names={int(k): str(v) for k, v in names.items()},
                   tp=cat("tp", bool, 10), conf=cat("conf", np.float32), pred_cls=cat("pred_cls", np.int64),
                   pred_img=np.repeat(np.arange(n), counts), target_cls=cat("target_cls", np.int64),
                   target_img=np.repeat(np.arange(n), tcounts), pipeline=pipeline, meta=dict(meta or {}))

    def __post_init__(self):
        n, m = len(self.conf), len(self.target_cls)
        classes = np.array(sorted(self.names), dtype=np.int64)
        ok = (self.tp.shape == (n, 10) and self.pred_cls.shape == (n,) and self.pred_img.shape == (n,)
              and self.target_img.shape == (m,) and len(set(self.images)) == len(self.images)
              and (n == 0 or 0 <= int(self.pred_img.min()) and int(self.pred_img.max()) < len(self.images))
              and (m == 0 or 0 <= int(self.target_img.min()) and int(self.target_img.max()) < len(self.images))
              and bool(np.isfinite(self.conf).all()) and (n == 0 or 0 <= float(self.conf.min()) and float(self.conf.max()) <= 1)
              and bool(np.isin(self.pred_cls, classes).all()) and bool(np.isin(self.target_cls, classes).all()))
        if not ok:
            raise StatsError("damaged matched statistics (arrays of unequal length, image indices out of range, "
                             "repeated image names, confidences outside 0..1 or classes the model does not name)")

    @property
    def n_images(self) -> int:
        return len(self.images)

    def reordered(self, images: tuple[str, ...]) -> MatchedStats:
        """The same statistics indexed by another ordering of the same images (so resamples line up between models)."""
        if images == self.images:
            return self
        where = {name: i for i, name in enumerate(images)}
        remap = np.array([where[name] for name in self.images], dtype=np.int64)
        return MatchedStats(images, self.names, self.tp, self.conf, self.pred_cls, remap[self.pred_img],
                            self.target_cls, remap[self.target_img], self.pipeline, self.meta)


def save_stats(stats: MatchedStats, path: str | Path) -> Path:
    """Compressed, written under a temporary name then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "names": {str(k): v for k, v in stats.names.items()}, "pipeline": stats.pipeline,
              "meta": stats.meta}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file handle: np.savez would append .npz to the temporary name
            np.savez_compressed(fh, header=np.array(json.dumps(header, default=str)), images=np.array(stats.images, dtype=str),
                                tp=np.packbits(stats.tp, axis=1), conf=stats.conf.astype(np.float32),
                                pred_cls=stats.pred_cls.astype(np.int32), pred_img=stats.pred_img.astype(np.int32),
                                target_cls=stats.target_cls.astype(np.int32), target_img=stats.target_img.astype(np.int32))
    return path


def load_stats(path: str | Path) -> MatchedStats:
    """A stats file written by `save_stats`; anything else (or a damaged one) is one StatsError line."""
    path = Path(path)
    try:
        st = os.lstat(path)  # a link or a FIFO is never read: statistics are files npuyolo wrote
        if not stat.S_ISREG(st.st_mode):
            raise StatsError(f"{path}: not a regular file")
        if st.st_size > MAX_STATS_BYTES:
            raise StatsError(f"{path}: too large to be a statistics file")
        with np.load(path, allow_pickle=False) as z:
            if sum(info.file_size for info in z.zip.infolist()) > MAX_UNPACKED_BYTES:
                raise StatsError(f"{path}: its arrays unpack to more than {MAX_UNPACKED_BYTES >> 20} MB")
            header = json.loads(str(z["header"]))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise StatsError(f"{path}: not an npuyolo statistics file of format {FORMAT}")
            n = len(z["conf"])
            tp = np.unpackbits(z["tp"], axis=1, count=10).astype(bool) if n else np.zeros((0, 10), bool)
            return MatchedStats(images=tuple(str(s) for s in z["images"]),
                                names={int(k): str(v) for k, v in header["names"].items()},
                                tp=tp, conf=z["conf"].astype(np.float32), pred_cls=z["pred_cls"].astype(np.int64),
                                pred_img=z["pred_img"].astype(np.int64), target_cls=z["target_cls"].astype(np.int64),
                                target_img=z["target_img"].astype(np.int64), pipeline=str(header.get("pipeline")),
                                meta=header.get("meta") if isinstance(header.get("meta"), dict) else {})
    except StatsError:
        raise
    except FileNotFoundError:
        raise StatsError(f"{path}: no statistics file") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, RecursionError, zipfile.BadZipFile) as e:
        raise StatsError(f"{path}: damaged statistics file ({type(e).__name__})") from None
