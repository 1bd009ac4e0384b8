"""The registry's runs: listed, shown, copied into MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuyolo.services.common import registry_of
from npuyolo.services.options import MlflowOptions

__all__ = ["mlflow_export", "run", "runs"]


def runs(registry: Any, series: str | None = None) -> tuple[list, list[str]]:
    """Every run (of `series`) as `RunSummary` rows, and a line for each row too damaged to list (the others still
    list). The registry is opened read-only."""
    return registry_of(registry, readonly=True).runs_checked(series)


def run(registry: Any, ref: str):
    """One run as recorded (`RunRecord`): recipe, epochs, artefacts."""
    return registry_of(registry, readonly=True).get_run(ref)


def mlflow_export(registry: Any, uri: str, runs: list[str] | None = None,
                  experiment: str = MlflowOptions.experiment) -> list[dict]:
    """Copy runs (recipe, per-epoch metrics, NPU checks, INT8 results, reports) into the MLflow store at `uri`."""
    from npuyolo.registry.db import Registry
    from npuyolo.registry.mlflow_export import export_runs

    reg = registry if isinstance(registry, Registry) else Registry(None if registry is None else Path(registry), create=False)
    return export_runs(reg, uri, runs, experiment)
