"""`npu check` of an ONNX file: analyze it for each target, record. (A variant, run or .pt is exported first by
`npuyolo.deploy.check`, the layer above, which owns the exporter.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from npuyolo.npu.analyze import TargetReport, analyze
from npuyolo.npu.graph import load_graph
from npuyolo.npu.normalize import fold_qdq, slices_to_split
from npuyolo.npu.profiles import TargetProfile, target

if TYPE_CHECKING:
    from npuyolo.registry.db import Registry

__all__ = ["CheckResult", "check_onnx", "record", "sigmoid_on_npu"]


@dataclass
class CheckResult:
    model_ref: str
    run_id: int | None
    reports: list[TargetReport]
    onnx_paths: dict[str, str]  # target -> analyzed file
    notes: dict[str, list[str]] = field(default_factory=dict)


def sigmoid_on_npu(profile: TargetProfile) -> bool:
    rule = profile.rule("Sigmoid")
    return rule is not None and rule.place == "npu"


def check_onnx(path: str, target_names: list[str]) -> CheckResult:
    """Analyze an ONNX file as it is (an INT8 artefact is placed like the graph it quantizes)."""
    profiles = [target(t) for t in target_names]
    model = load_graph(path).model  # validated, with its errors
    fold_qdq(model)
    slices_to_split(model)  # the same placement whichever exporter wrote the chunk
    g = load_graph(model)
    return CheckResult(path, None, [analyze(g, p) for p in profiles], {p.name: path for p in profiles})


def record(registry: Registry, result: CheckResult, head: str | None) -> None:
    for r in result.reports:
        registry.add_npu_check(run_id=result.run_id, model_ref=result.model_ref, onnx_path=result.onnx_paths[r.target],
                               head=head, report={**r.as_dict(), "notes": result.notes.get(r.target, [])})
