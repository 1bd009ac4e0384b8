"""A series planned: each finished member's plan, and the variant x target matrix of what each ships."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from npuyolo.deploy.plan.build import build_plan
from npuyolo.deploy.plan.choose import Plan, TargetPlan
from npuyolo.deploy.plan.records import PlanError
from npuyolo.npu.profiles import target as get_target
from npuyolo.registry.schema import RunStatus

def chosen_row(d: dict) -> dict:
    """The recorded row (`Row.as_dict()`) of a recorded target plan's chosen candidate (`TargetPlan.as_dict()`)."""
    return next(r for r in d["rows"] if r["candidate"]["name"] == d["chosen"])


def cell(tp: TargetPlan | dict) -> dict:
    """One matrix cell: the chosen artefact of one member for one target, with what made it win. Takes a TargetPlan or
    its recorded JSON (`TargetPlan.as_dict()`), so a report can rebuild the matrix from the registry alone."""
    d = tp.as_dict() if isinstance(tp, TargetPlan) else tp
    chosen = chosen_row(d)
    p = chosen["placement"]
    return {"artefact": d["chosen"], "path": chosen["int8_path"], "share_nodes": p["share_nodes"], "off_npu": p["off_npu"],
            "partitions_host": p.get("host_partitions", p["partitions_host"]), "npu_ms": p["npu_ms"],
            "compiler": p.get("compiler") if p.get("compiler_status") == "compiled" else None, "fp32_map50": chosen["fp32"]["map50"],
            "int8_map50": chosen["int8"]["map50"], "retention_map50": chosen["retention"]["map50"],
            "candidates": len(d["rows"]), "runner_up": d["runner_up"], "why_runner_up_lost": d["why_runner_up_lost"],
            "runner_up_lost_on": d.get("runner_up_lost_on")}


def matrix(plans: dict[str, dict]) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """variant -> target -> cell, from each member's plan as recorded (`Plan.as_dict()`); targets in first-seen order."""
    targets: dict[str, None] = {}
    cells: dict[str, dict[str, dict]] = {}
    for variant, plan in plans.items():
        cells[variant] = {}
        for tp in plan["targets"]:
            targets.setdefault(tp["target"])
            cells[variant][tp["target"]] = cell(tp)
    return list(targets), cells


@dataclass
class SeriesPlan:
    """Every finished member of a series planned for the same targets: which model to ship on which NPU."""

    series: str
    targets: list[str]
    plans: dict[str, Plan]  # variant -> its plan (recorded on its run)
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it has no plan (not finished)
    seconds: float = 0.0

    def cells(self) -> dict[str, dict[str, dict]]:
        return matrix({v: p.as_dict() for v, p in self.plans.items()})[1]

    def as_dict(self) -> dict:
        return {"series": self.series, "targets": self.targets, "seconds": self.seconds, "skipped": self.skipped,
                "cells": self.cells(), "plans": {v: {"run_id": p.run_id, "path": p.path} for v, p in self.plans.items()}}


def build_series_plan(registry, name: str, targets: list[str], data: str | Path | None = None, **kwargs) -> SeriesPlan:
    """`build_plan` for each finished member (each plan is recorded on its run, as `deploy plan` records it). `data`
    defaults to the series' own data set; `kwargs` go to `build_plan` (conf, calib, holdout, imgsz, sweep)."""

    started = time.perf_counter()
    if not targets:
        raise PlanError("name at least one target")
    for t in targets:  # an unknown name fails before the first member's export
        get_target(t)
    series = registry.series(name)
    data = data if data is not None else series.spec.get("data")
    if not data:
        raise PlanError(f"series {name!r} records no data set; name one")
    plans, skipped = {}, {}
    for m in series.members:
        if m.status != RunStatus.FINISHED or m.run_id is None:
            skipped[m.variant] = f"not finished ({m.status or 'not started'})"
            continue
        plans[m.variant] = build_plan(registry, str(m.run_id), targets, data, **kwargs)
    if not plans:
        raise PlanError(f"series {name!r} has no finished member to plan")
    return SeriesPlan(name, list(dict.fromkeys(targets)), plans, skipped, time.perf_counter() - started)
