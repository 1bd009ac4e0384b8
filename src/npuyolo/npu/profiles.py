"""NPU target profiles: one YAML per target in targets/, every rule with its source."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from npuyolo.errors import NpuyoloError
from npuyolo.npu.constraints import CONSTRAINTS

Placement = Literal["npu", "cpu", "unknown"]


class OpRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    place: Placement
    constraints: dict[str, Any] = {}
    source: str

    @field_validator("constraints")
    @classmethod
    def _known(cls, v: dict) -> dict:

        unknown = set(v) - set(CONSTRAINTS)
        if unknown:
            raise ValueError(f"unknown constraint(s) {sorted(unknown)}; known: {sorted(CONSTRAINTS)}")
        return v

    @field_validator("source")
    @classmethod
    def _cited(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("every rule needs a source")
        return v


class TargetProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    fallback: Literal["per_op", "single_subgraph"]
    fallback_note: str
    deploy_dtype: str
    dtypes: list[str]
    fusable_activations: list[str]
    fusion_source: str
    sources: dict[str, str]
    note: str | None = None
    # ops that a compiler runs beside their consumers when every consumer is on the CPU (layout glue)
    host_follow_ops: list[str] = []
    host_follow_source: str | None = None
    # a vendor's published cut (regexes on ONNX node names): these nodes are the last on the chip, all after them
    # is host post-processing (Hailo's model zoo ends YOLO11n at the six head convs)
    end_nodes: list[str] = []
    end_nodes_source: str | None = None
    # the largest activation (elements of one output tensor) a compiler is documented to map; larger ones leave it
    max_tensor_elems: int | None = None
    max_tensor_source: str | None = None
    ops: dict[str, OpRule]

    @model_validator(mode="after")
    def _follow_cited(self) -> "TargetProfile":
        if self.host_follow_ops and not (self.host_follow_source or "").strip():
            raise ValueError("host_follow_ops needs a host_follow_source")
        if self.max_tensor_elems is not None and not (self.max_tensor_source or "").strip():
            raise ValueError("max_tensor_elems needs a max_tensor_source")
        if self.end_nodes and not (self.end_nodes_source or "").strip():
            raise ValueError("end_nodes needs an end_nodes_source")
        for pattern in self.end_nodes:
            re.compile(pattern)
        return self

    def rule(self, op_type: str) -> OpRule | None:
        return self.ops.get(op_type)


class TargetError(NpuyoloError, ValueError):
    """An unknown target name."""


def _files():
    return resources.files("npuyolo.npu").joinpath("targets")


@cache
def targets() -> dict[str, TargetProfile]:
    found = {}
    for f in sorted(_files().iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            profile = TargetProfile(**yaml.safe_load(f.read_text(encoding="utf-8")))
            found[profile.name] = profile
    return found


def target(name: str) -> TargetProfile:
    try:
        return targets()[name]
    except KeyError:
        raise TargetError(f"unknown target {name!r}; targets: {', '.join(targets())}") from None
