"""Start-up time of `import npuyolo` and of `npuyolo --help`, this checkout against another commit.

Issue 23 moved imports to the top of their modules; that must not slow the start. Both checkouts are timed in turns
(A, B, A, B, ...) so that whatever else the machine does falls on both alike; the median of each is printed.

    python bench/startup_time.py --before 44bf00a --runs 15
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBES = {
    "import npuyolo": [sys.executable, "-c", "import npuyolo"],
    "npuyolo --help": [sys.executable, "-c", "import sys; sys.argv = ['npuyolo', '--help']; from npuyolo.cli import app; app()"],
}


def timed(cmd: list[str], src: Path, pycache: Path) -> float:
    """One start. Bytecode is written and read (in `pycache`, one per side) whatever the environment says: a user's
    installed npuyolo starts from .pyc files, and with PYTHONDONTWRITEBYTECODE=1 (set on this machine) every start would
    compile every imported module of ours again, timing the compiler on the amount of source instead of the start."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(src), "PYTHONPYCACHEPREFIX": str(pycache)}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="commit to compare with (checked out in a temporary worktree)")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sides = {"before": before / "src", "after": REPO / "src"}
            caches = {side: Path(tmp) / f"pycache-{side}" for side in sides}
            for side, src in sides.items():  # warm the file cache and write the bytecode of both once
                for cmd in PROBES.values():
                    timed(cmd, src, caches[side])
            times = {(p, s): [] for p in PROBES for s in sides}
            for _ in range(args.runs):
                for probe, cmd in PROBES.items():
                    for side, src in sides.items():
                        times[probe, side].append(timed(cmd, src, caches[side]))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], check=False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.runs} runs each, interleaved, from bytecode; before = {args.before}")
    print(f"{'probe':<16} {'before (s)':>10} {'after (s)':>10} {'change':>8}")
    for probe in PROBES:
        b, a = (statistics.median(times[probe, s]) for s in ("before", "after"))
        print(f"{probe:<16} {b:>10.3f} {a:>10.3f} {(a - b) / b:>+8.1%}")


if __name__ == "__main__":
    main()
