"""A recorded plan (plan.json), read back: every value a report reads, of its type, validated whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from npuyolo.deploy.plan.records import PlanError
from npuyolo.paths import FileReadError, read_regular_file

MAX_PLAN_BYTES = 16 << 20  # a plan of 4 targets x 7 candidates is ~40 KB; anything this large is not one


class _Recorded(BaseModel):
    """Strict: a hand-edited "0.5" or true is not a number, a string is not a list (plan.json is read as JSON)."""

    model_config = ConfigDict(strict=True, extra="allow")


class _Accuracy(_Recorded):
    precision: float
    recall: float
    map50: float
    map50_95: float


class _Candidate(_Recorded):
    source: str
    graph: Optional[str]
    route: str
    name: str


class _Placement(_Recorded):
    share_nodes: float
    nodes_total: int
    nodes_cpu: int
    nodes_unknown: int
    partitions_host: int
    fallback_ops: dict[str, int]
    unknown_ops: dict[str, int]
    off_npu: int
    host_partitions: Optional[int] = None  # absent in plans recorded before it
    compiler: Optional[str] = None
    compiler_status: Optional[str] = None
    compiler_cpu_ops: Optional[int] = None
    npu_ms: Optional[float] = None
    compiled_file: Optional[str] = None
    first_off_npu: Optional[str] = None


class _Vendor(_Recorded):
    runtime: str
    int8: _Accuracy
    int8_at_conf: _Accuracy


class _Retention(_Recorded):
    precision: Optional[float]
    recall: Optional[float]
    map50: Optional[float]


class _Row(_Recorded):
    target: str
    candidate: _Candidate
    fp32_path: str
    int8_path: str
    placement: _Placement
    fp32: _Accuracy
    int8: _Accuracy
    fp32_at_conf: _Accuracy
    int8_at_conf: _Accuracy
    conf: float
    retention: _Retention
    vendor: Optional[_Vendor] = None
    int8_drop_pp: Optional[Annotated[list[float], Field(min_length=3, max_length=3)]] = None  # absent before intervals


class _ReslopeValues(_Recorded):
    slope: float
    change_pp: float
    retrain: bool
    threshold_pp: float
    train: str


class _LittleOnNpuValues(_Recorded):
    share: float
    candidate: str
    first_off_npu: Optional[str] = None


class _RewriteCostValues(_Recorded):
    graph: str
    ratio: float


class _RatioValues(_Recorded):
    ratio: float


class _Reslope(_Recorded):
    kind: Literal["reslope"]
    values: _ReslopeValues


class _LittleOnNpu(_Recorded):
    kind: Literal["little_on_npu"]
    values: _LittleOnNpuValues


class _RewriteCost(_Recorded):
    kind: Literal["rewrite_cost"]
    values: _RewriteCostValues


class _RewriteCostUnmeasured(_Recorded):
    kind: Literal["rewrite_cost_unmeasured"]
    values: _RatioValues


class _LostOn(_Recorded):
    axis: Literal["off_npu", "partitions_host", "accuracy_guard", "npu_ms", "npu_ms_missing", "int8_map50",
                  "vendor_int8_map50", "tie"]
    loser: Optional[float]
    winner: Optional[float]
    guard_pp: Optional[float] = None
    gap_pp: Optional[Annotated[list[float], Field(min_length=3, max_length=3)]] = None  # value, low, high (points)
    accuracy_tie_pp: Optional[Annotated[list[float], Field(min_length=3, max_length=3)]] = None


class _TargetPlan(_Recorded):
    target: str
    chosen: str
    runner_up: Optional[str]
    why_runner_up_lost: Optional[str]
    rows: list[_Row] = Field(min_length=1)
    runner_up_lost_on: Optional[_LostOn] = None  # absent in plans recorded before it
    notes: list[str] = []
    advice: Optional[list[Annotated[Union[_Reslope, _LittleOnNpu, _RewriteCost, _RewriteCostUnmeasured],
                                    Field(discriminator="kind")]]] = None  # absent: recorded before advice was data

    @model_validator(mode="after")
    def _named_rows(self):
        names = {r.candidate.name for r in self.rows}
        for what, name in (("chosen", self.chosen), ("runner_up", self.runner_up)):
            if name is not None and name not in names:
                raise ValueError(f"{what} {name[:80]!r} is none of its rows")
        return self


class RecordedPlan(_Recorded):
    """A plan.json as `Plan.as_dict()` writes it (older plans without advice, lost-on or twin included): every value a
    report reads, of its type. What a report or `series report` reads from a plan goes through this model."""

    model_ref: str
    run_id: Optional[int]
    twin_run_id: Optional[int] = None
    data: str
    conf: float
    calibration: Optional[str]
    path: Optional[str] = None
    seconds: float = 0.0
    stages: dict[str, float] = {}
    targets: list[_TargetPlan] = Field(min_length=1)
    weights_note: Optional[str] = None


def load_recorded_plan(path: str | Path) -> dict:
    """A recorded plan.json as a dict, validated whole (`RecordedPlan`); `PlanError` saying what is wrong (not a
    regular file, too large, not JSON, nested too deep, a value of the wrong type) in one line."""
    try:
        text = read_regular_file(path, MAX_PLAN_BYTES)
    except FileReadError as e:
        raise PlanError(str(e)) from None
    try:
        RecordedPlan.model_validate_json(text)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        said = " ".join(str(first["msg"]).split())
        raise PlanError(f"{path}: {where + ': ' if where else ''}{said}"[:300]) from None
    return json.loads(text)
