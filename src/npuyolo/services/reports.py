"""Reports from the registry alone: a run's, a series'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuyolo.services.common import registry_of
from npuyolo.services.options import ReportOptions, SeriesReportOptions

__all__ = ["report", "series_report"]


def report(registry: Any, run: str, options: ReportOptions | None = None, *, compare: str | None = None,
           out: str | Path | None = None) -> Path:
    """A run's training report (every number a recorded one), beside it with `compare` (e.g. its ReLU twin)."""
    from npuyolo.report.render import render_run

    o = options or ReportOptions()
    return Path(render_run(registry_of(registry, readonly=True), run, out, lang=o.lang, fmt=o.fmt, compare=compare))


def series_report(registry: Any, name: str, options: SeriesReportOptions | None = None, *,
                  out: str | Path | None = None) -> Path:
    """A series' overview: ranking, every member's curves, accuracy against NPU compatibility on `target`."""
    from npuyolo.report.render import render_series

    o = options or SeriesReportOptions()
    return Path(render_series(registry_of(registry, readonly=True), name, out, lang=o.lang, target=o.target, fmt=o.fmt))
