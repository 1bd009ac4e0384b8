"""What every deploy stage shares below scoring: npuyolo's ONNX Runtime session (options, threads), `DeployError`.

INT8 calibration and the evaluator both open their sessions here, so the quantizer needs nothing from the scoring
room above it.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from npuyolo.deploy.errors import DeployError


def max_threads() -> int:
    """More intra-op threads than 4 per core only slows ONNX Runtime down; 100000 of them hung the machine."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads()):
        raise DeployError(f"threads must be 1..{max_threads()} (4 per CPU core), got {threads!r}", param="threads")
    return threads


# ONNX Runtime's intra-op threads spin while they wait for work (its default): turned off in the plan's worker
# processes, which share the cores, where a spinning thread only takes time from the other worker. Spinning changes
# no result; the thread COUNT does (MLAS splits a Conv's sums by it), so every session keeps ORT's default count.
SPINNING = True


def session_options(threads: int | None = None, optimize: bool = True) -> ort.SessionOptions:
    """npuyolo's ONNX Runtime options: quiet, `threads` intra-op threads (None: ORT's default, every core), graph
    optimisations on unless `optimize` is False (a calibration reads tensors as the graph computes them)."""
    check_threads(threads)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not SPINNING:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def session(path: str | Path, threads: int | None = None, optimize: bool = True) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(threads, optimize), providers=["CPUExecutionProvider"])
