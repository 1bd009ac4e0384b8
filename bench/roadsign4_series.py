"""Train a series on the real roadsign4 photos with the report's recipe and print the ranking.

Defaults mirror the user's experiment (LeakyReLU level 4 vs its ReLU twin, SGD lr0 0.003 -> 0.0001,
batch 16, 640 px, seed 0) with fewer epochs. On 2 CPU cores one epoch at 640 px takes minutes; use a GPU
(`--device 0`) or lower --imgsz / --epochs. The registry it writes feeds `npuyolo report` and the INT8 bench.

    python bench/roadsign4_series.py --data ../shared/datasets/roadsign4/data.yaml --epochs 30 --device 0
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import npuyolo  # noqa: F401
from npuyolo.registry.db import Registry
from npuyolo.train.series import SeriesSpec, run_series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/roadsign4/data.yaml")
    ap.add_argument("--variants", nargs="+", default=["L4-leaky", "L4-relu"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--device", default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--registry", default="runs/roadsign4/npuyolo.db")
    ap.add_argument("--name", default="roadsign4-v3")
    args = ap.parse_args()

    src = Path(args.data).resolve().parent
    work = Path(tempfile.mkdtemp(prefix="roadsign4-"))
    shutil.copytree(src, work / src.name)  # Ultralytics writes label caches beside the labels
    recipe = {"epochs": args.epochs, "imgsz": args.imgsz}
    if args.device is not None:
        recipe["device"] = args.device
    if args.workers is not None:
        recipe["workers"] = args.workers
    spec = SeriesSpec(name=args.name, data=str(work / src.name / "data.yaml"), variants=args.variants, recipe=recipe)
    reg = Registry(args.registry)
    t = time.time()
    rows = run_series(reg, spec, on_member=lambda v, a: print(f"== {v}: {a}", flush=True), verbose=True)
    print(f"\nseries {args.name}: {len(args.variants)} variants x {args.epochs} epochs at {args.imgsz} px in {time.time() - t:.0f} s")
    print(f"{'variant':10s} {'run':>4s} {'mAP50':>7s} {'mAP50-95':>9s} {'P':>7s} {'R':>7s}")
    for r in rows:
        print(f"{r['variant']:10s} {r['run_id']!s:>4s} {r['map50'] or 0:7.3f} {r['map50_95'] or 0:9.3f} {r['precision'] or 0:7.3f} {r['recall'] or 0:7.3f}")


if __name__ == "__main__":
    main()
