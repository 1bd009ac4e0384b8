"""ONNX Runtime CPU latency of an L4-leaky model before and after the LeakyReLU rewrite (same run).

    python bench/leaky_rewrite.py [--imgsz 640] [--runs 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import npuyolo  # noqa: F401
from npuyolo.deploy.export import export_onnx
from npuyolo.npu.rewrite import rewrite_leaky
from npuyolo.variants.build import build_model


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npuyolo-leaky-"))
    path = export_onnx(build_model("L4-leaky", nc=4), work / "l4-leaky.onnx", imgsz=args.imgsz, head="npu")
    original = onnx.load(str(path))
    variants = {"original (LeakyRelu)": original}
    for method in ("relu-decomp", "relu-exact", "max"):
        variants[f"rewritten {method}"] = rewrite_leaky(original, method)[0]
    sessions = {k: session(m, args.threads) for k, m in variants.items()}
    x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    for s in sessions.values():  # warm-up
        for _ in range(5):
            s.run(None, {"images": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.runs):  # interleaved so drift hits every variant alike
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"images": x})
            times[k].append((time.perf_counter() - t) * 1000)
    base = statistics.median(times["original (LeakyRelu)"])
    print(f"L4-leaky NPU head, {args.imgsz}x{args.imgsz}, ONNX Runtime {ort.__version__} CPU, {args.threads} threads, "
          f"{args.runs} interleaved runs after 5 warm-up")
    for k, t in times.items():
        nodes = len(variants[k].graph.node)
        p50 = statistics.median(t)
        p90 = float(np.percentile(t, 90))
        print(f"{k:26s} nodes {nodes:4d}  p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  ratio vs original {p50 / base:.3f}")


if __name__ == "__main__":
    main()
