"""PNG plots for reports (matplotlib, Agg backend, DejaVu Sans: nothing to download)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from npuyolo.paths import atomic_path
from npuyolo.registry.db import EpochRow
from npuyolo.report.webfont import FAMILY, FONT_FILE


def _hangul_fallback() -> None:
    """Run names may be Korean: DejaVu Sans first, the shipped OFL Korean font (report/fonts) for glyphs it lacks."""
    from importlib.resources import files

    from matplotlib import font_manager


    font_manager.fontManager.addfont(str(files("npuyolo.report").joinpath("fonts", FONT_FILE)))
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", FAMILY]


_hangul_fallback()
METRIC_LABELS = {"map50": "mAP50", "map50_95": "mAP50-95", "precision": "precision", "recall": "recall"}
LOSS_LABELS = {"box_loss": "box loss", "cls_loss": "cls loss", "dfl_loss": "dfl loss"}


def _save(fig, path: Path) -> Path:

    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def _series(epochs: list[EpochRow], key: str) -> tuple[list[int], list[float]]:
    pts = [(e.epoch, e.value(key)) for e in epochs if e.value(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def metric_curves(epochs: list[EpochRow], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key, label in METRIC_LABELS.items():
        ax.plot(*_series(epochs, key), marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="value", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_curves(epochs: list[EpochRow], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key, label in LOSS_LABELS.items():
        ax.plot(*_series(epochs, key), marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="train loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_curves(runs: list[dict], path: Path, metric: str = "map50") -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for run in runs:
        axes[0].plot(*_series(run.epochs, metric), marker="o", ms=3, label=run.name)
        axes[1].plot(*_series(run.epochs, "box_loss"), marker="o", ms=3, label=run.name)
    axes[0].set(xlabel="epoch", ylabel=METRIC_LABELS[metric], title=f"{METRIC_LABELS[metric]} per epoch")
    axes[1].set(xlabel="epoch", ylabel="box loss", title="box loss per epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def npu_bars(rows: list[dict], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.45 * max(1, len(rows))))
    names = [r["target"] for r in rows]
    ax.barh(names, [r["share_nodes"] * 100 for r in rows], color="#4c72b0", label="nodes on NPU")
    ax.barh(names, [r["share_macs"] * 100 for r in rows], color="none", edgecolor="#dd8452", lw=1.5, label="MACs on NPU")
    ax.set(xlim=(0, 100), xlabel="% on NPU", title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def accuracy_vs_npu(points: list[dict], path: Path, target: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for p in points:
        ax.scatter(p["share"] * 100, p["map50"], s=40, color="#c44e52" if p.get("pareto") else "#4c72b0")
        ax.annotate(p["variant"], (p["share"] * 100, p["map50"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = sorted((p["share"] * 100, p["map50"]) for p in points if p.get("pareto"))
    if len(front) > 1:
        ax.plot(*zip(*front), color="#c44e52", lw=1, ls="--", label="Pareto front")
        ax.legend(fontsize=8)
    ax.set(xlabel=f"NPU node share on {target} (%)", ylabel="final mAP50", title="accuracy vs NPU compatibility")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def route_bars(rows: list[dict], path: Path, title: str) -> Path:
    """Mean mAP50 per route as bars, every seed's value as a dot: the spread is visible, not summarised away."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = [f"{r['route']}\n{r['variant']}" for r in rows]
    means = [(r["mean"]["map50"] or 0.0) for r in rows]
    ax.bar(labels, means, color=["#4c72b0" if r["route"] == "leaky" else "#dd8452" for r in rows], alpha=0.8)
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r["map50"]), r["map50"], color="black", s=14, zorder=3)
    ax.set(ylabel="mAP50 (best.pt)", title=title, ylim=(0, max([*means, *(v for r in rows for v in r["map50"]), 0.05]) * 1.15))
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    return _save(fig, path)


def forest_plot(pairs: list, path: Path, title: str) -> Path:
    """Each pair's difference (percentage points) with its 95% interval, a line at 0: an interval crossing it is a tie.

    `pairs`: records with `a`, `b`, `diff` (value, low, high, as fractions) and `verdict` ('ahead'/'tied'/'behind')."""
    fig, ax = plt.subplots(figsize=(7.2, 1.3 + 0.42 * max(1, len(pairs))))
    colours = {"ahead": "#4c72b0", "behind": "#c44e52", "tied": "#7f7f7f"}
    for i, p in enumerate(reversed(pairs)):
        v, lo, hi = (100 * x for x in (p.diff.value, p.diff.low, p.diff.high))
        colour = colours.get(getattr(p.verdict, "value", p.verdict), "#7f7f7f")
        ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.scatter([v], [i], color=colour, s=30, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(pairs)), [f"{p.a} − {p.b}" for p in reversed(pairs)], fontsize=8)
    ax.set(xlabel="difference (percentage points), 95% paired-bootstrap interval", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
