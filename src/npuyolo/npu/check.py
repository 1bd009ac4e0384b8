"""`npu check`: resolve a model, export what each target needs, analyze, record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from npuyolo.npu.analyze import TargetReport, analyze
from npuyolo.npu.graph import load_graph
from npuyolo.npu.profiles import TargetProfile, target


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


def check_model(ref: str, target_names: list[str], registry=None, imgsz: int | None = None, head: str | None = None,
                nc: int = 80, workdir: Path | None = None) -> CheckResult:
    """Analyze an ONNX file as it is, or export a variant/run/checkpoint the way each target needs it.

    For the NPU head the class sigmoid stays in the graph unless the target has no NPU sigmoid; then it
    moves to the host decode (as Hailo and Rockchip move what their NPU lacks), and the note says so.
    """
    profiles = [target(t) for t in target_names]
    if ref.lower().endswith(".onnx"):
        import onnx

        from npuyolo.npu.normalize import fold_qdq, slices_to_split

        model = load_graph(ref).model  # validated, with its errors
        fold_qdq(model)  # an INT8 artefact is placed like the graph it quantizes
        slices_to_split(model)  # the same placement whichever exporter wrote the chunk
        g = load_graph(model)
        return CheckResult(ref, None, [analyze(g, p) for p in profiles], {p.name: ref for p in profiles})

    from npuyolo.deploy.export import default_head, export_onnx
    from npuyolo.paths import safe_join
    from npuyolo.resolve import resolve_model

    resolved = resolve_model(ref, registry, nc=nc)
    if imgsz is None:  # a run is checked at the size it was trained for, as it will be deployed
        imgsz = resolved.trained_imgsz or 640
    from npuyolo.deploy.export import check_imgsz

    check_imgsz(int(imgsz))
    head = head or default_head(resolved.model)
    if workdir is None:
        if registry is not None and resolved.run_id is not None:
            workdir = registry.run_dir(registry.run(resolved.run_id), "npu")
        elif registry is not None:
            workdir = registry.output_dir("npu", resolved.label)
        else:
            workdir = safe_join("runs", "npu", resolved.label)
    graphs: dict[bool, tuple[str, object]] = {}
    reports, paths, notes = [], {}, {}
    for p in profiles:
        keep_sigmoid = head != "npu" or sigmoid_on_npu(p)
        if keep_sigmoid not in graphs:
            out = workdir / f"{resolved.label}-{head}-{imgsz}{'' if keep_sigmoid else '-logits'}.onnx"
            export_onnx(resolved.model, out, imgsz=imgsz, head=head, class_sigmoid=keep_sigmoid)
            graphs[keep_sigmoid] = (str(out), load_graph(out))
        path, g = graphs[keep_sigmoid]
        reports.append(analyze(g, p))
        paths[p.name] = path
        if not keep_sigmoid:
            notes.setdefault(p.name, []).append("class sigmoid moved to the host decode (no NPU Sigmoid on this target)")
    return CheckResult(resolved.label, resolved.run_id, reports, paths, notes)


def record(result: CheckResult, registry, head: str | None) -> None:
    for r in result.reports:
        registry.add_npu_check(run_id=result.run_id, model_ref=result.model_ref, onnx_path=result.onnx_paths[r.target],
                               head=head, report={**r.as_dict(), "notes": result.notes.get(r.target, [])})
