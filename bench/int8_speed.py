"""FP32 vs INT8 (QDQ, ONNX Runtime CPU) latency for L0-silu, L4-relu and L4-leaky at 640 px, in one run.

Also prints each model's latency against the time its MACs would take at this CPU's measured float32 peak.
Peak: the best of 6 timed 2048x2048x2048 float32 matrix products through NumPy's BLAS with its default
threads, all cores here (2 FLOPs per MAC). Weights are untrained (placement and speed do not depend on them); calibration
uses 16 synthetic sign images.

    python bench/int8_speed.py [--imgsz 640] [--runs 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import npuyolo  # noqa: F401
from npuyolo.data.synth import synthesize
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.infer.latency import bench_onnx
from npuyolo.deploy.int8.quantize import quantize_onnx
from npuyolo.variants.build import build_model


def measured_peak_gflops() -> float:
    """Best of 6 float32 2048^3 products through NumPy's BLAS (its default threads: all cores here)."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    b = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    best = float("inf")
    for _ in range(6):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npuyolo-int8speed-"))
    data = synthesize(work / "calib", 16, 4, 320, seed=0)
    peak = measured_peak_gflops()
    print(f"CPU float32 peak (NumPy 2048^3 matmul, BLAS default threads, {os.cpu_count()} cores): {peak:.1f} GFLOP/s")
    print(f"{'model':10s} {'GMACs':>6s} {'FP32 p50':>9s} {'INT8 p50':>9s} {'speed-up':>8s} {'ideal FP32 ms':>13s} {'FP32/ideal':>10s}")
    for variant in ("L0-silu", "L4-relu", "L4-leaky"):
        fp32 = export_onnx(build_model(variant, nc=6), work / f"{variant}-fp32.onnx", imgsz=args.imgsz)
        int8 = work / f"{variant}-int8.onnx"
        quantize_onnx(fp32, int8, data, calib=16, method="minmax", per_channel=True)
        f = bench_onnx(fp32, runs=args.runs, threads=args.threads)
        q = bench_onnx(int8, runs=args.runs, threads=args.threads)
        ideal_ms = f["macs"] * 2 / (peak * 1e9) * 1000
        print(f"{variant:10s} {f['macs'] / 1e9:6.2f} {f['model']['p50_ms']:7.1f}ms {q['model']['p50_ms']:7.1f}ms "
              f"{f['model']['p50_ms'] / q['model']['p50_ms']:7.2f}x {ideal_ms:11.1f}ms {f['model']['p50_ms'] / ideal_ms:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
