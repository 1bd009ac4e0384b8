"""A synthetic traffic-sign detection set in YOLO format, drawn from scratch and deterministic per seed.

Signs are drawn the way real ones look (shapes, rims, colours, legends), then warped in perspective,
blurred, dimmed or brightened, partly occluded and pasted onto generated street-like backgrounds.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont

from npuyolo.data.check import DataError
from npuyolo.errors import storage_error
from npuyolo.paths import out_of_space

CLASSES = ["speed_limit", "warning", "stop", "mandatory", "yield", "no_entry"]
RED, WHITE, BLACK, BLUE = (200, 16, 30), (245, 245, 245), (20, 20, 20), (20, 70, 170)
SIGN_PX = 160  # drawing resolution of one sign before it is scaled into the scene
SUPERSAMPLE = 2


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: nothing to download


def _centered_text(draw: ImageDraw.ImageDraw, text: str, centre: tuple[float, float], size: int, fill) -> None:
    font = _font(size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    draw.text((centre[0] - (x1 - x0) / 2 - x0, centre[1] - (y1 - y0) / 2 - y0), text, font=font, fill=fill)


def _polygon(n: int, r: float, c: float, rotation: float) -> list[tuple[float, float]]:
    return [(c + r * np.cos(rotation + 2 * np.pi * k / n), c + r * np.sin(rotation + 2 * np.pi * k / n)) for k in range(n)]


def draw_speed_limit(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    d.ellipse([2, 2, s - 3, s - 3], fill=RED)
    rim = s * 0.11
    d.ellipse([rim, rim, s - rim, s - rim], fill=WHITE)
    _centered_text(d, str(int(rng.choice([20, 30, 40, 50, 60, 70, 80, 90, 100, 120]))), (s / 2, s / 2), int(s * 0.38), BLACK)


def draw_warning(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = s / 2
    d.polygon(_polygon(3, s * 0.5, c, -np.pi / 2), fill=RED)
    d.polygon(_polygon(3, s * 0.34, c, -np.pi / 2), fill=WHITE)
    d.rectangle([c - s * 0.03, c - s * 0.12, c + s * 0.03, c + s * 0.1], fill=BLACK)
    d.ellipse([c - s * 0.035, c + s * 0.13, c + s * 0.035, c + s * 0.2], fill=BLACK)


def draw_stop(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = s / 2
    d.polygon(_polygon(8, s * 0.5, c, np.pi / 8), fill=WHITE)
    d.polygon(_polygon(8, s * 0.46, c, np.pi / 8), fill=RED)
    _centered_text(d, "STOP", (c, c), int(s * 0.26), WHITE)


def draw_mandatory(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = s / 2
    d.ellipse([2, 2, s - 3, s - 3], fill=BLUE)
    angle = rng.choice([0, 90, 180, 270, 45])
    arrow = Image.new("L", (s, s), 0)
    a = ImageDraw.Draw(arrow)
    a.rectangle([c - s * 0.07, c - s * 0.05, c + s * 0.07, c + s * 0.3], fill=255)
    a.polygon([(c - s * 0.2, c - s * 0.02), (c + s * 0.2, c - s * 0.02), (c, c - s * 0.3)], fill=255)
    arrow = arrow.rotate(float(angle), center=(c, c))
    d._image.paste(WHITE, (0, 0), arrow)  # noqa: SLF001 (ImageDraw keeps its image)


def draw_yield(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = s / 2
    d.polygon(_polygon(3, s * 0.5, c, np.pi / 2), fill=RED)
    d.polygon(_polygon(3, s * 0.32, c, np.pi / 2), fill=WHITE)


def draw_no_entry(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    d.ellipse([2, 2, s - 3, s - 3], fill=RED)
    d.rectangle([s * 0.18, s * 0.42, s * 0.82, s * 0.58], fill=WHITE)


DRAWERS: list[Callable[[ImageDraw.ImageDraw, int, np.random.Generator], None]] = [
    draw_speed_limit, draw_warning, draw_stop, draw_mandatory, draw_yield, draw_no_entry,
]


def render_sign(cls: int, rng: np.random.Generator) -> np.ndarray:
    """One sign as an RGBA array [SIGN_PX, SIGN_PX, 4], anti-aliased by supersampling."""
    s = SIGN_PX * SUPERSAMPLE
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    DRAWERS[cls](ImageDraw.Draw(img), s, rng)
    return np.asarray(img.resize((SIGN_PX, SIGN_PX), Image.LANCZOS))


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A street-like scene: sky and ground gradients, buildings, road markings, foliage blobs, sensor noise."""
    horizon = int(h * rng.uniform(0.3, 0.7))
    sky = np.array(rng.choice([[200, 170, 120], [230, 210, 190], [150, 150, 150], [90, 60, 40]]), np.float32)
    ground = np.array(rng.choice([[90, 90, 90], [60, 70, 60], [110, 105, 100]]), np.float32)
    ramp = np.linspace(0.8, 1.15, h, dtype=np.float32)[:, None, None]
    img = np.where(np.arange(h)[:, None, None] < horizon, sky, ground) * ramp * np.ones((1, w, 1), np.float32)
    for _ in range(int(rng.integers(2, 8))):  # buildings, cars, walls
        x0, bw = int(rng.integers(0, w)), int(rng.integers(w // 12, w // 3))
        y1 = horizon + int(rng.integers(0, max(1, h - horizon)))
        y0 = max(0, y1 - int(rng.integers(h // 8, h // 2)))
        img[y0:y1, x0:x0 + bw] = rng.uniform(30, 220, 3)
    for _ in range(int(rng.integers(0, 6))):  # foliage and clutter, including red and blue distractors
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(3, w // 6)), int(rng.integers(3, h // 6)))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(20, 230, 3).tolist(), -1)
    for _ in range(int(rng.integers(0, 3))):  # lane markings
        y = int(rng.integers(horizon, h))
        cv2.line(img, (0, y), (w, int(y + rng.integers(-h // 4, h // 4))), (230, 230, 230), int(rng.integers(1, 4)))
    img += rng.normal(0, rng.uniform(2, 10), img.shape).astype(np.float32)
    return img


def _warp(sign: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Scale to `size` px and apply a random perspective (up to ~18% corner jitter)."""
    src = np.float32([[0, 0], [SIGN_PX, 0], [SIGN_PX, SIGN_PX], [0, SIGN_PX]])
    jitter = rng.uniform(-0.18, 0.18, (4, 2)) * size
    pad = int(np.ceil(0.2 * size))
    dst = (np.float32([[0, 0], [size, 0], [size, size], [0, size]]) + jitter + pad).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(sign, m, (size + 2 * pad, size + 2 * pad), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def compose(imgsz: int, rng: np.random.Generator, max_signs: int = 4) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One scene (uint8 BGR) and its YOLO labels (class, cx, cy, w, h normalised)."""
    h = w = imgsz
    img = background(h, w, rng)
    labels, boxes = [], []
    for _ in range(int(rng.integers(0, max_signs + 1))):
        cls = int(rng.integers(0, len(CLASSES)))
        size = int(rng.uniform(0.08, 0.4) * imgsz)
        sign = _warp(render_sign(cls, rng), size, rng).astype(np.float32)
        sign[..., :3] *= rng.uniform(0.55, 1.3)  # lighting
        sigma = rng.uniform(0, 1.6)
        if sigma > 0.3:
            sign = cv2.GaussianBlur(sign, (0, 0), sigma)
        alpha = sign[..., 3:] / 255.0
        ys, xs = np.nonzero(alpha[..., 0] > 0.5)
        if len(xs) == 0:
            continue
        sh, sw = alpha.shape[:2]
        x0, y0 = int(rng.integers(-sw // 5, w - sw * 4 // 5)), int(rng.integers(-sh // 5, h - sh * 4 // 5))
        box = (max(0, x0 + xs.min()), max(0, y0 + ys.min()), min(w, x0 + xs.max() + 1), min(h, y0 + ys.max() + 1))
        if box[2] - box[0] < 4 or box[3] - box[1] < 4 or any(_iou(box, b) > 0.05 for b in boxes):
            continue
        if rng.random() < 0.5:  # a pole under the sign, drawn first so the sign covers it
            px = x0 + sw // 2
            cv2.rectangle(img, (px - max(1, size // 20), y0 + sh // 2), (px + max(1, size // 20), h), (110, 110, 115), -1)
        # paste with alpha, clipped to the image
        ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x0 + sw), min(h, y0 + sh)
        crop = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        a = alpha[crop]
        img[iy0:iy1, ix0:ix1] = img[iy0:iy1, ix0:ix1] * (1 - a) + sign[crop][..., :3][..., ::-1] * a
        if rng.random() < 0.3:  # partial occlusion: a branch, a car roof, another pole (<= ~35% of the box)
            bw, bh = box[2] - box[0], box[3] - box[1]
            ow, oh = int(bw * rng.uniform(0.2, 0.6)), int(bh * rng.uniform(0.2, 0.6))
            ox = box[0] + (0 if rng.random() < 0.5 else bw - ow)
            oy = box[1] + int(rng.integers(0, max(1, bh - oh)))
            cv2.rectangle(img, (ox, oy), (ox + ow, oy + oh), rng.uniform(20, 120, 3).tolist(), -1)
        boxes.append(box)
        labels.append((cls, (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h, (box[2] - box[0]) / w, (box[3] - box[1]) / h))
    img = img * rng.uniform(0.7, 1.2)  # exposure
    return np.clip(img, 0, 255).astype(np.uint8), labels


MARKER = ".npuyolo-synth"  # in every folder `synthesize` writes: only such folders may be written into again


def check_synth_args(out: str | Path, imgsz: int, seed: int, force: bool = False) -> Path:
    """The output folder, created, marked as npuyolo's and empty; refuses sizes too small to draw signs in, negative
    seeds, a file in the way, a non-empty folder npuyolo did not write (its data.yaml, images and labels would be
    replaced), and a non-empty folder it did write unless `force` (then it is emptied first): writing over a set leaves
    old images beside new ones, and runs trained on it would silently point at changed data."""

    out = Path(out)
    if imgsz < 32:
        raise DataError([f"imgsz must be at least 32 px to draw signs, got {imgsz}"], param="imgsz")
    if seed < 0:
        raise DataError([f"seed must be 0 or more, got {seed}"], param="seed")
    if out.exists() and not out.is_dir():
        raise DataError([f"{out} is a file; name a folder to write the data set into"])
    try:
        held = [p for p in out.iterdir() if p.name != MARKER] if out.is_dir() else []
        if held and not (out / MARKER).is_file():
            raise DataError([f"{out} already holds files npuyolo did not write; give a new or empty folder"])
        if held and not force:
            raise DataError([f"{out} is not empty (a data set npuyolo wrote earlier); give a new or empty folder, or "
                             "`force` to empty it and write the set anew"])
        for p in held:  # forced, in a folder npuyolo marked as its own: links are removed, never followed
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).touch()
    except OSError as e:
        raise (storage_error(e, out, writing=True) or DataError([f"{out}: cannot create the folder ({e.strerror or e})"])) from None
    return out


def synthesize(out: str | Path, n_train: int = 400, n_val: int = 100, imgsz: int = 320, seed: int = 0,
               progress: Callable[[int], None] | None = None, force: bool = False) -> Path:
    """Write images/, labels/ (one file per image, empty for background) and data.yaml into a new or empty folder (a set
    npuyolo wrote there before is emptied first only with `force`); returns the yaml path."""
    out = check_synth_args(out, imgsz, seed, force)
    try:
        return _write_set(out, n_train, n_val, imgsz, seed, progress)
    except OSError as e:  # a full disk or read-only folder: one line naming the folder
        raise (storage_error(e, out, writing=True) or e) from None


def _write_set(out: Path, n_train: int, n_val: int, imgsz: int, seed: int, progress: Callable[[int], None] | None) -> Path:
    for split, n, split_id in (("train", n_train, 0), ("val", n_val, 1)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, split_id, i])
            img, labels = compose(imgsz, rng)
            stem = f"{split}_{i:05d}"
            image = out / "images" / split / f"{stem}.jpg"
            if not cv2.imwrite(str(image), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):  # OpenCV says False, it raises nothing
                raise OSError(errno.ENOSPC if out_of_space(out) else errno.EIO, "image not written", str(image))
            (out / "labels" / split / f"{stem}.txt").write_text(
                "".join(f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in labels))
            if progress:
                progress(1)
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({  # no `path:`: the set works wherever it is moved or copied
        "train": "images/train",
        "val": "images/val",
        "nc": len(CLASSES),
        "names": dict(enumerate(CLASSES)),
        "synthetic": {"generator": "npuyolo.data.synth", "seed": seed, "imgsz": imgsz},
    }, sort_keys=False))
    return data_yaml
