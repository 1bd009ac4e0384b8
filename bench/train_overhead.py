"""Wall time of `npuyolo train` vs plain Ultralytics training of the same model, data and epochs.

Both run in this one process, alternating, so they see the same machine state. The model is L2-relu:
its YAML alone (activation key + attention-free block) builds the identical network in plain
Ultralytics, so both sides train the same graph. Target: ratio <= 1.03.

    python bench/train_overhead.py [--epochs 3] [--imgsz 160] [--train 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import npuyolo  # noqa: F401  (offline switches first)
from npuyolo.data.synth import synthesize
from npuyolo.registry.db import Registry
from npuyolo.train.recipe import Recipe
from npuyolo.train.trainer import train_variant
from npuyolo.variants.build import model_yaml

import yaml  # noqa: E402
from ultralytics import YOLO  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npuyolo-bench-"))
    data = synthesize(work / "data", args.train, max(10, args.train // 4), 320, seed=0)
    recipe = Recipe.load(epochs=args.epochs, imgsz=args.imgsz, workers=args.workers, batch=16)
    yaml_path = work / "yolo11n-L2-relu.yaml"  # Ultralytics infers the scale from the file name
    yaml_path.write_text(yaml.safe_dump(model_yaml("L2-relu", nc=6)))

    # warm-up (label caches, lazy imports, allocator) so neither side pays first-run costs
    YOLO(str(yaml_path)).train(data=str(data), project=str(work / "plain"), name="warmup", exist_ok=True, verbose=False,
                               pretrained=False, amp=False, **{**recipe.ultralytics_args(), "epochs": 1})
    plain, ours = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        YOLO(str(yaml_path)).train(data=str(data), project=str(work / "plain"), name=f"r{r}", exist_ok=True, verbose=False,
                                   pretrained=False, amp=False, **recipe.ultralytics_args())
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        train_variant(Registry(work / f"reg{r}" / "npuyolo.db"), "L2-relu", data, recipe, verbose=False)
        ours.append(time.perf_counter() - t)

    p, o = statistics.median(plain), statistics.median(ours)
    print(f"model L2-relu, {args.train} train images, {args.epochs} epochs at {args.imgsz} px, {args.repeats} repeats each")
    print(f"plain Ultralytics wall s: {', '.join(f'{x:.1f}' for x in plain)} (median {p:.1f})")
    print(f"npuyolo train   wall s: {', '.join(f'{x:.1f}' for x in ours)} (median {o:.1f})")
    pairs = [b / a for a, b in zip(plain, ours)]
    print(f"overhead ratio npuyolo/plain: median {o / p:.3f}, total {sum(ours) / sum(plain):.3f}, "
          f"per pair {', '.join(f'{x:.3f}' for x in pairs)} (target <= 1.03)")


if __name__ == "__main__":
    main()
