"""`npu compile` and `npu check --referee` of any model reference: export as our analyzer sees it (`deploy.check`),
calibrate on train images, run the vendor compiler in its own venv, map its placement back to our nodes, compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from npuyolo.compilers.calibration import CALIB_IMAGES, calibration_arrays, write_calibration
from npuyolo.compilers.compile import (MAX_SIDE, Agreement, Build, CompileResult, agreement, imx_agreement, input_side,
                                       profile_for, record)
from npuyolo.compilers.envs import CompilerError, require
from npuyolo.compilers.imx500 import compile_model as imx_compile
from npuyolo.compilers.manifest import write_manifest
from npuyolo.compilers.rknn import compile_onnx as rknn_compile
from npuyolo.compilers.vela import compile_onnx as vela_compile
from npuyolo.compilers.vela import write_calibration_npy
from npuyolo.data.calibration import calibration_images
from npuyolo.deploy.check import check_model
from npuyolo.deploy.export import export_onnx
from npuyolo.npu.analyze import TargetReport
from npuyolo.npu.normalize import fold_qdq, slices_to_split
from npuyolo.paths import atomic_path, safe_join, slug
from npuyolo.resolve import ModelRef, resolve_model

__all__ = ["COMPILERS", "CompileJob", "Compiler", "compile_model", "record"]


@dataclass(frozen=True)
class CompileJob:
    """One build: the ONNX file `npu check` analyzed, where to work, what calibrates it."""

    onnx: Path
    platform: str
    folder: Path
    data: str | Path | None
    calib: int
    imgsz: int
    model: Callable[[], object]  # the torch model behind the ONNX file (loaded only by a compiler that converts it)


@dataclass(frozen=True)
class Compiler:
    """A vendor compiler: how it builds (returning its record and what calibrated it) and how its placement is
    compared with ours. `takes_onnx=False`: it converts the PyTorch model itself (IMX500 through MCT)."""

    name: str
    build: Callable[[CompileJob], tuple[Build, str]]
    agree: Callable[[TargetReport, Build], Agreement]
    takes_onnx: bool = True


def _rknn(job: CompileJob) -> tuple[Build, str]:
    listing, what = write_calibration(job.data, job.imgsz, job.folder, count=job.calib)
    return rknn_compile(job.onnx, job.platform, listing, job.folder), what


def _vela(job: CompileJob) -> tuple[Build, str]:
    arrays, what = calibration_arrays(job.data, job.imgsz, count=job.calib)
    return vela_compile(job.onnx, job.platform, write_calibration_npy(arrays, job.folder / "calib"), job.folder), what


def _imx500(job: CompileJob) -> tuple[Build, str]:
    model = job.model()
    build = imx_compile(model, job.folder, job.data, imgsz=job.imgsz, calib=job.calib)  # one folder per size and head
    if build.scored:  # `deploy eval` compares MCT's model with the FP32 graph that ends where it does (boxes, scores)
        scored = Path(build.scored)
        fp32 = export_onnx(model, scored.with_name("model_fp32.onnx"), imgsz=job.imgsz, head="ultralytics")
        write_manifest(scored, "onnx", fp32, mct=True, outputs="boxes,scores")
    return build, build.calibration


COMPILERS: dict[str, Compiler] = {  # the names are compilers/compile.PROFILES' keys (a test keeps them equal)
    "rknn": Compiler("rknn", _rknn, agreement),
    "vela": Compiler("vela", _vela, agreement),
    "imx500": Compiler("imx500", _imx500, imx_agreement, takes_onnx=False),
}


def compile_model(ref: str, compiler: str, target: str, data: str | Path | None, registry=None, imgsz: int | None = None,
                  head: str | None = None, nc: int = 80, workdir: Path | None = None,
                  calib: int = CALIB_IMAGES) -> CompileResult:
    """Export + analyze exactly as `npu check` does for this target, then compile that same ONNX file.

    `calib`: training images the vendor quantizer calibrates on (RKNN, Vela). Placement does not depend on it; the
    accuracy of the vendor's INT8 model (`deploy eval` of the build) does."""
    if isinstance(calib, bool) or not isinstance(calib, int) or not 1 <= calib <= 1000:
        raise CompilerError(f"calib must be 1..1000 training images, got {calib!r}")
    platform, profile = profile_for(compiler, target)
    is_onnx = ModelRef.parse(ref).kind == "onnx"
    require(compiler)  # before a minute of export: a missing compiler is the first thing the user hears
    if not COMPILERS[compiler].takes_onnx and is_onnx:
        raise CompilerError("the imx500 compiler converts a PyTorch model (Ultralytics' format='imx' quantizes it with "
                            "model-compression-toolkit first): give a variant name, a run or a .pt, not an .onnx file")
    if imgsz is not None and not isinstance(imgsz, bool) and isinstance(imgsz, int) and imgsz > MAX_SIDE:
        raise CompilerError(f"imgsz {imgsz} is larger than npu compile takes ({MAX_SIDE} px per side)", param="imgsz")
    if data is not None:  # a wrong data.yaml, too, before the export
        calibration_images(data, 1)
    check = check_model(ref, [profile], registry, imgsz=imgsz, head=head, nc=nc, workdir=workdir)
    onnx_path = Path(check.onnx_paths[profile])
    ours = check.reports[0]
    if is_onnx:  # the user's file: work beside the registry, on the graph the analyzer saw
        name = f"onnx-{slug(onnx_path.stem, 'model')}"  # apart from a variant's own npu/<variant>/ folder
        base = registry.output_dir("npu", name) if registry is not None else safe_join("runs", "npu", name)
        folder = base / f"{compiler}-{platform}-{slug(onnx_path.stem, 'model')}"
        folder.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(onnx_path))
        fold_qdq(model)  # an INT8 artefact: the compiler quantizes itself, like the graph `npu check` placed
        slices_to_split(model)  # chunk as Split, as `npu check` analyses it: same node names on both sides
        onnx_path = folder / f"{slug(onnx_path.stem, 'model')}.onnx"
        with atomic_path(onnx_path) as tmp:
            onnx.save(model, str(tmp))
    else:  # one folder per compiled file: exports at other sizes/heads never share (or overwrite) logs
        folder = onnx_path.parent / f"{compiler}-{platform}-{slug(onnx_path.stem, 'model')}"
    chosen = COMPILERS[compiler]
    job = CompileJob(onnx_path, platform, folder, data, calib, input_side(onnx_path),
                     model=lambda: resolve_model(ref, registry, nc=nc).model)  # the model check_model exported
    build, what = chosen.build(job)
    return CompileResult(model_ref=check.model_ref, run_id=check.run_id, profile=profile, build=build, calibration=what,
                         ours=ours, agreement=chosen.agree(ours, build))
