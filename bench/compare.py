"""`npuyolo compare` of the committed seed-experiment members (320 px, or 640 px) on roadsign4 val: how long it takes, and what it says.

    python bench/compare.py [--size 320|640] [--data ../shared/datasets/roadsign4/data.yaml] [--work /tmp/compare-bench] [--bootstrap 1000]

Two timed calls through the API (the same service the CLI calls): the first scores every member's best.pt on val
(one inference pass each) and keeps its per-image statistics; the second reads them back and runs only the paired
bootstrap (issue 31's target: <= 10 s for 1,000 resamples of the four members on the project's 2-core CPU). The
figures go to bench/compare_320.json; each member's statistics are copied beside its weights (`val-stats.npz`), so
that later analyses (seed replicates) need no inference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import npuyolo  # noqa: F401  (offline guards before Ultralytics)
from npuyolo.api import Workspace
from npuyolo.paths import write_text
from npuyolo.stats.compare import seed_gaps
from npuyolo.stats.matched import load_stats
from npuyolo.train.records import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "bench" / "seed_experiment"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "roadsign4" / "data.yaml"


def members(size: int, names: list[str] | None) -> list[Path]:
    found = sorted(p.parent for p in (SEED / str(size)).glob("*/best.pt"))
    return [p for p in found if names is None or p.name in names]


def arm_of(member: str) -> tuple[str, int]:
    """`L4-leaky-s2` -> (`L4-leaky`, 2); a member without `-sN` is seed 0."""
    match = re.fullmatch(r"(.+)-s(\d+)", member)
    return (match.group(1), int(match.group(2))) if match else (member, 0)


def seed_arms(chosen: list[Path]) -> dict[str, dict[int, Path]]:
    """The members grouped by arm, seed -> folder (with its val-stats.npz)."""
    arms: dict[str, dict[int, Path]] = {}
    for member in chosen:
        arm, seed = arm_of(member.name)
        arms.setdefault(arm, {})[seed] = member
    return arms


def replicate_gaps(chosen: list[Path], pairs: list[tuple[str, str]], n: int, seed: int) -> list[dict]:
    """Each (A, B) pair of arms with two or more seeds in either: mean +- sd over seeds and the gap's interval
    combining image and seed variation (`stats.compare.seed_gaps`); one-seed arms are labelled so."""
    arms = seed_arms(chosen)
    out = []
    for a, b in pairs:
        if a not in arms or b not in arms or max(len(arms[a]), len(arms[b])) < 2:
            continue
        stats_a = [load_stats(arms[a][k] / "val-stats.npz") for k in sorted(arms[a])]
        stats_b = [load_stats(arms[b][k] / "val-stats.npz") for k in sorted(arms[b])]
        gaps = seed_gaps(stats_a, stats_b, a, b, n=n, seed=seed)
        out.append({"a": a, "b": b, "seeds_a": sorted(arms[a]), "seeds_b": sorted(arms[b]),
                    "metrics": {m: g.as_dict() for m, g in gaps.items()}})
    return out


def arm_text(gap: dict, side: str) -> str:
    """One arm of a `SeedGap.as_dict()` in points: mean +- sd over seeds, or its one value said to be one seed."""
    mean, sd = gap[f"{side}_mean"] * 100, gap[f"{side}_sd"] * 100
    return f"{mean:.1f} +- {sd:.1f}" if len(gap[f"{side}_values"]) > 1 else f"{mean:.1f} (one seed)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/npuyolo-compare-bench"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--size", type=int, default=320, choices=[320, 640], help="which committed members: bench/seed_experiment/SIZE")
    ap.add_argument("--members", nargs="+", default=None, help="member folders under bench/seed_experiment/SIZE")
    ap.add_argument("--out", type=Path, default=None, help="[default: bench/compare_SIZE.json]")
    args = ap.parse_args(argv)
    args.out = args.out or ROOT / "bench" / f"compare_{args.size}.json"
    chosen = members(args.size, args.members)
    if len(chosen) < 2:
        print(f"need two or more committed members under {SEED / str(args.size)}", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "roadsign4"
    if not (data / "data.yaml").is_file():  # a writable copy: Ultralytics writes label caches beside the labels
        shutil.copytree(args.data.parent, data)
    ws = Workspace(args.work / "runs" / "npuyolo.db")
    refs = [str(m / "best.pt") for m in chosen]
    timings = {}
    t = time.perf_counter()
    cold = ws.compare(refs, data / "data.yaml", bootstrap=args.bootstrap, draw=False)
    timings["first_call_s"] = time.perf_counter() - t
    t = time.perf_counter()
    warm = ws.compare(refs, data / "data.yaml", bootstrap=args.bootstrap, plot=args.work / f"forest_{args.size}.png")
    timings["from_stored_statistics_s"] = time.perf_counter() - t
    assert all(m.cached for m in warm.models) and warm.comparison == cold.comparison
    for member, m in zip(chosen, warm.models):
        shutil.copyfile(m.stats_file, member / "val-stats.npz")
    c = warm.comparison
    print(f"{len(chosen)} members, {c.images} images, {args.bootstrap} paired resamples; machine: {cpu_model()}, "
          f"{os.cpu_count()} cores")
    print(f"first call (scores every model, keeps its statistics): {timings['first_call_s']:.1f} s")
    print(f"from stored statistics: {timings['from_stored_statistics_s']:.2f} s (target <= 10 s)")
    for s in c.models:
        print(f"  {s.label:28s} mAP50 {s.map50.value:.3f} ({s.map50.low:.3f}-{s.map50.high:.3f})  "
              f"mAP50-95 {s.map50_95.value:.3f} ({s.map50_95.low:.3f}-{s.map50_95.high:.3f})")
    for p in c.pairs:
        if p.metric == "map50":
            d = p.diff.pp()
            print(f"  {p.a} - {p.b}: {d.value:+.1f} pp ({d.low:+.1f} to {d.high:+.1f}): {p.text}")
    replicates = replicate_gaps(chosen, [("L4-leaky", "L4-relu")], args.bootstrap, 0)
    for r in replicates:
        g = r["metrics"]["map50"]
        print(f"  seeds {r['a']} {r['seeds_a']} vs {r['b']} {r['seeds_b']}: mAP50 {arm_text(g, 'a')} vs {arm_text(g, 'b')}; "
              f"gap {g['gap']['value'] * 100:+.1f} pp ({g['gap']['low'] * 100:+.1f} to {g['gap']['high'] * 100:+.1f}, "
              f"images and seeds): {g['verdict']}")
    write_text(args.out, json.dumps({"machine": {"cpu": cpu_model(), "cores": os.cpu_count()}, "timings": timings,
                                     **warm.as_dict(), "seed_gaps": replicates}, indent=2, default=str) + "\n")
    print(f"written: {args.out}; forest plot: {warm.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
