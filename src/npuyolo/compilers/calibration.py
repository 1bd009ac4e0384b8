"""Calibration images for the vendor compilers: the same letterboxed training images for every toolchain.

Its own module so that each compiler driver (RKNN, Vela, IMX500) and `compile.py`, which dispatches to them, import
it from below: no driver imports the dispatcher.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from npuyolo.compilers.envs import CompilerError
from npuyolo.data.calibration import calibration_images, letterbox
from npuyolo.paths import write_text

__all__ = ["CALIB_IMAGES", "calibration_arrays", "write_calibration"]

CALIB_IMAGES = 8  # placement does not depend on the values; a handful keeps quantization meaningful and fast


def calibration_arrays(data: str | Path | None, imgsz: int, count: int = CALIB_IMAGES) -> tuple[list[np.ndarray], str]:
    """Letterboxed [3, imgsz, imgsz] RGB float32 in [0, 1], and what they are.

    With `data`, training images only (validation images are never candidates). Without it, synthetic sign images
    drawn by npuyolo itself (nothing is fetched): enough for placement, which does not depend on the values.
    """
    if data is not None:
        images = []
        for p in calibration_images(data, count):
            image = cv2.imread(str(p))
            if image is None:
                raise CompilerError(f"calibration image unreadable: {p}")
            images.append(image)
        what = f"{len(images)} training images of {data}"
    else:
        from npuyolo.data.synth import compose

        rng = np.random.default_rng(0)
        images = [compose(imgsz, rng)[0] for _ in range(count)]
        what = f"{count} synthetic images (no data set given; placement does not depend on calibration values)"
    return [letterbox(np.ascontiguousarray(image), imgsz) for image in images], what


def write_calibration(data: str | Path | None, imgsz: int, workdir: Path, count: int = CALIB_IMAGES) -> tuple[Path, str]:
    """PNG files of `calibration_arrays` and a list file naming them (RKNN's dataset format)."""

    arrays, what = calibration_arrays(data, imgsz, count)
    folder = workdir / f"calib-{imgsz}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, chw in enumerate(arrays):
        bgr = (chw.transpose(1, 2, 0) * 255).round().astype(np.uint8)[..., ::-1]
        dst = folder / f"{i:03d}.png"
        cv2.imwrite(str(dst), bgr)
        # "./" + relative to the list file: Ultralytics resolves such lines against the list's folder, and RKNN gets
        # copies beside its own list (rknn.compile_onnx): no absolute path, so no space from a user's folder name
        lines.append(f"./{dst.relative_to(workdir).as_posix()}")
    listing = workdir / f"calib-{imgsz}.txt"
    write_text(listing, "\n".join(lines) + "\n")
    return listing, what
