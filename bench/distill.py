"""Plain vs distilled student with the same budget and seed: does the LeakyReLU teacher lift the ReLU student?

Trains L4-relu twice on the same data with the report's recipe (same epochs, seed): once plain, once with
npuyolo's distillation from a teacher (a run or .pt, e.g. the L4-leaky of bench/roadsign4_series.py).

    python bench/distill.py --teacher runs/.../L4-leaky-best.pt --data ../shared/datasets/roadsign4/data.yaml --epochs 25 --device 0
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import npuyolo  # noqa: F401
from npuyolo.distill.run import distill
from npuyolo.registry.db import Registry
from npuyolo.train.recipe import Recipe
from npuyolo.train.trainer import train_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher run id/name or .pt")
    ap.add_argument("--data", default="../shared/datasets/roadsign4/data.yaml")
    ap.add_argument("--student", default="L4-relu")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--device", default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--gamma", type=float, default=0.0)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--registry", default="runs/distill-bench/npuyolo.db")
    args = ap.parse_args()

    src = Path(args.data).resolve().parent
    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    shutil.copytree(src, work / src.name)
    data = work / src.name / "data.yaml"
    over = {"epochs": args.epochs, "imgsz": args.imgsz, **({"device": args.device} if args.device else {}),
            **({"workers": args.workers} if args.workers is not None else {})}
    recipe = Recipe.load(**over)
    reg = Registry(args.registry)
    t = time.time()
    plain = train_variant(reg, args.student, data, recipe, name=f"bench-plain-{args.student}")
    t_plain = time.time() - t
    t = time.time()
    kd = distill(reg, args.teacher, args.student, data, recipe, alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                 temperature=args.temperature, name=f"bench-distilled-{args.student}")
    t_kd = time.time() - t
    p, d = reg.epochs(plain.run_id)[-1], reg.epochs(kd.run_id)[-1]
    print(f"\nbudget: {args.epochs} epochs at {args.imgsz} px, seed {recipe.seed}, report recipe; teacher {args.teacher}")
    print(f"KD weights: alpha(cls) {args.alpha}, beta(box) {args.beta}, gamma(feat) {args.gamma}, T {args.temperature}")
    print(f"plain     {args.student}: mAP50 {p.map50:.3f}  mAP50-95 {p.map50_95:.3f}  ({t_plain:.0f} s, run {plain.run_id})")
    print(f"distilled {args.student}: mAP50 {d.map50:.3f}  mAP50-95 {d.map50_95:.3f}  ({t_kd:.0f} s, run {kd.run_id})")
    print(f"difference: mAP50 {(d.map50 - p.map50) * 100:+.1f} points, mAP50-95 {(d.map50_95 - p.map50_95) * 100:+.1f} points")


if __name__ == "__main__":
    main()
