"""`npu check` of any model reference: an ONNX file is analyzed as it is; a variant, run or .pt is first exported the
way each target needs it (here, in the layer that owns the exporter), then analyzed by `npuyolo.npu.check`."""

from __future__ import annotations

from pathlib import Path

from npuyolo.deploy.export import check_imgsz, default_head, export_onnx
from npuyolo.npu.analyze import analyze
from npuyolo.npu.check import CheckResult, check_onnx, record, sigmoid_on_npu
from npuyolo.npu.graph import load_graph
from npuyolo.npu.profiles import target
from npuyolo.registry.db import Registry
from npuyolo.resolve import ModelRef, default_imgsz, output_dir_for, resolve_model

__all__ = ["CheckResult", "check_model", "record", "sigmoid_on_npu"]


def check_model(registry: Registry | str | Path | None, ref: str, target_names: list[str], imgsz: int | None = None, head: str | None = None,
                nc: int = 80, workdir: Path | None = None) -> CheckResult:
    """Analyze an ONNX file as it is, or export a variant/run/checkpoint the way each target needs it.

    For the NPU head the class sigmoid stays in the graph unless the target has no NPU sigmoid; then it
    moves to the host decode (as Hailo and Rockchip move what their NPU lacks), and the note says so.
    """
    parsed = ModelRef.parse(ref)
    if parsed.kind == "onnx":
        return check_onnx(parsed.text, target_names)
    profiles = [target(t) for t in target_names]
    resolved = resolve_model(registry, parsed, nc=nc)
    if imgsz is None:  # checked at the size it was trained for, as it will be deployed
        imgsz = default_imgsz(resolved)
    check_imgsz(int(imgsz))
    head = head or default_head(resolved.model)
    workdir = workdir or output_dir_for(registry, resolved, "npu")
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
