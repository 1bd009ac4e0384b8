"""Members side by side on this machine, each in its own process (`--executor process`), without Ray.

On a small CPU a nano model at a small size leaves cores idle between its ops: three 12-epoch members at 160 px, one
torch thread each, all at once, took 176 s on 2 cores against 217 s one after another with two threads each
(bench/RESULTS.md, one run each). The records travel as with Ray:
the parent registers each run before it starts (so it owns the run's folder), a child trains there and sends its epoch
records, run fields, artefacts and status through a pipe, and the parent alone writes them to the registry, one
transaction each. A child's output goes to `train.log` in its run's folder, not over the parent's progress table.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait

from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.train.members import QUEUED, ExecutorError, MemberJob, MemberState
from npuyolo.train.ray_executor import apply_records, fault_epoch, stop_reason, train_member
from npuyolo.train.trainer import PreparedRun

__all__ = ["ProcessExecutor", "ProcessOptions"]

LOG_NAME = "train.log"  # a child's stdout and stderr, in its run's folder


@dataclass
class ProcessOptions:
    """How many members train at once, and the torch threads each takes (Ray's names for the same two things)."""

    cpus_per_member: float = 1.0  # torch threads of each member (whole threads: 1.5 is 1)
    max_parallel: int | None = None  # None: every member at once, at most twice the cores / cpus_per_member
    max_retries: int = 1  # retries of a member whose process died (killed, out of memory), from its last checkpoint

    def __post_init__(self) -> None:
        if self.cpus_per_member < 1:
            raise ExecutorError(f"cpus_per_member must be at least 1 with executor process (torch threads), got "
                                f"{self.cpus_per_member:g}", param="cpus_per_member")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ExecutorError("max_parallel must be at least 1", param="max_parallel")
        if self.max_retries < 0:
            raise ExecutorError("max_retries must be >= 0", param="max_retries")

    @property
    def threads(self) -> int:
        return int(self.cpus_per_member)

    def parallel(self, members: int) -> int:
        """Members training at once. By default all of them, up to twice the cores: a member alone with one thread
        leaves a core idle, so on 2 cores three 12-epoch members took 176 s all at once, 241 s two at a time and
        217 s one after another with two threads each (bench/RESULTS.md, one run each)."""
        return self.max_parallel or max(1, min(members, 2 * max(1, _cores() // self.threads)))


def _cores() -> int:
    """The cores this process may use (not OMP_NUM_THREADS, which may be 1 in a container, nor torch's cap of 8)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Pipe:
    """The child's end of the records pipe, with the `put` a `QueueSink` sends through. A put is written before it
    returns (no feeder thread), so an epoch's record is in the pipe before that epoch's checkpoint is."""

    def __init__(self, connection):
        self.connection = connection

    def put(self, item) -> None:
        self.connection.send(item)


def _stop_training(signum, frame) -> None:
    raise KeyboardInterrupt  # Ultralytics stops, and `train_into` records the run interrupted


def _stop_with_parent() -> None:
    """A child whose parent is gone (killed, out of memory) stops as if told to: nobody would read its records, and a
    re-run must not resume a run an orphan still writes."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)


def become_member() -> None:
    """How a child takes its signals: a terminal's Ctrl-C reaches the parent alone, which stops each child with
    SIGTERM; SIGTERM, or the parent's death, stops training as a Ctrl-C would (the run recorded interrupted)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_training)
    threading.Thread(target=_stop_with_parent, name="npuyolo-parent-watch", daemon=True).start()


def _member(prepared: PreparedRun, connection, attempt: int, log: str, fault_epoch: int | None) -> None:
    """A child's body: train one prepared run, its output to `log`, its records through `connection`. The run's
    closing status (finished, failed with its message, interrupted) is among the records; the exit code says only
    whether it ended normally."""
    become_member()
    with open(log, "a", encoding="utf-8") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    try:
        train_member(prepared, _Pipe(connection), attempt, fault_epoch)
    except BaseException:  # noqa: BLE001 - recorded through the pipe by train_into; the traceback goes to the log
        import traceback

        traceback.print_exc()
        os._exit(1)
    finally:
        connection.close()


@contextlib.contextmanager
def _threads_env(threads: int) -> Iterator[None]:
    """OMP_NUM_THREADS for a child as it starts (a spawned child reads the parent's environment then), as Ray sets it
    for a task: `default_cpu_threads` takes it, and the run records the threads it trained with."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


@dataclass
class _Child:
    process: multiprocessing.process.BaseProcess
    reader: object  # the parent's end of the child's records pipe
    state: MemberState
    ended: bool = False  # the pipe read as ended: the child closed it (or is gone); never waited on again
    received: int = 0  # records read from it: none means the child never started training


class ProcessExecutor:
    """Runs members in child processes on this machine; this process alone writes the registry."""

    def __init__(self, options: ProcessOptions | None = None,
                 on_progress: Callable[[list[MemberState]], None] | None = None):
        self.options = options or ProcessOptions()
        self.on_progress = on_progress
        self._context = multiprocessing.get_context("spawn")  # no forked copy of the parent's registry or threads

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _start(self, registry: Registry, state: MemberState, prepared: PreparedRun) -> _Child:
        state.run_id, state.status, state.error = prepared.run_id, RunStatus.RUNNING, None
        state.epoch = len(registry.epochs(prepared.run_id))  # a resume keeps the checkpointed epochs
        folder = registry.run_path(registry.get_run(prepared.run_id))
        folder.mkdir(parents=True, exist_ok=True)
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_member, name=f"npuyolo:{state.variant}", daemon=False,
                                        args=(prepared, writer, state.attempt, str(folder / LOG_NAME),
                                              fault_epoch() if state.attempt == 0 else None))
        with _threads_env(self.options.threads):
            process.start()
        writer.close()  # the child holds its own copy: the pipe reads as ended when the child is gone
        return _Child(process, reader, state)

    def _launch(self, registry: Registry, state: MemberState, prepare: Callable[[], PreparedRun]) -> _Child:
        """Claim the member's run (`prepare`) and start its child; a start that fails leaves the claimed run
        interrupted with the reason, never `running` (a re-run in this process would be refused as still running)."""
        prepared = prepare()
        try:
            return self._start(registry, state, prepared)
        except BaseException as e:
            reason = stop_reason(e)
            if registry.get_run(prepared.run_id).status == RunStatus.RUNNING:
                registry.set_status(prepared.run_id, RunStatus.INTERRUPTED, error=reason)
            state.status, state.error = RunStatus.INTERRUPTED, reason
            raise

    def run(self, registry: Registry, jobs: list[MemberJob], prepare_retry: Callable[[int], PreparedRun]) -> list[MemberState]:
        """Train every job that is not `skip`, at most `parallel` at once; retry members whose process died."""
        o = self.options
        states = [MemberState(j.variant, j.action, j.epochs, j.run_id,
                              status=RunStatus.FINISHED if j.action == "skip" else QUEUED) for j in jobs]
        for job, state in zip(jobs, states):
            if job.action == "skip" and job.run_id is not None:
                state.status = registry.get_run(job.run_id).status
        todo = [(j, s) for j, s in zip(jobs, states) if j.action != "skip"]
        limit = o.parallel(len(todo))
        children: list[_Child] = []
        failures: list[str] = []

        def progress() -> None:
            if self.on_progress:
                self.on_progress(states)

        def drain(child: _Child) -> bool:
            items = []
            try:
                while not child.ended and child.reader.poll():
                    items.append(child.reader.recv())
            except (EOFError, OSError):  # an ended pipe reads as ready forever: leave it out of every later wait
                child.ended = True
            child.received += len(items)
            apply_records(registry, items, {child.state.run_id: child.state})
            return bool(items)

        try:
            progress()
            while todo or children:
                while todo and len(children) < limit:
                    job, state = todo.pop(0)
                    children.append(self._launch(registry, state, job.prepare))
                    progress()
                wait(_waitables(children), timeout=0.5)
                changed = any([drain(c) for c in children])
                for child in [c for c in children if not c.process.is_alive()]:
                    children.remove(child)
                    child.process.join()
                    drain(child)
                    child.reader.close()
                    retry = self._ended(registry, child, failures)
                    if retry:
                        progress()  # the interruption is shown before the retry starts
                        child.state.attempt += 1
                        run_id = child.state.run_id
                        children.append(self._launch(registry, child.state, lambda: prepare_retry(run_id)))
                    changed = True
                if changed:
                    progress()
        except BaseException as e:
            self._stop(registry, children, drain, stop_reason(e))
            progress()
            raise
        if failures:
            raise ExecutorError(f"{len(failures)} member(s) failed: " + "; ".join(failures))
        return states

    def _ended(self, registry: Registry, child: _Child, failures: list[str]) -> bool:
        """Close the books of a child that ended; True when its member should be tried again."""
        state, code = child.state, child.process.exitcode
        run = registry.get_run(state.run_id)
        if run.status == RunStatus.FINISHED:
            state.status = RunStatus.FINISHED
            return False
        if run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED):  # the child's own record says why
            state.status, state.error = run.status, run.error
            failures.append(f"{state.variant} (run {state.run_id}): {run.status}: {(run.error or '')[:300]}")
            return False
        log = registry.run_path(run, LOG_NAME)
        if child.received == 0 and code is not None and code > 0:  # it never trained: retrying would fail alike
            note = (f"member process could not start (exit code {code}); its output: {log} and this command's "
                    "stderr (an API script needs `if __name__ == '__main__':` for child processes)")
            registry.set_status(state.run_id, RunStatus.FAILED, error=note)
            state.status, state.error = RunStatus.FAILED, note
            failures.append(f"{state.variant} (run {state.run_id}): {note}")
            return False
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        note = f"worker process lost ({how}); attempt {state.attempt + 1}; its output: {log}"
        registry.set_status(state.run_id, RunStatus.INTERRUPTED, error=note)
        state.status, state.error = RunStatus.INTERRUPTED, note
        if state.attempt < self.options.max_retries:
            return True
        failures.append(f"{state.variant} (run {state.run_id}): worker process lost {state.attempt + 1} time(s) ({how});"
                        " left interrupted, run the series again to continue")
        return False

    def _stop(self, registry: Registry, children: list[_Child], drain: Callable[[_Child], bool], reason: str) -> None:
        """Ctrl-C or a parent error: each child is stopped (SIGTERM: it closes its run as interrupted) and given 30 s,
        its records read meanwhile, then killed. Each run left running or closed by the child is marked interrupted
        with the parent's reason (a parent bug must not read as the user's Ctrl-C). A second Ctrl-C cannot cut this
        short: children left unjoined would hold the command's exit until they finished training."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for child in children:
                if child.process.is_alive():
                    child.process.terminate()
            deadline = time.monotonic() + 30
            while any(c.process.is_alive() for c in children) and time.monotonic() < deadline:
                wait(_waitables(children), timeout=0.5)
                for child in children:
                    with contextlib.suppress(Exception):
                        drain(child)
            for child in children:
                if child.process.is_alive():
                    child.process.kill()
                child.process.join()
                with contextlib.suppress(Exception):
                    drain(child)
                run = registry.get_run(child.state.run_id)
                if run.status == RunStatus.RUNNING or (run.status == RunStatus.INTERRUPTED and run.error != reason):
                    registry.set_status(child.state.run_id, RunStatus.INTERRUPTED, error=reason)
                child.state.status = registry.get_run(child.state.run_id).status
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)


def _waitables(children: list[_Child]) -> list:
    """What the parent waits on: each child's pipe until it has ended, and each child's process."""
    return [c.reader for c in children if not c.ended] + [c.process.sentinel for c in children]
