"""Is the difference real? Intervals for each model, paired intervals and a verdict for each pair, seed replicates.

Method (also in README, "Answers with error bars"):
- Every model is scored on the same resamples of the validation images (a paired percentile bootstrap, 1,000
  resamples by default). A model's interval is the 2.5th-97.5th percentile of its metric over the resamples; a
  pair's is that of the difference A - B on each resample, so the images' difficulty cancels.
- The verdict: "A ahead" or "B ahead" when the 95% interval of the difference excludes 0, else "tied within noise".
- Seed replicates (`seed_gap`): each resample draws the images (shared by every run) and, for each arm, its seeds
  with replacement; the arm's value is the mean over the drawn seeds. The interval of the gap therefore carries both
  the image and the seed variation. With few seeds it is still an estimate of the seed part: 3 seeds cannot show a
  rare bad seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from npuyolo.stats.bootstrap import METRICS, common_images, detection_metrics, image_resamples, paired_bootstrap, prepare
from npuyolo.stats.matched import MatchedStats, StatsError

__all__ = ["Comparison", "Drop", "Estimate", "ModelSummary", "PairDiff", "SeedGap", "Verdict", "compare_stats", "conversion_drop", "seed_gap", "seed_gaps",
           "verdict_of"]

LEVEL = 0.95
MIN_IMAGES = 5  # fewer images cannot be resampled into an interval worth a verdict


class Verdict(str, Enum):
    AHEAD = "ahead"  # the first of the pair is ahead
    TIED = "tied"
    BEHIND = "behind"


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float, samples: np.ndarray, level: float = LEVEL) -> Estimate:
        if samples.size == 0:
            return cls(float(value), float("nan"), float("nan"))
        lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
        return cls(float(value), float(lo), float(hi))

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def pp(self) -> Estimate:
        """In percentage points (differences are printed that way)."""
        return Estimate(self.value * 100, self.low * 100, self.high * 100)


def verdict_of(diff: Estimate) -> Verdict:
    """Ahead or behind only where the interval excludes 0; a zero-width interval (every resample alike) is no evidence."""
    if not diff.high > diff.low:
        return Verdict.TIED
    if diff.low > 0:
        return Verdict.AHEAD
    if diff.high < 0:
        return Verdict.BEHIND
    return Verdict.TIED


@dataclass(frozen=True)
class ModelSummary:
    label: str
    map50: Estimate
    map50_95: Estimate
    precision: Estimate
    recall: Estimate


@dataclass(frozen=True)
class PairDiff:
    """A - B for one metric, its paired interval, and what it means."""

    a: str
    b: str
    metric: str
    diff: Estimate
    verdict: Verdict

    @property
    def text(self) -> str:
        if self.verdict is Verdict.AHEAD:
            return f"{self.a} ahead"
        if self.verdict is Verdict.BEHIND:
            return f"{self.b} ahead"
        return "tied within noise"


@dataclass(frozen=True)
class Comparison:
    models: list[ModelSummary]
    pairs: list[PairDiff]
    images: int
    bootstrap: int
    seed: int
    level: float = LEVEL

    def pair(self, a: str, b: str, metric: str = "map50") -> PairDiff:
        for p in self.pairs:
            if p.metric == metric and (p.a, p.b) == (a, b):
                return p
        raise KeyError((a, b, metric))

    def as_dict(self) -> dict:
        out = asdict(self)
        for p, d in zip(self.pairs, out["pairs"]):
            d["verdict"], d["text"] = p.verdict.value, p.text
        return out


def compare_stats(stats: list[MatchedStats], labels: list[str], n: int = 1000, seed: int = 0,
                  metrics: tuple[str, ...] = METRICS, keep_in: Path | None = None) -> Comparison:
    """Every model's metrics with intervals, and every pair's paired difference with a verdict. `keep_in`: where the
    resampled figures are kept for the next identical call (`paired_bootstrap`)."""
    if len(stats) < 1 or len(stats) != len(labels):
        raise StatsError("compare needs one label per model")
    if len(set(labels)) != len(labels):
        raise StatsError(f"two models carry the same label ({labels}); name them apart")
    if stats[0].n_images < MIN_IMAGES:
        raise StatsError(f"{stats[0].n_images} val image(s) are too few for an interval (at least {MIN_IMAGES}); "
                         "compare on a larger val split")
    point, boot = paired_bootstrap(stats, labels, n=n, seed=seed, keep_in=keep_in)
    models = [ModelSummary(label, *(Estimate.of(point[i, k], boot[:, i, k]) for k in range(4)))
              for i, label in enumerate(labels)]
    pairs = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            for k, metric in enumerate(METRICS):
                if metric not in metrics:
                    continue
                diff = Estimate.of(point[i, k] - point[j, k], boot[:, i, k] - boot[:, j, k])
                pairs.append(PairDiff(labels[i], labels[j], metric, diff, verdict_of(diff)))
    return Comparison(models, pairs, len(stats[0].images), n, seed)


@dataclass(frozen=True)
class SeedGap:
    """Two arms of seed replicates (e.g. L4-leaky and L4-relu): each arm's mean ± sd over seeds, and the gap."""

    metric: str
    a: str
    b: str
    a_values: list[float]  # one per seed, on the whole set
    b_values: list[float]
    gap: Estimate  # mean(a) - mean(b), interval over images and seeds
    verdict: Verdict
    bootstrap: int

    @property
    def a_mean(self) -> float:
        return float(np.mean(self.a_values))

    @property
    def b_mean(self) -> float:
        return float(np.mean(self.b_values))

    @property
    def a_sd(self) -> float:
        return float(np.std(self.a_values, ddof=1)) if len(self.a_values) > 1 else float("nan")

    @property
    def b_sd(self) -> float:
        return float(np.std(self.b_values, ddof=1)) if len(self.b_values) > 1 else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict.value, "a_mean": self.a_mean, "b_mean": self.b_mean,
                "a_sd": self.a_sd, "b_sd": self.b_sd}


def seed_gaps(arm_a: list[MatchedStats], arm_b: list[MatchedStats], a: str = "A", b: str = "B", n: int = 1000,
              seed: int = 0) -> dict[str, SeedGap]:
    """The gap between two arms of replicates for every metric, its interval combining image and seed variation
    (module docstring): each resample draws the images (shared by every run) and, per arm, its seeds with
    replacement, and compares the arms' means."""
    if not arm_a or not arm_b:
        raise StatsError("each arm needs at least one run with per-image statistics")
    labels = [f"{a}#{i}" for i in range(len(arm_a))] + [f"{b}#{i}" for i in range(len(arm_b))]
    stats = arm_a + arm_b
    images = common_images(stats, labels)
    prepared = [prepare(s.reordered(images)) for s in stats]
    whole = np.stack([detection_metrics(p) for p in prepared])  # [runs, 4]
    va, vb = whole[:len(arm_a)], whole[len(arm_a):]
    rng = np.random.default_rng(seed + 1)
    samples = np.empty((n, len(METRICS)))
    for r, w in enumerate(image_resamples(len(images), n, seed)):
        pa = rng.integers(0, len(arm_a), len(arm_a))
        pb = len(arm_a) + rng.integers(0, len(arm_b), len(arm_b))
        vals = {i: detection_metrics(prepared[i], w) for i in set(pa.tolist()) | set(pb.tolist())}
        samples[r] = np.mean([vals[i] for i in pa], axis=0) - np.mean([vals[i] for i in pb], axis=0)
    out = {}
    for k, metric in enumerate(METRICS):
        gap = Estimate.of(float(va[:, k].mean() - vb[:, k].mean()), samples[:, k])
        out[metric] = SeedGap(metric, a, b, va[:, k].tolist(), vb[:, k].tolist(), gap, verdict_of(gap), n)
    return out


def seed_gap(arm_a: list[MatchedStats], arm_b: list[MatchedStats], a: str = "A", b: str = "B", metric: str = "map50",
             n: int = 1000, seed: int = 0) -> SeedGap:
    """`seed_gaps` for one metric."""
    return seed_gaps(arm_a, arm_b, a, b, n, seed)[metric]


@dataclass(frozen=True)
class Drop:
    """What a conversion (FP32 -> INT8, ONNX -> a vendor's build) costs on the same images: reference - converted, in
    percentage points, with its paired interval; `verdict` is TIED where the interval spans 0 (within noise)."""

    metric: str
    pp: Estimate
    verdict: Verdict

    @property
    def text(self) -> str:
        e = self.pp
        noise = "within noise" if self.verdict is Verdict.TIED else ("a real loss" if self.verdict is Verdict.AHEAD else "a real gain")
        return f"{e.value:+.2f} pp (95% {e.low:+.2f} to {e.high:+.2f}): {noise}"

    def as_dict(self) -> dict:
        return {"metric": self.metric, "pp": asdict(self.pp), "verdict": self.verdict.value, "text": self.text}


def conversion_drop(reference: MatchedStats, converted: MatchedStats, n: int = 1000, seed: int = 0) -> dict[str, Drop]:
    """Each metric's drop from `reference` to `converted`, paired over the same resamples of the images."""
    point, boot = paired_bootstrap([reference, converted], ["reference", "converted"], n=n, seed=seed)
    out = {}
    for k, metric in enumerate(METRICS):
        e = Estimate.of(point[0, k] - point[1, k], boot[:, 0, k] - boot[:, 1, k]).pp()
        out[metric] = Drop(metric, e, verdict_of(e))
    return out
