"""mAP50, mAP50-95, P and R from matched statistics, for the whole set or any resample of its images.

`detection_metrics(stats)` gives what Ultralytics' `ap_per_class` gives on the same arrays (same sorting, the same
101-point COCO interpolation, P and R at the maximum of the smoothed mean-F1 curve). A resample is a vector of image
counts (an image drawn twice counts twice): each prediction and label is repeated as often as its image was drawn,
which is exactly the validation of the resampled set, computed without running a model.

`paired_bootstrap` draws one set of resamples and scores every model on each of them, so the difference of two
models on a resample is paired: the images' difficulty cancels and only the models' difference is left.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npuyolo.paths import atomic_path
from npuyolo.stats.matched import MatchedStats, StatsError

__all__ = ["BOOTSTRAP_FORMAT", "METRICS", "Prepared", "common_images", "detection_metrics", "image_resamples", "map50",
           "map50_samples", "paired_bootstrap", "prepare", "stats_digest"]

METRICS = ("map50", "map50_95", "precision", "recall")
EPS = 1e-16  # Ultralytics' eps in ap_per_class
AP_X = np.linspace(0, 1, 101)  # COCO's 101 recall points
PR_X = np.linspace(0, 1, 1000)  # Ultralytics' confidence grid for the P/R/F1 curves


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    fn = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed it
    return fn(y, x, axis=-1)


def _smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Ultralytics' box filter (utils.metrics.smooth), for the mean-F1 curve whose maximum picks P and R."""
    nf = round(len(y) * f * 2) // 2 + 1
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


@dataclass(frozen=True)
class Prepared:
    """One model's statistics sorted once by confidence (as ap_per_class sorts) and split by predicted class."""

    stats: MatchedStats
    rows: dict[int, np.ndarray]  # class -> indices into the sorted arrays, in descending confidence
    tp: np.ndarray  # sorted, transposed [10, N] uint8
    conf: np.ndarray  # sorted [N]
    img: np.ndarray  # sorted [N] image index of each prediction
    classes: np.ndarray  # every class that has a label in the full set, ascending
    any_tp: np.ndarray  # sorted [N] bool: correct at some IoU threshold


def prepare(stats: MatchedStats) -> Prepared:
    order = np.argsort(-stats.conf)  # the same call on the same array as ap_per_class: ties fall the same way
    cls = stats.pred_cls[order]
    classes = np.unique(stats.target_cls)
    tp = np.ascontiguousarray(stats.tp[order].T, dtype=np.uint8)
    return Prepared(stats, {int(c): np.flatnonzero(cls == c) for c in classes}, tp,
                    stats.conf[order].astype(np.float64), stats.pred_img[order], classes, tp.any(axis=0))


def _ap(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """compute_ap for the 10 IoU thresholds at once: [10, n] curves -> [10] AP (rows kept contiguous: it is faster)."""
    k = recall.shape[0]
    mrec = np.concatenate((np.zeros((k, 1)), recall, recall[:, -1:], np.ones((k, 1))), axis=1)
    mpre = np.concatenate((np.ones((k, 1)), precision, np.zeros((k, 2))), axis=1)
    mpre = np.maximum.accumulate(mpre[:, ::-1].T, axis=0).T[:, ::-1]  # the envelope; this layout is ~2x faster
    y = np.stack([np.interp(AP_X, mrec[j], mpre[j]) for j in range(k)])
    return _trapezoid(y, AP_X)


def _labelled(p: Prepared, weights: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
    """Labels per class in the (resampled) set, and its labelled classes ascending, as np.unique finds them."""
    s, size = p.stats, int(p.classes.max(initial=-1)) + 1
    labels = np.bincount(s.target_cls, minlength=size) if weights is None else \
        np.bincount(s.target_cls, weights=weights[s.target_img], minlength=size)
    return labels, [int(c) for c in p.classes if labels[c] > 0]


def _class_rows(p: Prepared, c: int, weights: np.ndarray | None) -> np.ndarray:
    """Class c's predictions in descending confidence, each repeated as often as its image was drawn."""
    rows = p.rows[c]
    return rows if weights is None else np.repeat(rows, weights[p.img[rows]].astype(np.int64))


def detection_metrics(p: Prepared | MatchedStats, weights: np.ndarray | None = None) -> np.ndarray:
    """[mAP50, mAP50-95, P, R] of the set, or of the resample that draws image i `weights[i]` times."""
    if isinstance(p, MatchedStats):
        p = prepare(p)
    labels, classes = _labelled(p, weights)
    nc = len(classes)
    if nc == 0:
        return np.zeros(4)
    ap = np.zeros((nc, 10))
    p_curve, r_curve = np.zeros((nc, PR_X.size)), np.zeros((nc, PR_X.size))
    for ci, c in enumerate(classes):
        rows = _class_rows(p, c, weights)
        if rows.size == 0:
            continue
        rank = np.arange(1, rows.size + 1, dtype=np.float64)  # tp + fp counts = rank, exactly
        tp50 = np.cumsum(p.tp[0, rows], dtype=np.int32).astype(np.float64)  # int32 sums are 30x faster than float ones
        conf = -p.conf[rows]
        r_curve[ci] = np.interp(-PR_X, conf, tp50 / (labels[c] + EPS), left=0)
        p_curve[ci] = np.interp(-PR_X, conf, tp50 / rank, left=1)
        # AP ends at the last prediction that is right at some IoU: the false ones after it keep the last recall with
        # lower precision, so they never raise the envelope nor bound an interpolation segment (exactly the same AP)
        hits = np.flatnonzero(p.any_tp[rows])
        if hits.size == 0:
            continue  # nothing right at any threshold: AP 0, as compute_ap gives
        end = hits[-1] + 1
        tpc = np.cumsum(p.tp[:, rows[:end]], axis=1, dtype=np.int32).astype(np.float64)  # [10, end]
        ap[ci] = _ap(tpc / (labels[c] + EPS), tpc / rank[:end])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + EPS)
    i = _smooth(f1.mean(0), 0.1).argmax()
    return np.array([ap[:, 0].mean(), ap.mean(), p_curve[:, i].mean(), r_curve[:, i].mean()])


def map50(p: Prepared, weights: np.ndarray | None = None) -> float:
    """mAP50 alone (IoU 0.5, no P/R curves): what a deployment plan's accuracy guard needs, ~5x cheaper."""
    labels, classes = _labelled(p, weights)
    if not classes:
        return 0.0
    ap = np.zeros(len(classes))
    for ci, c in enumerate(classes):
        rows = _class_rows(p, c, weights)
        hits = np.flatnonzero(p.tp[0, rows])
        if hits.size == 0:
            continue
        rows = rows[:hits[-1] + 1]  # false predictions after the last right one change no AP (detection_metrics)
        tpc = np.cumsum(p.tp[0, rows], dtype=np.int32).astype(np.float64)
        ap[ci] = _ap((tpc / (labels[c] + EPS))[None], (tpc / np.arange(1, rows.size + 1, dtype=np.float64))[None])[0]
    return float(ap.mean())


def map50_samples(stats: MatchedStats, n: int = 1000, seed: int = 0) -> tuple[float, np.ndarray]:
    """(mAP50 of the set, [n] mAP50 of each resample), the resamples drawn over the images in sorted-name order: two
    models scored on the same images get the same resamples, so the difference of their samples is paired."""
    p = prepare(stats.reordered(tuple(sorted(stats.images))))
    return map50(p), np.array([map50(p, w) for w in image_resamples(len(stats.images), n, seed)])


def common_images(stats: list[MatchedStats], labels: list[str]) -> tuple[str, ...]:
    """The one image order every model is resampled in; models scored on other images or classes are refused."""
    first = stats[0]
    for s, label in zip(stats[1:], labels[1:]):
        if set(s.images) != set(first.images):
            only_a, only_b = len(set(first.images) - set(s.images)), len(set(s.images) - set(first.images))
            raise StatsError(f"{labels[0]} and {label} were not scored on the same images ({only_a} only in the first, "
                             f"{only_b} only in the second); compare them on one data set")
        if s.names != first.names:
            raise StatsError(f"{labels[0]} and {label} predict different classes; compare models of one data set")
        if s.pipeline != first.pipeline:
            raise StatsError(f"{labels[0]} ({first.pipeline}) and {label} ({s.pipeline}) were scored through different "
                             "image pipelines")
        if _targets(s) != _targets(first):
            raise StatsError(f"{labels[0]} and {label} were scored against different labels of the same images "
                             "(the data set changed between them); score both on one version of it")
    return tuple(sorted(first.images))


def _targets(s: MatchedStats) -> list[tuple]:
    """Each image's labelled classes, by image name: what two models compared on one data set must share."""
    per: dict[str, list[int]] = {name: [] for name in s.images}
    for img, cls in zip(s.target_img.tolist(), s.target_cls.tolist()):
        per[s.images[img]].append(cls)
    return sorted((name, tuple(sorted(v))) for name, v in per.items())  # one canonical order: every tool draws the same resamples of the same images


def image_resamples(n_images: int, n: int, seed: int) -> np.ndarray:
    """[n, n_images] counts: how often each image is drawn in each resample (with replacement, n_images draws)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n, n_images))
    return np.stack([np.bincount(d, minlength=n_images) for d in draws])


BOOTSTRAP_FORMAT = 1  # part of every kept result's key: raise it when the metrics or the resampling change


def stats_digest(stats: MatchedStats) -> str:
    """The content of one validation's statistics (images, classes, every array), as a hex digest."""
    h = hashlib.sha256(json.dumps([list(stats.images), sorted(stats.names.items()), stats.pipeline]).encode())
    for a in (stats.tp, stats.conf, stats.pred_cls, stats.pred_img, stats.target_cls, stats.target_img):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def paired_bootstrap(stats: list[MatchedStats], labels: list[str], n: int = 1000, seed: int = 0,
                     keep_in: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(point [models, 4], resampled [n, models, 4]): every model scored on the same n resamples of the images.

    `keep_in`: a folder where the result is kept under a key of the statistics' content, n and seed, and read back by
    the next call with the same (a report rendered in two languages and two formats draws its resamples once).
    A kept file that cannot be read is computed again; a folder that cannot be written keeps nothing."""
    images = common_images(stats, labels)
    kept = None
    if keep_in is not None:
        key = hashlib.sha256(json.dumps([BOOTSTRAP_FORMAT, [stats_digest(s) for s in stats], n, seed]).encode())
        kept = Path(keep_in) / f"{key.hexdigest()[:32]}.npz"
        try:
            with np.load(kept, allow_pickle=False) as z:
                point, boot = z["point"], z["boot"]
            if point.shape == (len(stats), 4) and boot.shape == (n, len(stats), 4):
                return point, boot
        except (OSError, ValueError, KeyError):  # not kept yet, or damaged: computed again
            pass
    prepared = [prepare(s.reordered(images)) for s in stats]
    point = np.stack([detection_metrics(p) for p in prepared])
    weights = image_resamples(len(images), n, seed)
    boot = np.stack([[detection_metrics(p, w) for p in prepared] for w in weights]) if n else np.zeros((0, len(stats), 4))
    if kept is not None:
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(kept) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, point=point, boot=boot)
        except OSError:  # a read-only registry folder: nothing kept, the answer stands
            pass
    return point, boot
