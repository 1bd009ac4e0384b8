"""Wall time of one 3-member series: serial (`--executor local`) vs child processes (`--executor process`) vs Ray
(`--executor ray`), on this machine.

Runs of the same series, each into a fresh registry:
  serial      one member after another in this process (torch uses every core);
  process     members side by side in child processes, one torch thread each, all at once (the default), and
              as many at once as there are cores (--max-parallel <cores>);
  ray x1      Ray, one member at a time with every CPU (--max-parallel 1 --cpus-per-member <all>): the same work as
              serial, so the difference is Ray's cost (runtime start-up, worker start, records shipped to the driver);
  ray         Ray, members side by side (--cpus-per-member 1): what `--executor ray` gives on this machine.
Every Ray wall time includes starting and stopping the local Ray runtime, as a user's command pays it; the Ray rows
are left out where Ray is not installed (or with --no-ray).

    python bench/series_parallel.py [--train 120] [--imgsz 160] [--epochs 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import npuyolo  # noqa: F401  (offline switches first)
from npuyolo.data.synth import synthesize
from npuyolo.registry.db import Registry
from npuyolo.train.executors import ProcessExecutor, ProcessOptions, RayExecutor, RayOptions
from npuyolo.train.series import SeriesSpec, run_series

VARIANTS = ["L4-relu", "L4-leaky", "L2-relu6"]


def timed_series(spec: SeriesSpec, db: Path, executor) -> tuple[float, Registry]:
    reg = Registry(db)
    t = time.perf_counter()
    rows = run_series(reg, spec, verbose=False, executor=executor)
    wall = time.perf_counter() - t
    assert all(r["status"] == "finished" for r in rows), rows
    return wall, reg


def member_seconds(reg: Registry) -> list[float]:
    """Each member's recorded training time (sum of its epochs' times, as the registry keeps it)."""
    return [r.duration_s for r in reg.runs()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=120)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true", help="leave out the Ray rows")
    args = ap.parse_args()
    try:
        import ray
    except ImportError:
        ray = None
    ray = None if args.no_ray else ray

    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="npuyolo-bench-series-"))
    data = synthesize(work / "data", args.train, max(8, args.train // 4), args.imgsz, seed=0)
    recipe = {"epochs": args.epochs, "imgsz": args.imgsz, "batch": 16, "workers": 0, "plots": False}
    spec = SeriesSpec(name="bench", data=str(data), variants=VARIANTS, recipe=recipe)

    serial, reg_s = timed_series(spec, work / "serial" / "npuyolo.db", None)
    proc_all, reg_a = timed_series(spec, work / "proc3" / "npuyolo.db", ProcessExecutor(ProcessOptions(max_parallel=len(VARIANTS))))
    proc_cores, reg_c = timed_series(spec, work / "proc" / "npuyolo.db", ProcessExecutor(ProcessOptions(max_parallel=cpus)))

    from npuyolo.train.trainer import default_cpu_threads

    print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs; a serial member trains with "
          f"{default_cpu_threads()} torch thread(s), a process or Ray member with 1")
    print(f"series: {len(VARIANTS)} members ({', '.join(VARIANTS)}), {args.train} train images, {args.epochs} epochs "
          f"at {args.imgsz} px, batch 16, workers 0")
    print(f"serial (local)                 wall {serial:7.1f} s   members' train time {sum(member_seconds(reg_s)):6.1f} s "
          f"({', '.join(f'{x:.1f}' for x in member_seconds(reg_s))})")
    print(f"process, all {len(VARIANTS)} at once       wall {proc_all:7.1f} s   members' train time {sum(member_seconds(reg_a)):6.1f} s")
    print(f"process, {cpus} at once (the cores)  wall {proc_cores:7.1f} s   members' train time "
          f"{sum(member_seconds(reg_c)):6.1f} s")
    print(f"speed-up serial / process all at once (the default): {serial / proc_all:.2f}x; / process, {cpus} at once: "
          f"{serial / proc_cores:.2f}x")
    if ray is None:
        print("Ray rows left out (not installed, or --no-ray)")
        return
    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.shutdown()
    startup = time.perf_counter() - t
    ray_one, reg_1 = timed_series(spec, work / "ray1" / "npuyolo.db",
                                  RayExecutor(RayOptions(max_parallel=1, cpus_per_member=cpus)))
    ray_par, reg_p = timed_series(spec, work / "rayp" / "npuyolo.db", RayExecutor(RayOptions(cpus_per_member=1)))
    print(f"ray, one at a time, {cpus} CPUs    wall {ray_one:7.1f} s   members' train time {sum(member_seconds(reg_1)):6.1f} s")
    print(f"ray, side by side, 1 CPU each  wall {ray_par:7.1f} s   members' train time {sum(member_seconds(reg_p)):6.1f} s")
    print(f"Ray runtime start + stop alone: {startup:.1f} s")
    print(f"Ray overhead (ray one-at-a-time vs serial): {ray_one - serial:+.1f} s = {(ray_one / serial - 1):+.1%}")
    print(f"speed-up serial / ray side by side: {serial / ray_par:.2f}x")


if __name__ == "__main__":
    main()
