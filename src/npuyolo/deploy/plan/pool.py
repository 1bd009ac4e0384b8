"""The plan's worker processes (`worker_pool`), or none (`_Inline`): where `work`'s jobs run."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from npuyolo.deploy import runtime

__all__ = ["default_workers", "worker_pool"]


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """One worker per core this process may use; 1 (everything in this process) off Linux."""
    return _usable_cores() if sys.platform.startswith("linux") else 1


def _warm() -> int:
    return os.getpid()


@contextlib.contextmanager
def worker_pool(workers: int | None = None) -> Iterator[ProcessPoolExecutor | _Inline]:
    """The plan's worker processes, started at once so that their start overlaps the parent's exports.

    Forked from a forkserver that has imported the jobs' module, `work` (and so PyTorch, ONNX Runtime, Ultralytics) once, never
    from the parent: the parent may hold threads (the CLI's progress spinner, a user's thread pool, OpenMP) whose
    locks a forked child would inherit held. One worker: no process at all, every job inline."""
    n = default_workers() if workers is None else workers
    if n == 1:
        yield _Inline()
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["npuyolo.deploy.plan.work"])  # the jobs' module: PyTorch, ONNX Runtime, Ultralytics once
    ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init)
    try:
        for _ in range(n):
            ex.submit(_warm)
        yield ex
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)  # an error or Ctrl-C: no queued job runs after it
        raise
    ex.shutdown(wait=True)


def _worker_init() -> None:
    runtime.SPINNING = False
    try:
        import torch

        torch.set_num_threads(1)  # the host-side NMS; a forked OpenMP pool is not to be trusted
    except ImportError:  # pragma: no cover
        pass


class _Inline:
    """ProcessPoolExecutor's `submit` run at once, in this process: the one-worker road (and the reference). An error
    (or Ctrl-C) leaves at once, as it would from a plan without workers."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future
