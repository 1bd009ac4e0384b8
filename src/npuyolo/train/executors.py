"""Where a series' members train: here, one after another (`LocalExecutor`), in child processes side by side on this
machine (`ProcessExecutor`, in `train.process_executor`), as Ray tasks side by side (`RayExecutor`, in
`train.ray_executor`), or under ASHA early stopping (`AshaExecutor`, in `train.asha`). Every
executor takes the same jobs and returns the same member states; Ray is imported only when one is used."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.train.asha import ASHA_METRICS, AshaExecutor
from npuyolo.train.members import ExecutorError, MemberJob, MemberState, progress_table
from npuyolo.train.process_executor import ProcessExecutor, ProcessOptions
from npuyolo.train.ray_executor import FAULT_ENV, RayExecutor, RayOptions, require_ray, stop_reason, worker_env
from npuyolo.train.trainer import run_prepared

__all__ = ["ASHA_METRICS", "EXECUTORS", "FAULT_ENV", "AshaExecutor", "Executor", "ExecutorError", "LocalExecutor",
           "MemberJob", "MemberState", "ProcessExecutor", "ProcessOptions", "RayExecutor", "RayOptions", "make_executor", "progress_table", "require_ray",
           "stop_reason", "worker_env"]


class Executor(Protocol):
    """Trains a series' members: `open()` before anything is registered (checks it can), `run()` the jobs in order
    of the series, `close()` whatever happens."""

    def open(self) -> None: ...

    def run(self, registry: Registry, jobs: list[MemberJob], prepare_retry=None) -> list[MemberState]: ...

    def close(self) -> None: ...


@dataclass
class LocalExecutor:
    """Members in this process, one after another; a member's error (or Ctrl-C) stops the series there, its run
    recorded as what happened, and a re-run continues where it stopped."""

    on_member: Callable[[str, str], None] | None = None  # told (variant, action) as each member starts

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, registry: Registry, jobs: list[MemberJob], prepare_retry=None) -> list[MemberState]:
        states = []
        for job in jobs:
            state = MemberState(job.variant, job.action, job.epochs, job.run_id)
            states.append(state)
            if self.on_member:
                self.on_member(job.variant, job.action)
            if job.action == "skip":
                state.status = registry.get_run(job.run_id).status if job.run_id is not None else RunStatus.FINISHED
                continue
            prepared = job.prepare()
            state.run_id = prepared.run_id
            result = run_prepared(registry, prepared)
            state.status = result.status
        return states


EXECUTORS = ("local", "process", "ray")


def make_executor(kind: str = "local", on_progress: Callable[[list[MemberState]], None] | None = None,
                  scheduler: str | None = None, grace_epochs: int = 1, asha_metric: str = "map50_95",
                  **options) -> Executor:
    """A LocalExecutor for `local` (members train in this process, one after another); a ProcessExecutor for
    `process` (child processes side by side on this machine); a RayExecutor for `ray` (an AshaExecutor with
    `scheduler="asha"`), checked before anything is registered."""
    if scheduler not in (None, "asha"):
        raise ExecutorError(f"scheduler must be asha, got {scheduler!r}", param="scheduler")
    if scheduler and kind != "ray":
        raise ExecutorError("scheduler asha needs `executor` ray", param="scheduler")
    if kind not in EXECUTORS:
        raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}", param="executor")
    if kind == "local":
        if options:
            raise ExecutorError(_needs(set(options)))
        return LocalExecutor()
    if kind == "process":
        if set(options) - set(ProcessOptions.__dataclass_fields__):
            raise ExecutorError(_needs(set(options) - set(ProcessOptions.__dataclass_fields__)))
        return ProcessExecutor(ProcessOptions(**options), on_progress=on_progress)
    require_ray()
    unknown = set(options) - set(RayOptions.__dataclass_fields__)
    if unknown:
        raise ExecutorError(f"unknown Ray options: {', '.join(sorted(unknown))}")
    if scheduler == "asha":
        try:
            import ray.tune  # noqa: F401
        except ImportError as e:
            raise ExecutorError("scheduler asha needs Ray Tune: pip install 'npuyolo[ray]'", param="scheduler") from e
        return AshaExecutor(RayOptions(**options), grace_epochs=grace_epochs, metric=asha_metric, on_progress=on_progress)
    return RayExecutor(RayOptions(**options), on_progress=on_progress)



def _needs(given: set[str]) -> str:
    """Which executors take the options given (`max_parallel` and the like: process or ray; `address`: ray only)."""
    ray_only = given - set(ProcessOptions.__dataclass_fields__)
    names = ", ".join(f"`{k}`" for k in sorted(ray_only or given))
    return f"{names} need `executor` ray" if ray_only else f"{names} need `executor` process or ray"
