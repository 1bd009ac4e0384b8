"""Members as Ray tasks side by side (`--executor ray`).
Ray workers never open the SQLite registry (it may sit on another machine, and SQLite over a network share is not
safe). The driver registers each run before dispatch (so the driver claims its folder), a worker trains in that
folder and sends its epoch records, run fields, artefacts and status through a Ray queue, and the driver writes
them, one transaction each, exactly as a local run writes them. Ray is imported here only, and only when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.train.members import QUEUED, ExecutorError, MemberJob, MemberState
from npuyolo.train.records import RecordSink, RegistrySink
from npuyolo.train.trainer import PreparedRun, train_into
from npuyolo.ultra import stdout_to_stderr

__all__ = ["FAULT_ENV", "QueueSink", "RayExecutor", "RayOptions", "apply_records", "fault_epoch", "require_ray", "stop_reason", "train_member",
           "worker_env"]


# test hook: a Ray worker on its first attempt at a member ends its process (os._exit) right after recording this
# epoch, as a killed worker or lost node would; the retry must resume from the checkpoint without duplicate epochs
FAULT_ENV = "NPUYOLO_FAULT_EXIT_AFTER_EPOCH"


def require_ray():
    try:
        import ray
    except ImportError as e:
        raise ExecutorError("executor ray needs Ray: pip install 'npuyolo[ray]'", param="executor") from e
    return ray


@dataclass
class RayOptions:
    address: str | None = None  # None: a local Ray runtime on this machine; "auto" or "ray://HOST:PORT": a cluster
    gpus_per_member: float = 0.0
    cpus_per_member: float = 1.0
    max_parallel: int | None = None  # None: as many as Ray's resources allow
    max_retries: int = 1

    def __post_init__(self) -> None:
        if self.gpus_per_member < 0:
            raise ExecutorError(f"gpus_per_member must be 0 or more, got {self.gpus_per_member}", param="gpus_per_member")
        if self.cpus_per_member <= 0:
            raise ExecutorError(f"cpus_per_member must be more than 0, got {self.cpus_per_member}", param="cpus_per_member")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ExecutorError("max_parallel must be at least 1", param="max_parallel")
        if self.max_retries < 0:
            raise ExecutorError("max_retries must be >= 0", param="max_retries")


class QueueSink(RecordSink):
    """A worker's records, sent to the driver tagged with run and attempt; the driver applies them in order."""

    def __init__(self, queue, run_id: int, attempt: int):
        self.queue, self.run_id, self.attempt = queue, run_id, attempt

    def _send(self, op: str, *args, **kwargs) -> None:
        self.queue.put((self.run_id, self.attempt, op, args, kwargs))  # blocks until the queue actor holds it

    def record_epoch(self, epoch, extra=None, **row):
        self._send("record_epoch", epoch, extra=extra, **row)

    def update_run(self, **fields):
        self._send("update_run", **fields)

    def add_artifact(self, kind, path, meta=None):
        self._send("add_artifact", kind, str(path), meta)

    def set_status(self, status, error=None):
        self._send("set_status", status, error=error)


def train_member(prepared: PreparedRun, queue, attempt: int, exit_after_epoch: int | None) -> int:
    """Body of a Ray task: train one prepared run in its folder, records through the queue. Never opens the registry."""

    def fault_hook(trainer) -> None:
        def exit_now(t) -> None:
            if t.epoch + 1 >= exit_after_epoch:
                os._exit(1)

        trainer.add_callback("on_fit_epoch_end", exit_now)  # after the registry callback: the epoch was sent

    with stdout_to_stderr():
        train_into(prepared.build, QueueSink(queue, prepared.run_id, attempt), f"run {prepared.run_id}",
                   on_trainer=fault_hook if exit_after_epoch else None)
    return prepared.run_id


def worker_env() -> dict | None:
    """Ray runtime_env so that workers import the same npuyolo as the driver (a source checkout on PYTHONPATH too)."""
    src = str(Path(__file__).resolve().parents[2])  # the folder holding the npuyolo package
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src in paths:  # absolute: a worker's current folder is not the driver's
        return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
    return None


def fault_epoch() -> int | None:
    """The epoch after which a first attempt ends its process (the `FAULT_ENV` test hook), or None."""
    value = os.environ.get(FAULT_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class RayExecutor:
    """Runs members as Ray tasks; the driver (this process) alone writes the registry."""

    def __init__(self, options: RayOptions | None = None,
                 on_progress: Callable[[list[MemberState]], None] | None = None):
        self.options = options or RayOptions()
        self.on_progress = on_progress

    def _start(self, ray) -> bool:
        """Connect (or start a local runtime); True when this call started it and must shut it down."""
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.options.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env=worker_env())
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = self.options.address or "a local runtime"
            raise ExecutorError(f"Ray: cannot start or reach {where}: {' '.join(str(e).split())[:300]}") from e
        return True

    def _check_resources(self, ray) -> None:
        total = ray.cluster_resources()
        o = self.options
        if o.cpus_per_member > total.get("CPU", 0):
            raise ExecutorError(f"cpus_per_member {o.cpus_per_member:g}: the Ray cluster has {total.get('CPU', 0):g} CPUs", param="cpus_per_member")
        if o.gpus_per_member > total.get("GPU", 0):
            raise ExecutorError(f"gpus_per_member {o.gpus_per_member:g}: the Ray cluster has {total.get('GPU', 0):g} GPUs", param="gpus_per_member")

    def open(self) -> None:
        """Start (or join) Ray and check it can hold one member; series call this before registering anything."""
        if getattr(self, "_ray", None) is not None:
            return
        ray = require_ray()
        self._started = self._start(ray)
        self._ray = ray
        try:
            self._check_resources(ray)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the local Ray runtime this executor started (one it found running is left as it was)."""
        ray, self._ray = getattr(self, "_ray", None), None
        if ray is not None and self._started:
            ray.shutdown()

    def run(self, registry: Registry, jobs: list[MemberJob], prepare_retry: Callable[[int], PreparedRun]) -> list[MemberState]:
        """Train every job that is not `skip`; retry members whose worker died (from their last checkpoint)."""
        self.open()
        ray = self._ray
        from ray.util.queue import Queue

        try:
            queue = Queue()
            task = ray.remote(max_retries=0)(train_member)  # retries are the driver's: it re-claims the run first
            return self._loop(registry, ray, task, queue, jobs, prepare_retry)
        finally:
            self.close()

    def _loop(self, registry: Registry, ray, task, queue, jobs, prepare_retry) -> list[MemberState]:
        o = self.options
        states = [MemberState(j.variant, j.action, j.epochs, j.run_id, status=RunStatus.FINISHED if j.action == "skip" else QUEUED)
                  for j in jobs]
        todo = [(j, s) for j, s in zip(jobs, states) if j.action != "skip"]
        in_flight: dict = {}  # ObjectRef -> MemberState
        by_run: dict[int, MemberState] = {}
        fault = fault_epoch()
        failures: list[str] = []

        def dispatch(state: MemberState, prepared: PreparedRun) -> None:
            state.run_id, state.status, state.error = prepared.run_id, RunStatus.RUNNING, None
            by_run[prepared.run_id] = state
            state.epoch = len(registry.epochs(prepared.run_id))  # a resume keeps the checkpointed epochs
            ref = task.options(num_cpus=o.cpus_per_member, num_gpus=o.gpus_per_member,
                               name=f"npuyolo:{state.variant}").remote(
                prepared, queue, state.attempt, fault if state.attempt == 0 else None)
            in_flight[ref] = state

        drain = _drainer(registry, queue, by_run)

        def progress() -> None:
            if self.on_progress:
                self.on_progress(states)

        try:
            progress()
            while todo or in_flight:
                while todo and (o.max_parallel is None or len(in_flight) < o.max_parallel):
                    job, state = todo.pop(0)
                    dispatch(state, job.prepare())
                    progress()
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                changed = drain()
                for ref in ready:
                    state = in_flight.pop(ref)
                    drain()  # every record the task sent is in the queue before its result is
                    try:
                        ray.get(ref)
                    except ray.exceptions.TaskCancelledError:
                        self._close(registry, state, RunStatus.INTERRUPTED, "cancelled")
                    except ray.exceptions.RayTaskError as e:  # an exception in npuyolo/Ultralytics: recorded, not retried
                        if state.status == RunStatus.FAILED and state.error:  # the worker's own one-line record
                            message = state.error
                        else:
                            cause = getattr(e, "cause", None) or e
                            message = " ".join(f"{type(cause).__name__}: {cause}".split())[:2000]
                        if registry.get_run(state.run_id).status == RunStatus.RUNNING:
                            registry.set_status(state.run_id, RunStatus.FAILED, error=message)
                        state.status, state.error = RunStatus.FAILED, message
                        failures.append(f"{state.variant} (run {state.run_id}): {message[:300]}")
                    except ray.exceptions.RayError as e:  # worker process or node gone: resume from the checkpoint
                        self._close(registry, state, RunStatus.INTERRUPTED, f"worker lost ({type(e).__name__}); attempt {state.attempt + 1}")
                        progress()
                        if state.attempt < o.max_retries:
                            state.attempt += 1
                            dispatch(state, prepare_retry(state.run_id))
                        else:  # retries used up: the series did not finish, and the exit status must say so
                            failures.append(f"{state.variant} (run {state.run_id}): worker lost {state.attempt + 1} time(s);"
                                            " left interrupted, run the series again to continue")
                    changed = True
                if changed:
                    progress()
        except BaseException as e:
            self._cancel(registry, ray, in_flight, drain, stop_reason(e))
            progress()
            raise
        if failures:
            raise ExecutorError(f"{len(failures)} member(s) failed: " + "; ".join(failures))
        return states

    def _close(self, registry: Registry, state: MemberState, status: RunStatus, error: str) -> None:
        run = registry.get_run(state.run_id)
        if run.status == RunStatus.RUNNING:
            registry.set_status(state.run_id, status, error=error)
        state.status, state.error = registry.get_run(state.run_id).status, error

    def _cancel(self, registry: Registry, ray, in_flight: dict, drain: Callable[[], bool], reason: str) -> None:
        """Ctrl-C (or a driver error): stop every member, keep what they sent, mark the rest interrupted, saying why."""
        refs = list(in_flight)
        for ref in refs:
            ray.cancel(ref)  # KeyboardInterrupt inside the task: Ultralytics stops, the worker reports `interrupted`
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=15)
        try:
            drain()
        except Exception:  # the queue actor may be gone with the runtime; the registry is closed below regardless
            pass
        for ref in refs:
            ray.cancel(ref, force=True)
        if refs:  # a force-cancelled worker can train on for a moment: gone before the driver returns, so a re-run
            ray.wait(refs, num_returns=len(refs), timeout=30)  # never resumes a run its old worker still writes
            _wait_for_workers_to_exit(ray, 30)
        for ref in refs:
            state = in_flight[ref]
            if registry.get_run(state.run_id).status == RunStatus.RUNNING:
                registry.set_status(state.run_id, RunStatus.INTERRUPTED, error=reason)
            state.status = registry.get_run(state.run_id).status


def _wait_for_workers_to_exit(ray, seconds: float) -> None:
    """Until no task of this job is still running on the cluster (or `seconds` pass): ray.cancel(force=True) returns
    before the worker process is gone, and one that was writing its last checkpoint would finish it under a re-run."""
    import time

    try:
        from ray.util.state import list_tasks
    except ImportError:
        return
    job = ray.get_runtime_context().get_job_id()
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            running = [t for t in list_tasks(filters=[("job_id", "=", job), ("state", "=", "RUNNING")], raise_on_missing_output=False)]
        except Exception:  # noqa: BLE001  (no state API on this cluster: the wait above is all there is)
            return
        if not running:
            return
        time.sleep(0.5)


def stop_reason(exc: BaseException) -> str:
    """Why the members still running were stopped, as the run's error: Ctrl-C is the user's; anything else on the
    driver is named as what it was (a driver bug must not read as the user's Ctrl-C)."""
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by the user (Ctrl-C)"
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"stopped because the series driver failed ({type(exc).__name__}{': ' + text if text else ''})"


def apply_records(registry: Registry, items: list, by_run: dict[int, MemberState]) -> None:
    """Apply workers' records (run, attempt, operation, args, kwargs) to the registry and the progress states, in order;
    a late record of a dead attempt (its run re-claimed since) is dropped. Shared with the process executor."""
    for run_id, attempt, op, args, kwargs in items:
        state = by_run.get(run_id)
        if state is None or attempt != state.attempt:
            continue
        getattr(RegistrySink(registry, run_id), op)(*args, **kwargs)
        if op == "record_epoch":
            state.epoch, state.map50 = args[0], kwargs.get("map50")
            if kwargs.get("epoch_time_s"):
                state.epoch_times.append(kwargs["epoch_time_s"])
        elif op == "set_status":
            state.status, state.error = args[0], kwargs.get("error")


def _drainer(registry: Registry, queue, by_run: dict[int, MemberState]) -> Callable[[], bool]:
    """A function that applies every queued worker record to the registry (and the progress states)."""

    def drain() -> bool:
        n = queue.size()
        items = queue.get_nowait_batch(n) if n else []
        apply_records(registry, items, by_run)
        return bool(items)

    return drain
