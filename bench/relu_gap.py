"""The relu-gap study at demo scale on this machine: L4-leaky vs L4-relu vs distilled vs annealed, 2 seeds.

    python bench/relu_gap.py [--epochs 12] [--imgsz 160] [--seeds 0,1] [--data DATA] [--work DIR]

Without --data it synthesizes the demo's set (300 train / 60 val images at 320 px, seed 0). The recipe is the
demo's shortened one (lr0 0.01 from scratch, 1 warm-up epoch, batch 16). Prints the study table and the
wall time; the reports land in WORK/runs/reports/study-relu-gap/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path, default=Path("bench_out/relu_gap"))
    ap.add_argument("--target", action="append", default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from npuyolo.data.synth import synthesize

        data = synthesize(args.work / "synth", n_train=300, n_val=60, imgsz=320, seed=0, force=True)  # a re-run: the same set
    recipe = args.work / "recipe.yaml"
    recipe.write_text("{lr0: 0.01, warmup_epochs: 1, batch: 16}\n")
    targets = [x for t in (args.target or ["relu-only", "rknn-rk3588", "edgetpu"]) for x in ("-t", t)]
    t0 = time.time()
    cmd = [sys.executable, "-m", "npuyolo.cli", "study", "relu-gap", "--data", str(data), "--epochs", str(args.epochs),
           "--imgsz", str(args.imgsz), "--seeds", args.seeds, "--recipe", str(recipe), *targets, "--json",
           "--registry", str(args.work / "runs" / "npuyolo.db")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        sys.exit(out.returncode)
    result = json.loads(out.stdout)
    print(f"relu-gap study: {args.epochs} epochs at {args.imgsz} px, seeds {args.seeds}, data {data}")
    print("| route | runs | mAP50 mean ± sd (range) | mAP50-95 mean ± sd | gap to L4-leaky | beyond spread | train s |"
          + "".join(f" {t} |" for t in args.target or ["relu-only", "rknn-rk3588", "edgetpu"]))
    print("|---|---|---|---|---|---|---|" + "---|" * len(args.target or [1, 2, 3]))
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in result["rows"]:
        gap = "-" if r["route"] == "leaky" or r["gap_pp"]["map50"] is None else f"{r['gap_pp']['map50']:+.1f} pp"
        beyond = {None: "-", True: "yes", False: "no"}[r["beyond_spread"]["map50"]]
        npu = "".join(f" {r['npu'][t]['share_nodes'] * 100:.1f}% |" if t in r["npu"] else " - |"
                      for t in (args.target or ["relu-only", "rknn-rk3588", "edgetpu"]))
        print(f"| {r['route']} ({r['variant']}) | {', '.join(map(str, r['runs']))} | {f(r['mean']['map50'])} ± {f(r['std']['map50'])}"
              f" ({f(r['spread']['map50'])}) | {f(r['mean']['map50_95'])} ± {f(r['std']['map50_95'])} | {gap} | {beyond} |"
              f" {f(r['cost_s'], 0)} |{npu}")
    print(f"reports: {', '.join(result['reports'])}\nwall time: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
