"""Copy registry runs into an MLflow tracking store, so runs can be compared in `mlflow ui`.

The registry stays the record; MLflow gets a copy: parameters (the resolved recipe), every epoch's metrics at its
step, the best.pt validation, NPU placements per target, deployment evaluations, and the run's reports and model
YAML as artefacts. Each exported run is tagged with the registry path and run id, and the MLflow run id is noted
back in the registry (artefact `tracker/mlflow`), so exporting again skips what is already there.
Needs the optional extra: pip install 'npuyolo[mlflow]' (mlflow-skinny with SQLite support, no server).
"""

from __future__ import annotations

from pathlib import Path

from npuyolo.errors import NpuyoloError

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


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artefacts go next to its file (MLflow's default is ./mlruns in the working directory)."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if not path or path == ":memory:":
        raise MlflowExportError(f"MLflow store {uri!r} names no database file; e.g. sqlite:///mlflow.db")
    db = Path(path).expanduser().resolve()
    return (db.parent / "mlruns").as_uri()


def export_runs(registry, uri: str, runs: list[str] | None = None, experiment: str = "npuyolo") -> list[dict]:
    """Export the named runs (default: every run) to `uri`; returns one row per run: id, name, mlflow run id, action."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise MlflowExportError("MLflow is not installed: pip install 'npuyolo[mlflow]'") from e
    ids = [registry.resolve(r) for r in runs] if runs else [r["id"] for r in registry.runs()]
    artifacts = artifact_location(uri)
    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment) or client.get_experiment(
            client.create_experiment(experiment, artifact_location=artifacts))
    except Exception as e:  # a bad URI, an unwritable file: the store's own message, on one line
        raise MlflowExportError(f"MLflow store {uri}: {' '.join(str(e).split())[:300]}") from e
    rows = []
    for run_id in ids:
        run = registry.run(run_id)
        found = client.search_runs([exp.experiment_id], filter_string=
                                   f"tags.`npuyolo.registry` = '{registry.path}' and tags.`npuyolo.run_id` = '{run.id}'")
        if found:
            rows.append({"run_id": run.id, "name": run.name, "mlflow_run_id": found[0].info.run_id, "action": "already exported"})
            continue
        tags = {"npuyolo.registry": str(registry.path), "npuyolo.run_id": str(run.id), "npuyolo.variant": run.variant,
                "npuyolo.status": run.status, "npuyolo.series": run.series or ""}
        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=run.name, tags=tags) as active:
            mlflow.log_params(_flat({"recipe": run.recipe, "data": run.data_path, "data_hash": run.data_hash,
                                     "weights_source": run.weights_source or "", "device": run.device or ""}))
            for e in run.epochs:
                values = {k: v for k, v in e.items() if k not in ("epoch", "extra") and isinstance(v, (int, float))}
                values.update({f"extra/{k}": v for k, v in (e.get("extra") or {}).items() if isinstance(v, (int, float))})
                mlflow.log_metrics({_metric_key(k): float(v) for k, v in values.items()}, step=e["epoch"])
            if run.best:
                mlflow.log_metrics({_metric_key("best", k): float(v) for k, v in run.best.items() if isinstance(v, (int, float))})
            for check in registry.npu_checks(run_id=run.id):
                mlflow.log_metrics({_metric_key("npu", check["target"], k): float(check[k])
                                    for k in ("share_nodes", "share_nodes_fused", "share_macs", "partitions_host")})
            for ev in registry.deploy_evals(run.id):
                stem = Path(ev["artefact"]).stem
                mlflow.log_metrics({_metric_key("deploy", ev["precision_kind"], stem, k): float(ev[k])
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
