"""Predict on images, folders, globs and videos with any npuyolo model: a run, a .pt, or an ONNX artefact.

Every model goes through the same pipeline: npuyolo's letterbox (square, grey 114, centred; sized as Ultralytics'
training and validation loader, so the pixels `deploy eval` scores and `deploy bundle`'s runner gives), one forward pass
giving Ultralytics' Detect output ([1, 4 + nc, anchors]; for an NPU-head ONNX file the host decode rebuilds it),
Ultralytics' NMS, and boxes mapped back to the original image. So an FP32 export predicts the boxes its .pt does.

`predict_source` is the computation (detections per image or video frame); `run_predict` adds the outputs:
annotated images / videos, `predictions.json` and `predictions.csv`, each written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

import npuyolo.ultra  # noqa: F401  (Ultralytics only behind npuyolo's offline guards)
from npuyolo.data.calibration import letterbox, letterbox_size
from npuyolo.data.check import IMAGE_SUFFIXES
from npuyolo.deploy.decode import nms
from npuyolo.errors import NpuyoloError, storage_error
from npuyolo.paths import default_registry_path, file_problem, slug, write_bytes, write_text
from npuyolo.resolve import ModelRef, default_imgsz, resolve_model

__all__ = ["Box", "ImageDetections", "PredictError", "PredictResult", "Predictor", "detect", "list_sources", "load_predictor",
           "predict_source", "run_predict", "stdout_to_stderr"]

from npuyolo.deploy.eval.evaluate import onnx_predictor, torch_predictor
from npuyolo.registry.db import Registry, RegistryError
from npuyolo.ultra import stdout_to_stderr  # noqa: E402  (re-exported: predict's callers import it from here)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}
GLOB_CHARS = set("*?[")
CSV_FIELDS = ["source", "frame", "width", "height", "x1", "y1", "x2", "y2", "conf", "cls", "name"]


class PredictError(NpuyoloError, ValueError):
    """A model, source or setting `npuyolo predict` cannot use."""


@dataclass
class Box:
    """One detection in original image pixels (x1, y1, x2, y2), its confidence and class."""

    x1: float
    y1: float
    x2: float
    y2: float
    conf: float
    cls: int
    name: str


@dataclass
class ImageDetections:
    """The detections on one image, or one frame (`frame`, from 0) of a video."""

    source: str
    frame: int | None
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)


@dataclass
class Predictor:
    """A model ready to predict: `forward([B, 3, S, S] in [0, 1]) -> [B, 4 + nc, anchors]` at input size `imgsz`."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    imgsz: int
    names: dict[int, str]
    label: str  # safe as a file-name part
    kind: str  # "onnx" or "pt"
    path: str | None = None  # the .onnx / .pt file
    run_id: int | None = None
    head: str | None = None  # the ONNX head (npu or ultralytics)
    default_out: Callable[[], Path] | None = None  # a run's own predict/ folder (made when called)


@dataclass
class PredictResult:
    model: str
    kind: str
    imgsz: int
    conf: float
    iou: float
    out: Path
    detections: list[ImageDetections]
    annotated: list[Path]
    json_path: Path
    csv_path: Path
    run_id: int | None = None
    model_path: str | None = None

    @property
    def per_class(self) -> dict[str, int]:
        counts = Counter(b.name for d in self.detections for b in d.boxes)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def as_dict(self) -> dict:
        return {"model": self.model, "model_path": self.model_path, "kind": self.kind, "run_id": self.run_id, "imgsz": self.imgsz,
                "conf": self.conf, "iou": self.iou, "out": str(self.out), "files": {"json": str(self.json_path), "csv": str(self.csv_path),
                                                 "annotated": [str(p) for p in self.annotated]},
                "images": len(self.detections), "detections": sum(len(d.boxes) for d in self.detections),
                "per_class": self.per_class, "predictions": [detections_dict(d) for d in self.detections]}


# ------------------------------------------------------------------------------------------------ checks
def check_settings(conf: float, iou: float, max_det: int, imgsz: int | None) -> None:
    if not 0 < conf <= 1:
        raise PredictError(f"conf must be in (0, 1], got {conf}", param="conf")
    if not 0 < iou <= 1:
        raise PredictError(f"iou must be in (0, 1], got {iou}", param="iou")
    if max_det < 1:
        raise PredictError(f"max_det must be at least 1, got {max_det}", param="max_det")
    if imgsz is not None:
        from npuyolo.deploy.export import check_imgsz

        check_imgsz(imgsz, error=PredictError)


# ------------------------------------------------------------------------------------------------ models
def load_predictor(registry: Registry | str | Path | None, ref: str, imgsz: int | None = None) -> Predictor:
    """A run (`7`, `#7` or its name), a .pt checkpoint or an npuyolo ONNX file, ready to predict.

    Input size: an ONNX file's own (fixed; a different `imgsz` is refused), a run's recipe size, else 640.
    """
    ref = str(ref).strip()
    if not ref:
        raise PredictError("MODEL is empty; give a run id or name, a .pt checkpoint or an .onnx file")
    path, kind = Path(ref), ModelRef.parse(ref).kind
    why = file_problem(path, empty_ok=False)
    if kind in ("onnx", "pt") and why not in (None, "not found"):
        raise PredictError(f"{ref} {why}")
    if kind == "onnx":
        if why is not None:
            raise PredictError(f"model not found: {ref}")
        return _onnx_predictor(path, imgsz)
    if kind == "pt":
        if why is not None:
            raise PredictError(f"model not found: {ref}")
        if path.suffix.lower() != ".pt":
            raise PredictError(f"{ref}: expected a .pt checkpoint or an .onnx file")
        resolved = resolve_model(None, str(path))
        return _torch_predictor(resolved.model, imgsz or default_imgsz(resolved), resolved.label, path=str(path))
    return _run_predictor(registry, ref, imgsz)


def _onnx_predictor(path: Path, imgsz: int | None) -> Predictor:

    forward, meta = onnx_predictor(path)  # validates the npuyolo metadata
    size = json.loads(meta["imgsz"])[0]
    if imgsz is not None and imgsz != size:
        raise PredictError(f"{path} has a fixed {size} px input; leave `imgsz` out or set it to {size}"
                           " (export again for another size)")
    names = {int(k): v for k, v in json.loads(meta["names"]).items()}
    return Predictor(forward, size, names, slug(path.stem, "model"), "onnx", path=str(path), head=meta["npuyolo_head"])


def _torch_predictor(model: torch.nn.Module, imgsz: int, label: str, **kw) -> Predictor:

    nc = int(model.model[-1].nc)
    names = {int(k): str(v) for k, v in (getattr(model, "names", None) or {}).items()} or {i: f"class{i}" for i in range(nc)}
    return Predictor(torch_predictor(model), imgsz, names, label, "pt", **kw)


def _run_predictor(registry: Registry | str | Path | None, ref: str, imgsz: int | None) -> Predictor:

    if any(c in ref for c in "/\\"):
        raise PredictError(f"model not found: {ref} (give a run id or name, a .pt checkpoint or an .onnx file)")
    reg, opened = registry, isinstance(registry, Registry)
    try:
        if not opened:
            reg, opened = Registry(registry, readonly=True), True
        run = reg.get_run(ref)
    except RegistryError as e:
        there = Path(registry if registry is not None else default_registry_path()).is_file()
        if not opened and there and ModelRef.parse(ref).kind == "run":
            raise  # a registry that is there but cannot be opened (a full disk, a damaged file) says so itself
        if ModelRef.parse(ref).kind == "variant":
            raise PredictError(f"{ref!r} is a variant name, not a trained model: give a run, a .pt checkpoint"
                               " or an .onnx file") from None
        raise PredictError(f"unknown model {ref!r}: not a file and not a run ({e})") from None
    resolved = resolve_model(reg, str(run.id))
    size = imgsz or default_imgsz(resolved)
    path = run.artifact_path("weights/best", "weights/last")
    return _torch_predictor(resolved.model, size, resolved.label, path=str(path), run_id=run.id,
                            default_out=lambda: reg.run_dir(run, "predict"))


# ------------------------------------------------------------------------------------------------ sources
def list_sources(source: str | Path) -> list[Path]:
    """The image and video files SOURCE names: a file, a folder (its files, sorted), or a glob pattern."""
    text = str(source)
    path = Path(text)
    wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if path.is_file():
        if path.suffix.lower() not in wanted:
            raise PredictError(f"{path}: not an image or video ({', '.join(sorted(wanted))})")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in wanted)
        if not files:
            raise PredictError(f"no images or videos in folder {path} ({', '.join(sorted(wanted))})")
        return files
    if GLOB_CHARS & set(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p for p in files if p.is_file() and p.suffix.lower() in wanted]
        if not files:
            raise PredictError(f"no images or videos matched {text!r}")
        return files
    why = file_problem(path)
    raise PredictError(f"source not found: {text}" if why == "not found" else f"source {text} {why}")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as e:  # e.g. a header declaring more pixels than OpenCV will allocate
        raise PredictError(f"unreadable image: {path} ({' '.join(str(e).split())[-120:]})") from None
    if image is None:
        raise PredictError(f"unreadable image: {path}")
    return image


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[cv2.VideoCapture]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise PredictError(f"unreadable video: {path}")
        yield cap
    finally:
        cap.release()


def video_frames(path: Path) -> Iterator[np.ndarray]:
    with open_video(path) as cap:
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield frame
    if count == 0:
        raise PredictError(f"unreadable video (no frames decoded): {path}")


def frame_count(paths: list[Path]) -> int:
    """Images plus video frames (as the container reports them), for progress bars."""
    total = 0
    for p in paths:
        if is_video(p):
            with open_video(p) as cap:
                total += max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        else:
            total += 1
    return total


# ------------------------------------------------------------------------------------------------ predict
def detect(predictor: Predictor, image: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300) -> list[Box]:
    """Boxes on one BGR image, in its own pixels."""
    from ultralytics.utils.ops import scale_boxes

    h, w = image.shape[:2]
    size = predictor.imgsz
    x = torch.from_numpy(letterbox(image, size, ceil=True))[None]  # the pixels it trained on, as deploy eval scores
    raw = predictor.forward(x)
    det = nms(raw.detach().cpu().float().numpy(), conf=conf, iou=iou, max_det=max_det)[0]
    if not len(det):
        return []
    nh, nw = letterbox_size(h, w, size, ceil=True)  # the letterbox's own geometry, so the mapping back is exact
    ratio_pad = ((nh / h, nw / w), ((size - nw) // 2, (size - nh) // 2))
    xyxy = scale_boxes((size, size), torch.from_numpy(det[:, :4].copy()), (h, w), ratio_pad=ratio_pad).numpy()
    return [Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(d[4]), int(d[5]),
                predictor.names.get(int(d[5]), str(int(d[5])))) for b, d in zip(xyxy, det)]


def iter_frames(paths: list[Path]) -> Iterator[tuple[Path, int | None, np.ndarray]]:
    for p in paths:
        if is_video(p):
            for i, frame in enumerate(video_frames(p)):
                yield p, i, frame
        else:
            yield p, None, read_image(p)


def predict_source(predictor: Predictor, source: str | Path | list[Path], conf: float = 0.25, iou: float = 0.7,
                   max_det: int = 300, on_frame: Callable[[ImageDetections, np.ndarray], None] | None = None) -> list[ImageDetections]:
    """Detections for every image and video frame of `source`; `on_frame(detections, bgr_image)` sees each one."""
    check_settings(conf, iou, max_det, None)
    paths = source if isinstance(source, list) else list_sources(source)
    results = []
    for path, frame, image in iter_frames(paths):
        h, w = image.shape[:2]
        d = ImageDetections(str(path), frame, w, h, detect(predictor, image, conf, iou, max_det))
        results.append(d)
        if on_frame is not None:
            on_frame(d, image)
    return results


# ------------------------------------------------------------------------------------------------ outputs
def annotate(image: np.ndarray, boxes: list[Box], names: dict[int, str]) -> np.ndarray:
    """A copy of `image` with Ultralytics' box labels drawn on it."""
    from ultralytics.utils.plotting import Annotator, colors

    annotator = Annotator(np.ascontiguousarray(image.copy()), example=str(names))
    for b in boxes:
        annotator.box_label([b.x1, b.y1, b.x2, b.y2], f"{b.name} {b.conf:.2f}", color=colors(b.cls, True))
    return np.ascontiguousarray(annotator.result())


def detections_dict(d: ImageDetections) -> dict:
    out = asdict(d)
    out["boxes"] = [{**{k: round(getattr(b, k), 3) for k in ("x1", "y1", "x2", "y2")}, "conf": round(b.conf, 5), "cls": b.cls,
                     "name": b.name} for b in d.boxes]
    return out


def predictions_csv(detections: list[ImageDetections]) -> str:
    """One row per box (images without detections have no row)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for d in detections:
        for b in detections_dict(d)["boxes"]:
            writer.writerow({"source": d.source, "frame": "" if d.frame is None else d.frame, "width": d.width, "height": d.height, **b})
    return buf.getvalue()


class AnnotatedWriter:
    """Writes each annotated image (same name and format) or video (`<stem>.mp4`, mp4v) into `out`, atomically."""

    def __init__(self, out: Path, names: dict[int, str]):
        self.out, self.names = out, names
        self.written: list[Path] = []
        self._taken: set[str] = set()
        self._video: tuple[str, cv2.VideoWriter, Path, Path] | None = None  # source, writer, temp path, final path

    def _claim(self, name: str) -> Path:
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, i = f"{stem}{suffix}", 1
        while candidate.lower() in self._taken:  # two sources with one file name (a recursive glob): keep both
            i += 1
            candidate = f"{stem}-{i}{suffix}"
        self._taken.add(candidate.lower())
        return self.out / candidate

    def __call__(self, d: ImageDetections, image: np.ndarray) -> None:
        drawn = annotate(image, d.boxes, self.names)
        if d.frame is None:
            self.close()
            dst = self._claim(Path(d.source).name)
            ok, buf = cv2.imencode(dst.suffix, drawn)
            if not ok:
                raise PredictError(f"cannot encode {dst.name} as {dst.suffix}")
            self.written.append(write_bytes(dst, buf.tobytes()))
            return
        if self._video is None or self._video[0] != d.source or d.frame == 0:
            self.close()
            dst = self._claim(Path(d.source).stem + ".mp4")
            tmp = dst.with_name(f".{dst.stem}.partial-{os.getpid()}.mp4")  # the writer picks its container by extension
            with open_video(Path(d.source)) as cap:
                fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 30.0, (d.width, d.height))
            if not writer.isOpened():
                tmp.unlink(missing_ok=True)
                raise PredictError(f"cannot write video {dst} (no mp4v encoder in this OpenCV build)")
            self._video = (d.source, writer, tmp, dst)
        self._video[1].write(drawn)

    def close(self) -> None:
        """Finish the open video: it appears under its final name only now, complete."""
        if self._video is not None:
            _, writer, tmp, dst = self._video
            self._video = None
            writer.release()
            os.replace(tmp, dst)
            self.written.append(dst)

    def abort(self) -> None:
        if self._video is not None:
            _, writer, tmp, _ = self._video
            self._video = None
            writer.release()
            tmp.unlink(missing_ok=True)


MARKER = ".npuyolo-predict"  # in every folder predict writes: only such folders may be written into again


def output_dir(out: str | Path | None, predictor: Predictor, sources: list[Path] | None = None) -> Path:
    """The output folder: new, empty, or one an earlier `predict` wrote. Never the sources' own folder, never a
    folder holding other files — annotated copies keep the source names and would replace them."""
    if out is None:
        out = predictor.default_out() if predictor.default_out is not None else Path("predict") / predictor.label
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PredictError(f"out {out} is an existing file; give a folder", param="out")
    resolved = out.resolve()
    if any(resolved == Path(s).resolve().parent for s in sources or []):
        raise PredictError(f"out {out} is where the source images are; annotated copies would replace them", param="out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise PredictError(f"out {out} already holds files npuyolo did not write; give a new or empty folder", param="out")
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).touch()
    except OSError as e:
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise (storage_error(e, out, writing=True) or PredictError(f"cannot create the output folder {out}: {e.strerror or e}")) from None
    return out


def run_predict(registry: Registry | str | Path | None, model: str, source: str | Path, *, conf: float = 0.25,
                iou: float = 0.7, imgsz: int | None = None, out: str | Path | None = None, max_det: int = 300,
                on_start: Callable[[int], None] | None = None, on_frame: Callable[[], None] | None = None) -> PredictResult:
    """Predict, then write annotated images/videos, predictions.json and predictions.csv into the output folder.

    Settings, source and model are checked before the output folder is made; an image or video that cannot be
    decoded stops the run there. `on_start(total_frames)` then `on_frame()` report progress.
    """
    check_settings(conf, iou, max_det, imgsz)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise PredictError(f"out {out} is an existing file; give a folder", param="out")
    paths = list_sources(source)
    predictor = load_predictor(registry, model, imgsz)
    folder = output_dir(out, predictor, paths)
    if on_start is not None:
        on_start(frame_count(paths))
    writer = AnnotatedWriter(folder, predictor.names)

    def each(d: ImageDetections, image: np.ndarray) -> None:
        writer(d, image)
        if on_frame is not None:
            on_frame()

    fresh = [p.name for p in folder.iterdir()] == [MARKER]  # made by this call (or empty): a failure removes it again
    try:
        detections = predict_source(predictor, paths, conf, iou, max_det, on_frame=each)
        writer.close()
        result = PredictResult(predictor.label, predictor.kind if predictor.head is None else f"onnx/{predictor.head}",
                               predictor.imgsz, conf, iou, folder, detections, writer.written,
                               folder / "predictions.json", folder / "predictions.csv", predictor.run_id, predictor.path)
        write_text(result.json_path, json.dumps(result.as_dict(), indent=2) + "\n")
        write_text(result.csv_path, predictions_csv(detections))
    except BaseException:
        writer.abort()
        if fresh:  # no half-filled folder (nor an empty one) is left behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return result


