"""Hybrid activation search: LeakyReLU only where it pays, ranked by accuracy against NPU compatibility."""

from __future__ import annotations

from pathlib import Path

from npuyolo.deploy.check import check_model, record
from npuyolo.npu.profiles import target as get_target
from npuyolo.registry.schema import RunStatus
from npuyolo.train.series import SeriesSpec, rank_series, run_series
from npuyolo.variants.spec import parse_variant

DEFAULT_CANDIDATES = [
    "L4-hybrid:backbone=relu,neck=relu,head=relu",
    "L4-hybrid:backbone=relu,neck=relu,head=leaky",
    "L4-hybrid:backbone=relu,neck=leaky,head=leaky",
    "L4-hybrid:backbone=leaky,neck=relu,head=relu",
    "L4-hybrid:backbone=leaky,neck=leaky,head=leaky",
]


def pareto_front(rows: list[dict], x: str = "npu_share", y: str = "map50") -> list[int]:
    """Indices of rows no other row beats on both x and y (higher is better on both)."""
    front = []
    for i, a in enumerate(rows):
        if a.get(x) is None or a.get(y) is None:
            continue
        dominated = any(b.get(x) is not None and b.get(y) is not None and b[x] >= a[x] and b[y] >= a[y]
                        and (b[x] > a[x] or b[y] > a[y]) for j, b in enumerate(rows) if j != i)
        if not dominated:
            front.append(i)
    return front


def npu_shares(registry, rows: list[dict], target: str, imgsz: int) -> None:
    """Add each finished member's node share on `target` (checked now if not recorded yet)."""

    for r in rows:
        if r["status"] != RunStatus.FINISHED:
            r["npu_share"] = None
            continue
        existing = [c for c in registry.npu_checks(run_id=r["run_id"]) if c.target == target]
        if not existing:
            result = check_model(registry, str(r["run_id"]), [target], imgsz=imgsz)
            record(registry, result, None)
            existing = [c for c in registry.npu_checks(run_id=r["run_id"]) if c.target == target]
        r["npu_share"] = existing[-1].share_nodes


def hybrid_search(registry, data: str | Path, candidates: list[str] | None = None, budget: int = 10, imgsz: int = 640,
                  target: str = "relu-only", name: str = "hybrid", recipe: dict | None = None, verbose: bool = True,
                  executor=None) -> list[dict]:
    """Train every candidate as one series (same recipe, `budget` epochs), check it on `target`, mark the Pareto front.

    `executor` (a `RayExecutor`) trains the candidates in parallel; without it they train one after another here.
    """

    get_target(target)  # fail before training on an unknown target or a bad name
    variants = [parse_variant(v).name for v in (candidates or DEFAULT_CANDIDATES)]
    spec = SeriesSpec(name=name, data=str(Path(data).resolve()), variants=variants,
                      recipe={**(recipe or {}), "epochs": budget, "imgsz": imgsz})
    run_series(registry, spec, verbose=verbose, executor=executor)
    rows = rank_series(registry, name)
    npu_shares(registry, rows, target, imgsz)
    front = set(pareto_front(rows))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return rows
