"""Time `deploy plan`: one run, six targets, no vendor compiler (issue 22's target: at most 2 minutes at 320 px on the
project's 2-core CPU machine).

    python bench/deploy_plan.py RUN --data data.yaml --registry runs/npuyolo.db [--targets ...] [--imgsz 320]
    python bench/deploy_plan.py --synth [--workdir DIR]   # 64/16 synthetic images at 320 px, L4-leaky, 1 epoch

Compilers are hidden (an empty compilers folder) so the figure is the plan's own cost, the same on every machine.
It prints the total time and each stage's share (export, rewrite, quantize with its one calibration sweep,
evaluate, place, and what no stage covers), then the choice per target.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

TARGETS = ["rknn-rk3588", "ethos-u55", "amd-dpu", "edgetpu", "hailo-8", "relu-only"]


def synth_run(work: Path) -> tuple[str, Path, Path]:
    """A short-trained run to plan: synthetic 64 train / 16 val images at 320 px, L4-leaky for one epoch."""
    from npuyolo import Workspace
    from npuyolo.data.synth import synthesize

    data = synthesize(work / "data", n_train=64, n_val=16, imgsz=320, seed=0, force=True)  # --workdir reused: the same set
    db = work / "npuyolo.db"
    run = Workspace(db).train("L4-leaky", data, epochs=1, imgsz=320, batch=8, workers=0, plots=False, name="bench-leaky",
                              verbose=False)
    return str(run.id), Path(data), db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="run id/name or .pt (omit with --synth)")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--registry", type=Path)
    ap.add_argument("--targets", nargs="+", default=TARGETS)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--calib", type=int, default=32, help="calibration images (the synthetic set has 64)")
    ap.add_argument("--holdout", type=int, default=32, help="held-back images the calibration sweep is judged on")
    ap.add_argument("--synth", action="store_true", help="train the synthetic run first (not timed)")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--workers", type=int, help="plan worker processes [default: one per core]")
    ap.add_argument("--no-second", action="store_true", help="skip the second (reusing) plan")
    args = ap.parse_args()
    if args.synth:
        work = args.workdir or Path(tempfile.mkdtemp(prefix="npuyolo-plan-bench-"))
        args.model, args.data, args.registry = synth_run(work)
    elif not (args.model and args.data and args.registry):
        ap.error("name MODEL, --data and --registry, or use --synth")
    os.environ["NPUYOLO_COMPILERS_DIR"] = tempfile.mkdtemp(prefix="npuyolo-no-compilers-")  # the plan's own cost only

    from npuyolo import Workspace
    from npuyolo.deploy.plan.work import default_workers

    workers = args.workers or default_workers()

    def timed(reuse: bool):
        started, cpu = time.perf_counter(), _cpu_seconds()
        plan = Workspace(args.registry).plan(args.model, args.targets, args.data, imgsz=args.imgsz, calib=args.calib,
                                             holdout=args.holdout, workers=workers, reuse=reuse)
        return plan, time.perf_counter() - started, _cpu_seconds() - cpu

    plan, wall, cpu = timed(reuse=False)  # a first plan: everything built and scored
    print(f"deploy plan: {plan.model_ref}, {len(plan.targets)} targets, {args.imgsz} px, no compilers, "
          f"calibration sweep -> {plan.calibration} ({args.calib} images, {args.holdout} held back), {workers} worker "
          f"process(es)")
    print(f"total {wall:.1f} s wall (plan's own clock {plan.seconds:.1f} s), {cpu:.1f} s CPU in this process (with "
          f"workers, theirs is not counted: they are the forkserver's children; on a shared machine the wall time also "
          f"holds other jobs' turns), load average {os.getloadavg()[0]:.1f} at the end")
    stages = dict(plan.stages)
    print("  busy seconds per stage (quantize and evaluate: summed over the workers, which run side by side):")
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<44} {seconds:6.1f} s")
    files = {p for tp in plan.targets for r in tp.rows for p in (r.fp32_path, r.int8_path)}
    rows = sum(len(tp.rows) for tp in plan.targets)
    print(f"{rows} candidate rows, {len(files)} distinct ONNX files built or reused")
    for tp in plan.targets:
        c = tp.chosen
        print(f"  {tp.target:<12} {c.candidate.name:<32} NPU {c.placement.share_nodes:6.1%}  "
              f"INT8 mAP50 {c.int8.map50:.3f}")
    if not args.no_second:
        again, wall2, cpu2 = timed(reuse=True)  # the same plan asked again: INT8 files and scores from plan-cache.json
        same = [a.chosen.candidate.name for a in again.targets] == [p.chosen.candidate.name for p in plan.targets]
        print(f"second plan of the same run (reuse): {wall2:.1f} s wall, {cpu2:.1f} s CPU; same choices: {same}")
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(Path(path).name.encode() + hashlib.sha256(Path(path).read_bytes()).digest())
    print(f"content of the {len(files)} files (sha256 over names and bytes): {digest.hexdigest()[:16]}")


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a plan without workers: all of it)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


if __name__ == "__main__":
    main()
