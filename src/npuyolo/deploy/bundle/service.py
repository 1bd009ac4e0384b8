"""`deploy bundle` over the registry: which artefact a run's recorded plan ships for a target, and its figures.

Served to both front doors (the CLI's `npuyolo deploy bundle` and `Workspace.bundle`), as `deploy/service.py` serves
quantize and eval. It reads the plan through `deploy.plan.chosen_row`, so it imports the planning stage (and with it
PyTorch); `build.py`, which writes the bundle, does not.
"""

from __future__ import annotations

import json
from pathlib import Path

from npuyolo.deploy.bundle.build import Bundle, BundleError, build_bundle, inspect_artefact
from npuyolo.deploy.bundle.manifest import PlanFigures
from npuyolo.deploy.plan import COMPILER_OF, MAX_PLAN_BYTES, chosen_row
from npuyolo.paths import FileReadError, read_regular_file
from npuyolo.registry.db import Registry, RunRecord

__all__ = ["bundle_model"]


def _planned(run: RunRecord, target: str) -> dict:
    """The run's latest recorded plan for `target` (`TargetPlan.as_dict()`); none is one line naming the command."""
    make = f"make one with `npuyolo deploy plan {run.id} -t {target} --data DATA.yaml`"
    recorded = run.artifact("plan")
    if recorded is None:
        raise BundleError(f"run {run.name} (#{run.id}) has no deployment plan for {target}; {make}, or pass `artefact` (a file to ship)")
    try:  # a regular file of a bounded size: a FIFO there blocked for ever
        plan = json.loads(read_regular_file(recorded.path, MAX_PLAN_BYTES).decode("utf-8"))
        plans = {tp["target"]: tp for tp in plan["targets"]}
    except (OSError, ValueError, KeyError, TypeError, RecursionError, FileReadError):
        raise BundleError(f"run {run.name} (#{run.id}): its plan {recorded.path} is missing or damaged; {make}") from None
    if target not in plans:
        raise BundleError(f"run {run.name} (#{run.id}) has no deployment plan for {target} (planned: "
                          f"{', '.join(plans) or 'none'}); {make}")
    return plans[target]


def _plan_choice(run: RunRecord, target: str, plan_json: str) -> tuple[Path, PlanFigures]:
    """The file to ship for `target` from the run's plan, and the plan's figures for it: the vendor's compiled model
    where the compiler built one (.rknn, Vela's int8 .tflite, the IMX500 build whose packerOut.zip ships), else our INT8
    ONNX; a compiler target planned without its compiler has nothing to ship for that NPU."""
    tp = _planned(run, target)
    try:
        row = chosen_row(tp)
        p = row["placement"]
        compiled = p.get("compiled_file") if p.get("compiler_status") == "compiled" else None
        vendor = row.get("vendor")
        figures = PlanFigures(
            run_id=run.id, run_name=run.name, target=target, candidate=tp["chosen"], plan_json=plan_json,
            conf=float(row["conf"]), fp32_map50=float(row["fp32"]["map50"]),
            int8_map50=float((vendor or row)["int8"]["map50"]), int8_map50_at_conf=float((vendor or row)["int8_at_conf"]["map50"]),
            retention_map50=row["retention"]["map50"], int8_scored_by=vendor["runtime"] if vendor else "npuyolo QDQ (ONNX Runtime)",
            share_nodes=float(p["share_nodes"]), off_npu=int(p["off_npu"]), npu_ms=p.get("npu_ms"), compiler=p.get("compiler"))
        int8 = row["int8_path"]
    except (StopIteration, KeyError, TypeError, ValueError):
        raise BundleError(f"run {run.name} (#{run.id}): its plan for {target} is damaged; make it again with "
                          f"`npuyolo deploy plan {run.id} -t {target} --data DATA.yaml`") from None
    shipped = Path(compiled) if compiled else Path(int8)
    needs_build = {**COMPILER_OF, "imx500": ("imx500", "imx500")}  # the IMX500 runs only what its converter packaged
    if (compiled or target not in needs_build) and not shipped.is_file():
        raise BundleError(f"run {run.name} (#{run.id}): the plan's artefact for {target}, {shipped}, is gone; make the plan again"
                          f" with `npuyolo deploy plan {run.id} -t {target} --data DATA.yaml`")
    if compiled:
        return shipped, figures
    if target in needs_build:
        compiler = needs_build[target][0]
        raise BundleError(f"run {run.name} (#{run.id}): the plan for {target} has no {compiler} build to ship ({p.get('compiler_status')});"
                          f" install it (`npuyolo compilers install {compiler}`) and plan again, or pass `artefact` (a file to ship)")
    return shipped, figures


def _shipped(path: Path) -> Path:
    """The file a bundle of `path` ships: an IMX500 build is named by its folder or any of its files."""
    try:
        return inspect_artefact(path).path.resolve()
    except BundleError:
        return path.resolve()


def bundle_model(registry: str | Path | None, run: str | None = None, target: str | None = None, *,
                 artefact: str | Path | None = None, out: str | Path | None = None, conf: float | None = None,
                 iou: float | None = None) -> Bundle:
    """A board bundle (folder + .tar.gz) of a run's planned artefact for `target`, or of `artefact`.

    With a run: the target's chosen artefact from the run's latest recorded plan (with the plan's figures), into the
    run's `bundle/` folder unless `out` says, recorded as the run's `bundle/<target>` artefact. `artefact` overrides
    the plan's choice (the figures are kept only when it is the planned file). Without a run: `out` or ./bundle.
    """
    if run is None and artefact is None:
        raise BundleError("nothing to bundle: give a run and its target, or an artefact file to ship", param="artefact")
    if run is None:
        return build_bundle(artefact, out or Path("bundle"), target=target, conf=conf, iou=iou)
    if not target:
        raise BundleError("target is required with a run: a plan chooses one artefact per target", param="target")
    reg = Registry(registry, create=False)
    record = reg.get_run(str(run))
    figures = None
    if artefact is None:
        recorded = record.artifact("plan")
        artefact, figures = _plan_choice(record, target, recorded.path if recorded else "")
    elif record.artifact("plan") is not None:
        try:
            planned, figures = _plan_choice(record, target, record.artifact("plan").path)
            figures = figures if _shipped(planned) == _shipped(Path(artefact)) else None
        except BundleError:
            figures = None
    bundle = build_bundle(artefact, out or reg.run_dir(record, "bundle"), target=target, conf=conf, iou=iou, plan=figures)
    reg.add_artifact(record.id, f"bundle/{target}", bundle.archive, {"folder": str(bundle.folder), "sha256": bundle.manifest.artefact["sha256"]})
    return bundle
