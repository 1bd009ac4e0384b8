"""Models and the NPU: variants, export, NPU placement ("check, then record"), vendor compiles, graph rewrites."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npuyolo.services.common import registry_of, registry_path, targets_arg
from npuyolo.services.options import (CheckOptions, CompileOptions, ExportOptions, RewriteOptions, VariantOptions,
                                      VariantsOptions)

__all__ = ["HEADS", "ExportRecord", "check", "compile_model", "compiler_help", "export_model", "npu_targets", "referee",
           "rewrite", "variant_show", "variants", "whole_model"]

HEADS = ("npu", "ultralytics")


@dataclass(frozen=True)
class ExportRecord:
    """One written ONNX file: where, for which run (None for a variant or a checkpoint), at which size and head."""

    onnx: Path
    run_id: int | None
    imgsz: int
    head: str | None  # None: the level's own head

    def as_dict(self) -> dict:
        return {"onnx": str(self.onnx), "run_id": self.run_id, "imgsz": self.imgsz, "head": self.head}


def variants(scale: str = VariantsOptions.scale) -> dict[str, Any]:
    """Every level x activation variant of a scale, and the levels' summaries."""
    from npuyolo.variants.spec import all_variants, levels

    rows = [{"name": v.name, "level": f"L{v.level}", "activation": v.activation, "slope": v.slope, "scale": v.scale,
             **v.settings.model_dump(include={"activation_scope", "attention", "sppf_pool", "head"})} for v in all_variants(scale)]
    return {"variants": rows, "levels": [{"name": lv.name, "title": lv.title, "summary": lv.summary} for lv in levels().values()]}


def variant_show(name: str, options: VariantOptions | None = None) -> dict:
    """A variant's Ultralytics model YAML, parameter count, GFLOPs at `imgsz` and its activations."""
    from npuyolo.deploy.export import check_imgsz
    from npuyolo.variants.build import activation_census, build_model, format_model_yaml, model_summary, model_yaml
    from npuyolo.variants.spec import parse_variant

    o = options or VariantOptions()
    check_imgsz(o.imgsz)
    spec = parse_variant(name)
    d = model_yaml(spec, nc=o.nc)
    model = build_model(d, nc=o.nc)
    return {"name": spec.name, **model_summary(model, o.imgsz), "imgsz": o.imgsz, "activations": activation_census(model),
            "level": spec.settings.model_dump(), "yaml": d, "summary": spec.settings.summary, "text": format_model_yaml(d)}


def export_model(registry: Any, model: str, out: str | Path | None = None,
                 options: ExportOptions | None = None) -> ExportRecord:
    """Static-shape ONNX of a variant (untrained), run or .pt, at the size it was trained at unless `imgsz` says.

    A run's file goes to its own folder's export/ and is recorded as its `onnx/<head>` artefact; anything else goes
    to the working directory and touches no registry. `out` may replace an earlier npuyolo ONNX file; another file
    or a symlink only with `force`; never the registry.
    """
    from npuyolo.deploy.export import ExportError, check_imgsz, export_onnx
    from npuyolo.resolve import ModelRef, default_imgsz, resolve_model

    o = options or ExportOptions()
    if o.head not in (None, *HEADS):
        raise ExportError(f"head must be npu or ultralytics, got {o.head!r}", param="head")
    ref = ModelRef.parse(model)
    reg = registry_of(registry) if ref.is_run else None  # exporting a variant or a file touches no registry
    resolved = resolve_model(reg if reg is not None else registry_path(registry), ref, nc=o.nc)
    imgsz = default_imgsz(resolved) if o.imgsz is None else o.imgsz
    check_imgsz(imgsz)
    name = f"{resolved.label}-{o.head or 'default'}-{imgsz}.onnx"
    if out is None:
        out = reg.run_dir(reg.get_run(resolved.run_id), "export") / name if reg is not None else Path(name)
    path = export_onnx(resolved.model, out, imgsz=imgsz, head=o.head, force=o.force, registry_path=registry_path(registry)).resolve()
    if reg is not None:
        reg.add_artifact(resolved.run_id, f"onnx/{o.head or 'default'}", path, {"imgsz": imgsz})
    return ExportRecord(path, resolved.run_id, imgsz, o.head)


def npu_targets() -> dict:
    """The NPU target profiles, by name."""
    from npuyolo.npu.profiles import targets

    return targets()


def check(registry: Any, model: str, targets: list[str], options: CheckOptions | None = None, *, record: bool = True):
    """Per-node placement of a variant, run, .pt or .onnx on each target; recorded in the registry unless `record`
    is False. Returns a `npuyolo.npu.check.CheckResult`."""
    from npuyolo.deploy.check import check_model
    from npuyolo.deploy.check import record as record_check

    o = options or CheckOptions()
    targets = targets_arg(targets)
    reg = registry_of(registry)
    result = check_model(reg, model, targets, imgsz=o.imgsz, head=o.head, nc=o.nc)
    if record:
        record_check(reg, result, o.head)
    return result


def compile_target(compiler: str, target: str | None) -> str:
    """The compiler's target: one with a default platform (imx500: its own name) takes it; every other compiler needs it
    named (`CompilerSpec.default_platform`)."""
    from npuyolo.compilers.envs import CompilerError
    from npuyolo.compilers.registry import COMPILERS

    chosen = COMPILERS.get(compiler)  # an unknown name: profile_for says so, after what the user forgot
    if target is None and chosen is not None and chosen.default_platform is not None:
        return chosen.default_platform
    if target is None:
        raise CompilerError(f"target is required for the {compiler} compiler", param="target")
    return target


def compiler_help() -> dict[str, str]:
    """The phrases the doors' help says of the compilers (`{compilers}`, `{referees}`, `{targets}`, `{synthetic}`),
    from the compiler registry (`npuyolo.compilers.registry.help_texts`), so a compiler added there is named there."""
    from npuyolo.compilers.registry import help_texts

    return help_texts()


def whole_model(compiler: str) -> bool:
    """A compiler that places the whole model on the device or none of it (imx500): what a door shows of its build is
    its fit and memory, not a per-operator split (`CompilerSpec.whole_model`)."""
    from npuyolo.compilers.registry import spec

    return spec(compiler).whole_model


def _ready(compiler: str, targets: list[str], data: str | Path | None, need_data: bool) -> None:
    """Every target, the compiler and the calibration data checked before a registry is opened or an export starts."""
    from npuyolo.compilers.envs import CompilerError
    from npuyolo.compilers.registry import COMPILERS, profile_for, require

    if need_data and data is None and (compiler not in COMPILERS or COMPILERS[compiler].needs_data):
        raise CompilerError(f"data is required for the {compiler} compiler: its train images calibrate the INT8 build",
                            param="data")
    for t in targets:
        profile_for(compiler, t)
    require(compiler)  # a missing compiler is one line, before any registry is created
    if data is not None:  # a wrong data.yaml is one line before a registry file is created
        from npuyolo.data.calibration import calibration_images

        calibration_images(data, 1)


def compile_model(registry: Any, model: str, compiler: str, target: str | None, data: str | Path | None,
                  options: CompileOptions | None = None, *, record: bool = True):
    """Compile with a real vendor compiler (`npuyolo compilers install rknn|vela|imx500` first): its placement beside
    the profile's, recorded in the registry. rknn and vela calibrate on `data`'s train images (required); imx500 on
    synthetic images when no data is given. Returns a `npuyolo.compilers.compile.CompileResult`."""
    from npuyolo.deploy.compile import compile_model as build
    from npuyolo.deploy.compile import record as record_compile

    o = options or CompileOptions()
    target = compile_target(compiler, target)
    _ready(compiler, [target], data, need_data=True)
    reg = registry_of(registry)
    result = build(reg, model, compiler, target, data, imgsz=o.imgsz, head=o.head, nc=o.nc, calib=o.calib)
    if record:
        record_compile(reg, result)
    return result


def referee(registry: Any, model: str, targets: list[str], compiler: str, data: str | Path | None,
            options: CheckOptions | None = None) -> list:
    """`npu check` refereed by a vendor compiler: our placement beside the compiler's on each target, both recorded
    (the compile and the check). Without `data`, synthetic images calibrate (placement does not depend on them)."""
    from npuyolo.deploy.compile import compile_model as build
    from npuyolo.deploy.compile import record as record_compile
    from npuyolo.npu.check import CheckResult
    from npuyolo.npu.check import record as record_check

    o = options or CheckOptions()
    targets = targets_arg(targets)
    _ready(compiler, targets, data, need_data=False)
    reg = registry_of(registry)
    results = []
    for t in targets:
        res = build(reg, model, compiler, t, data, imgsz=o.imgsz, head=o.head, nc=o.nc)
        record_compile(reg, res)
        record_check(reg, CheckResult(res.model_ref, res.run_id, [res.ours], {res.profile: res.build.onnx},
                                 {res.profile: [f"referee {res.build.compiler} {res.build.version}: {res.agreement.agree}/"
                                                f"{res.agreement.mapped} mapped nodes agree"]}), o.head)
        results.append(res)
    return results


def rewrite(registry: Any, model: str | Path, out: str | Path | None = None,
            options: RewriteOptions | None = None) -> dict:
    """Every LeakyRelu of an ONNX file replaced by an equivalent of ReLU-NPU ops, into `out` [default: beside it]."""
    from npuyolo.npu.rewrite import rewrite_file

    o = options or RewriteOptions()
    dst, count = rewrite_file(model, out, o.leaky, force=o.force, registry_path=registry_path(registry))
    return {"onnx": str(Path(dst).resolve()), "rewritten": count, "method": o.leaky}
