"""What a training process records about its run, through a sink (the registry here, or the Ray driver's queue),
and how a run is closed: one `finish_run` for every way training ends with weights on disk."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.stats.matched import MatchedStats, StatsError, load_stats

__all__ = ["FINAL_STATS", "PREVIOUS", "RecordSink", "RegistrySink", "final_stats", "finish_run", "numerics", "record_trackers", "sink_trackers",
           "software_versions"]


PREVIOUS = "last.prev.pt"  # the checkpoint before last.pt, kept while a run trains


def software_versions() -> dict[str, str]:
    """Versions from the modules themselves (importlib.metadata scans site-packages: ~1.5 s here)."""
    import importlib

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("npuyolo", "ultralytics", "onnx", "onnxruntime", "numpy"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
            pass
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics(trainer) -> dict:
    """What a run's numbers depend on besides its recipe and data: the same seed with another torch thread count gives
    other losses from epoch 1 (measured: L4-leaky at 320 px, mAP50 0.743 with one thread, 0.698 with two)."""
    info = {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "seed": getattr(trainer.args, "seed", None), "deterministic": bool(getattr(trainer.args, "deterministic", False)),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic), "device": str(trainer.device),
            "workers": getattr(trainer.args, "workers", None), "amp": bool(getattr(trainer, "amp", False)),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available() and str(trainer.device) != "cpu":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


FINAL_STATS = "stats/val"  # the artefact kind of a run's final validation statistics (best.pt, the trainer's rect batches)


def final_stats(run) -> MatchedStats | None:
    """The per-image statistics a finished run's final validation of best.pt kept; None where it kept none (trained
    before they were kept), or they are damaged: callers then fall back to single numbers, said to be one seed."""
    path = run.artifact_path(FINAL_STATS) if run is not None and run.status == RunStatus.FINISHED else None
    try:
        return load_stats(path) if path is not None else None
    except StatsError:
        return None


class RecordSink:
    """Where a training process sends what the registry keeps about its run: epochs, run fields, artefacts, status.

    Local runs write straight into the registry (`RegistrySink`); a run trained by a Ray worker sends the same
    calls back to the driver (`npuyolo.train.executors`), which alone opens the registry.
    """

    def record_epoch(self, epoch: int, extra: dict | None = None, **row: float | None) -> None: ...
    def update_run(self, **fields) -> None: ...
    def add_artifact(self, kind: str, path: str | Path, meta: dict | None = None) -> None: ...
    def set_status(self, status: RunStatus, error: str | None = None) -> None: ...


class RegistrySink(RecordSink):
    """The registry itself, for one run: every call is one transaction, as before."""

    def __init__(self, registry: Registry, run_id: int):
        self.registry, self.run_id = registry, run_id

    def record_epoch(self, epoch, extra=None, **row):
        self.registry.record_epoch(self.run_id, epoch, extra=extra, **row)

    def update_run(self, **fields):
        self.registry.update_run(self.run_id, **fields)

    def add_artifact(self, kind, path, meta=None):
        self.registry.add_artifact(self.run_id, kind, path, meta)

    def set_status(self, status, error=None):
        self.registry.set_status(self.run_id, status, error=error)


def record_trackers(registry: Registry, run_id: int, trainer) -> None:
    sink_trackers(RegistrySink(registry, run_id), trainer)


def sink_trackers(sink: RecordSink, trainer) -> None:
    """Where the trackers the recipe named put this run: TensorBoard's log folder, MLflow's run id and URI."""
    trackers = getattr(trainer, "trackers", ()) or ()
    if "tensorboard" in trackers:
        sink.add_artifact("tracker/tensorboard", Path(trainer.save_dir), {"logdir": str(trainer.save_dir)})
    if "mlflow" in trackers:
        try:
            import mlflow

            last = mlflow.last_active_run()
        except Exception:  # mlflow absent or its store unreadable: nothing to point at
            last = None
        if last is not None:
            uri = mlflow.get_tracking_uri()
            sink.add_artifact("tracker/mlflow", f"{uri}#{last.info.run_id}", {"uri": uri, "run_id": last.info.run_id})



def finish_run(sink: RecordSink, save_dir: str | Path, status: RunStatus = RunStatus.FINISHED, error: str | None = None,
               trainer=None) -> None:
    """Close a run whose training ended with weights on disk (finished, or stopped early by a scheduler): its best and
    last weights recorded, the trackers it fed (when its trainer is at hand), then its status. A finished run drops
    last.prev.pt, which only a resume needs; a stopped one keeps it."""
    wdir = Path(save_dir) / "weights"
    for kind in ("best", "last"):
        if (wdir / f"{kind}.pt").exists():
            sink.add_artifact(f"weights/{kind}", wdir / f"{kind}.pt")
    if status == RunStatus.FINISHED:
        (wdir / PREVIOUS).unlink(missing_ok=True)
    if trainer is not None:
        sink_trackers(sink, trainer)
    sink.set_status(status, error=error)
