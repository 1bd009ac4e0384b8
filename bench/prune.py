"""Prune a trained run, fine-tune it, and print size, accuracy and ONNX Runtime latency before and after.

    python bench/prune.py --run bench-plain-L4-relu --registry runs/distill-bench/npuyolo.db --ratio 0.3 --finetune-epochs 10
"""

from __future__ import annotations

import argparse

import npuyolo  # noqa: F401
from npuyolo.prune.prune import prune_run
from npuyolo.registry.db import Registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--method", default="l1")
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()

    r = prune_run(Registry(args.registry), args.run, ratio=args.ratio, method=args.method,
                  finetune_epochs=args.finetune_epochs, data=args.data).as_dict()
    print(f"\nprune {args.method} ratio {args.ratio} of run {r['parent_run']}, fine-tuned {args.finetune_epochs} epochs -> run {r['run_id']}")
    for label, key in (("parent", "before"), ("pruned, before fine-tune", "pruned_before_finetune"), ("pruned + fine-tuned", "after")):
        v = r[key]
        print(f"{label:26s} params {v['parameters']:>9,}  GFLOPs {v['gflops']:6.2f}  mAP50 {v['map50']:.3f}  mAP50-95 {v['map50_95']:.3f}")
    print(f"ONNX Runtime CPU p50: parent {r['ort_p50_ms']['parent']:.1f} ms, pruned {r['ort_p50_ms']['pruned']:.1f} ms "
          f"({r['ort_p50_ms']['parent'] / r['ort_p50_ms']['pruned']:.2f}x)")


if __name__ == "__main__":
    main()
