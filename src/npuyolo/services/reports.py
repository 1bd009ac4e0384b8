"""Reports from the registry alone: a run's, a series'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuyolo.services.common import registry_of
from npuyolo.services.options import ReportOptions, SeriesReportOptions

__all__ = ["report", "series_report"]


def _one_or_all(paths: list) -> Path | list[Path]:
    """One report written: its path (as before several could be asked for); several: every path, in order."""
    paths = [Path(p) for p in paths]
    return paths[0] if len(paths) == 1 else paths


def report(registry: Any, run: str, options: ReportOptions | None = None, *, compare: str | None = None,
           out: str | Path | None = None) -> Path | list[Path]:
    """A run's training report (every number a recorded one), beside it with `compare` (e.g. its ReLU twin), in each
    language and format of `options`, from one reading of the run (its comparison's bootstrap and plots made once).
    Returns the report's path, or, for several languages or formats, every path (each language in every format)."""
    from npuyolo.report.render import render_runs

    o = options or ReportOptions()
    return _one_or_all(render_runs(registry_of(registry, readonly=True), run, out, langs=o.lang, fmts=o.fmt, compare=compare))


def series_report(registry: Any, name: str, options: SeriesReportOptions | None = None, *,
                  out: str | Path | None = None) -> Path | list[Path]:
    """A series' overview: ranking, every member's curves, accuracy against NPU compatibility on `target`, in each
    language and format of `options` from one reading of the series; the path, or every path for several."""
    from npuyolo.report.render import render_series_all

    o = options or SeriesReportOptions()
    return _one_or_all(render_series_all(registry_of(registry, readonly=True), name, out, langs=o.lang, target=o.target,
                                         fmts=o.fmt))
