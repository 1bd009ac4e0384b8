"""ONNX Runtime CPU latency of a model alone and of the whole pipeline (pre-process, model, decode, NMS)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from npuyolo.data.calibration import letterbox
from npuyolo.deploy.decode import nms
from npuyolo.deploy.eval.evaluate import load_deployable
from npuyolo.deploy.runtime import DeployError, check_threads
from npuyolo.npu.graph import load_graph, macs
from npuyolo.paths import file_problem


def _stats(ms: list[float]) -> dict:
    return {"p50_ms": statistics.median(ms), "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": statistics.fmean(ms), "throughput_fps": 1000.0 / statistics.fmean(ms), "runs": len(ms)}


def model_macs(path: str | Path) -> int:

    g = load_graph(path)
    return sum(macs(n, g) for n in g.nodes)


def bench_onnx(path: str | Path, runs: int = 50, warmup: int = 10, threads: int | None = None, image: np.ndarray | None = None) -> dict:
    """Timed runs after warm-up, model alone and end to end on one BGR image (a fixed random one by default)."""
    check_threads(threads)
    path = Path(path)
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise DeployError(f"artefact not found: {path}" if why == "not found" else f"{path} {why}")
    if runs < 1:
        raise DeployError("runs must be at least 1", param="runs")
    model = load_deployable(path, threads)  # a broken or hand-edited file is one error, not an ONNX Runtime traceback
    imgsz, sess, name = model.imgsz, model.sess, model.input_name
    image = image if image is not None else np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    x = letterbox(image, imgsz)[None]

    def pipeline() -> None:
        raw = sess.run(None, {name: letterbox(image, imgsz)[None]})
        nms(model.decode(raw), conf=0.25, iou=0.7)

    for _ in range(warmup):
        sess.run(None, {name: x})
        pipeline()
    model_ms, pipe_ms = [], []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        model_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        pipeline()
        pipe_ms.append((time.perf_counter() - t) * 1000)
    return {"artefact": str(path), "imgsz": imgsz, "threads": threads or os.cpu_count(), "macs": model_macs(path),
            "model": _stats(model_ms), "pipeline": _stats(pipe_ms)}
