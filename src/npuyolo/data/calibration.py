"""Which images calibrate INT8 and how they are prepared: the same training images, letterboxed the same way, for
npuyolo's own quantizer and for every vendor compiler. Validation images are never candidates: val is what the
INT8 drop is measured on."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from npuyolo.data.check import IMAGE_SUFFIXES, load_data_yaml, split_images
from npuyolo.errors import NpuyoloError

__all__ = ["CalibrationError", "calibration_images", "holdout_images", "letterbox", "letterbox_size"]


class CalibrationError(NpuyoloError, ValueError):
    """No usable calibration images (a count below one, a data set without training images)."""


def letterbox_size(h: int, w: int, size: int, ceil: bool = False) -> tuple[int, int]:
    """(rows, columns) the image is resized to before the centred padding. By default rounded, as Ultralytics'
    predictor (and the calibration images every compiler has been given). `ceil`: as Ultralytics' training and
    validation loader (BaseDataset.load_image: the long side to size, each side math.ceil(side * r), capped at size),
    the pixels the model trained on and `deploy eval` scores."""
    if ceil:
        r = size / max(h, w)
        return min(math.ceil(h * r), size), min(math.ceil(w * r), size)
    r = min(size / h, size / w)
    return max(1, round(h * r)), max(1, round(w * r))  # a 2x3000 image must not round to 0 rows


def letterbox(image: np.ndarray, size: int, ceil: bool = False) -> np.ndarray:
    """BGR uint8 image -> [3, size, size] float32 RGB in [0, 1], aspect kept, grey (114) padding like Ultralytics;
    `ceil`: sized as its training and validation loader does (`letterbox_size`)."""
    h, w = image.shape[:2]
    nh, nw = letterbox_size(h, w, size, ceil)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    canvas = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def calibration_images(data: str | Path, count: int, seed: int = 0) -> list[Path]:
    """`count` training images drawn deterministically; validation images are never candidates."""
    if count < 1:
        raise CalibrationError("calib must be at least 1 image", param="calib")
    cfg, root, _ = load_data_yaml(data)
    train = [p for p in split_images(root, cfg["train"], Path(data), "train") if p.suffix.lower() in IMAGE_SUFFIXES]
    val = set(split_images(root, cfg["val"], Path(data), "val"))
    train = sorted(p for p in train if p not in val)
    if not train:
        raise CalibrationError(f"{data}: no training images to calibrate on")
    rng = np.random.default_rng(seed)
    return [train[i] for i in sorted(rng.choice(len(train), size=min(count, len(train)), replace=False))]


def holdout_images(data: str | Path, count: int, exclude: list[Path], seed: int = 0) -> list[Path]:
    """`count` training images not used for calibration: what a calibration sweep is judged on (val stays unseen)."""
    cfg, root, _ = load_data_yaml(data)
    val = set(split_images(root, cfg["val"], Path(data), "val"))
    taken = set(exclude)
    pool = sorted(p for p in split_images(root, cfg["train"], Path(data), "train")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p not in val and p not in taken)
    if not pool:
        raise CalibrationError(f"{data}: every training image is used for calibration; lower `calib` to leave some for `sweep`")
    rng = np.random.default_rng(seed + 1)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(count, len(pool)), replace=False))]
