"""Copy registry runs into an MLflow tracking store, so runs can be compared in `mlflow ui`.

The registry stays the record; MLflow gets a copy: parameters (the resolved recipe), every epoch's metrics at its
step, the best.pt validation, NPU placements per target, deployment evaluations, and the run's reports and model
YAML as artefacts. Each exported run is tagged with the registry path and run id, and the MLflow run id is noted
back in the registry (artefact `tracker/mlflow`), so exporting again skips what is already there.
Needs the optional extra: pip install 'npuyolo[mlflow]' (mlflow-skinny with SQLite support, no server).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from npuyolo.errors import NpuyoloError
from npuyolo.registry.db import EPOCH_FIELDS

__all__ = ["MlflowExportError", "export_runs"]


class MlflowExportError(NpuyoloError, RuntimeError):
    """MLflow is missing or the store cannot be written."""


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def _metric_key(*parts: str) -> str:
    """MLflow metric names allow letters, digits, '_', '-', '.', ' ', ':' and '/'."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", "/".join(parts))


# A server that is down must fail in seconds: MLflow's defaults (7 retries with exponential backoff, 120 s per
# request) kept `runs export --mlflow http://127.0.0.1:9` busy for minutes. Used unless the user set them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
CONNECT_TIMEOUT_S = 3.0


def sqlite_file(uri: str) -> Path | None:
    """The database file a `sqlite:` store URI names (resolved), None for other schemes."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.split(":///", 1)[1].split("?", 1)[0] if ":///" in uri else ""
    if not path or path == ":memory:":
        raise MlflowExportError(f"MLflow store {uri!r} names no database file; e.g. sqlite:///mlflow.db")
    return Path(path).expanduser().resolve()


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artefacts go next to its file (MLflow's default is ./mlruns in the working directory)."""
    db = sqlite_file(uri)
    return None if db is None else (db.parent / "mlruns").as_uri()


def refuse_registry_store(uri: str, registry_path: str | Path) -> None:
    """MLflow would add its own tables (runs, metrics...) to the npuyolo registry's file: never export into it."""
    db = sqlite_file(uri)
    if db is None:
        return
    reg = Path(registry_path)
    same = db == reg.resolve()
    if not same and db.exists() and reg.exists():
        same = os.path.samefile(db, reg)  # a symlink or hard link to the registry
    if same:
        raise MlflowExportError(f"MLflow store {uri} is the npuyolo registry itself; name another file, e.g. sqlite:///mlflow.db")


def check_reachable(uri: str) -> None:
    """An http(s) tracking server must accept a connection within CONNECT_TIMEOUT_S, else one line now."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:  # a port that is not a number or out of range
        raise MlflowExportError(f"MLflow store {uri}: {e}") from e
    if not host:
        raise MlflowExportError(f"MLflow store {uri} names no host; e.g. http://127.0.0.1:5000")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise MlflowExportError(f"MLflow server {host}:{port} cannot be reached ({reason})") from e


@contextmanager
def _short_http_timeouts() -> Iterator[None]:
    """HTTP_DEFAULTS in the environment while exporting (MLflow reads them per request), restored afterwards."""
    added = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def export_runs(registry, uri: str, runs: list[str] | None = None, experiment: str = "npuyolo") -> list[dict]:
    """Export the named runs (default: every run) to `uri`; returns one row per run: id, name, mlflow run id, action."""
    ids = [registry.resolve(r) for r in runs] if runs else [r.id for r in registry.runs()]
    refuse_registry_store(uri, registry.path)
    artifacts = artifact_location(uri)
    check_reachable(uri)  # before importing MLflow, which alone takes seconds
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise MlflowExportError("MLflow is not installed: pip install 'npuyolo[mlflow]'") from e
    with _short_http_timeouts():
        return _export(registry, uri, ids, experiment, artifacts)


def _export(registry, uri: str, ids: list[int], experiment: str, artifacts: str | None) -> list[dict]:
    import mlflow
    from mlflow.tracking import MlflowClient

    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment) or client.get_experiment(
            client.create_experiment(experiment, artifact_location=artifacts))
    except Exception as e:  # a bad URI, an unwritable file: the store's own message, on one line
        raise MlflowExportError(f"MLflow store {uri}: {' '.join(str(e).split())[:300]}") from e
    rows = []
    for run_id in ids:
        run = registry.get_run(run_id)
        found = client.search_runs([exp.experiment_id], filter_string=
                                   f"tags.`npuyolo.registry` = '{registry.path}' and tags.`npuyolo.run_id` = '{run.id}'")
        if found:
            rows.append({"run_id": run.id, "name": run.name, "mlflow_run_id": found[0].info.run_id, "action": "already exported"})
            continue
        tags = {"npuyolo.registry": str(registry.path), "npuyolo.run_id": str(run.id), "npuyolo.variant": run.variant,
                "npuyolo.status": run.status, "npuyolo.series": run.series or ""}
        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=run.name, tags=tags) as active:
            mlflow.log_params(_flat({"recipe": run.recipe.as_dict(), "data": run.data_path, "data_hash": run.data_hash,
                                     "weights_source": run.weights_source or "", "device": run.device or ""}))
            for e in run.epochs:
                values = {k: e.value(k) for k in EPOCH_FIELDS if isinstance(e.value(k), (int, float))}
                values.update({f"extra/{k}": v for k, v in (e.extra or {}).items() if isinstance(v, (int, float))})
                mlflow.log_metrics({_metric_key(k): float(v) for k, v in values.items()}, step=e.epoch)
            if run.best:
                mlflow.log_metrics({_metric_key("best", k): float(v) for k, v in run.best.items() if isinstance(v, (int, float))})
            for check in registry.npu_checks(run_id=run.id):
                mlflow.log_metrics({_metric_key("npu", check.target, k): float(getattr(check, k))
                                    for k in ("share_nodes", "share_nodes_fused", "share_macs", "partitions_host")})
            for ev in registry.deploy_evals(run.id):
                stem = Path(ev.artefact).stem
                mlflow.log_metrics({_metric_key("deploy", ev.precision_kind, stem, k): float(getattr(ev, k))
                                    for k in ("map50", "map50_95", "precision", "recall")})
            folder = Path(run.save_dir) if run.save_dir else None
            if folder is not None and (folder / "reports").is_dir():
                mlflow.log_artifacts(str(folder / "reports"), artifact_path="reports")
            yaml_path = run.artifact_path("model_yaml")
            if yaml_path is not None:
                mlflow.log_artifact(str(yaml_path), artifact_path="model")
            mlflow_id = active.info.run_id
        if not registry.readonly:
            registry.add_artifact(run.id, "tracker/mlflow", f"{uri}#{mlflow_id}", {"uri": uri, "experiment": experiment,
                                                                                  "run_id": mlflow_id})
        rows.append({"run_id": run.id, "name": run.name, "mlflow_run_id": mlflow_id, "action": "exported"})
    return rows
