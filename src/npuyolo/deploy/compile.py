"""`npu compile` and `npu check --referee` of any model reference: export as our analyzer sees it (`deploy.check`),
calibrate on train images, run the vendor compiler in its own venv, map its placement back to our nodes, compare.
Which compiler builds how, and how it is compared, is its `CompilerSpec` (`compilers/registry.py`).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from npuyolo.compilers.calibration import CALIB_IMAGES
from npuyolo.compilers.compile import MAX_SIDE, CompileResult, input_side, record
from npuyolo.compilers.envs import CompilerError
from npuyolo.compilers.registry import CompileJob, profile_for, require, spec
from npuyolo.data.calibration import calibration_images
from npuyolo.deploy.check import check_model
from npuyolo.deploy.export import export_onnx
from npuyolo.npu.normalize import fold_qdq, slices_to_split
from npuyolo.paths import atomic_path, safe_join, slug
from npuyolo.registry.db import Registry
from npuyolo.resolve import ModelRef, resolve_model

__all__ = ["compile_model", "record"]


def compile_model(registry: Registry | str | Path | None, ref: str, compiler: str, target: str, data: str | Path | None, imgsz: int | None = None,
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
    chosen = spec(compiler)
    if not chosen.takes_onnx and is_onnx:
        raise CompilerError(f"the {compiler} compiler converts a PyTorch model ({chosen.converts}): give a variant name, "
                            "a run or a .pt, not an .onnx file")
    if imgsz is not None and not isinstance(imgsz, bool) and isinstance(imgsz, int) and imgsz > MAX_SIDE:
        raise CompilerError(f"imgsz {imgsz} is larger than npu compile takes ({MAX_SIDE} px per side)", param="imgsz")
    if data is not None:  # a wrong data.yaml, too, before the export
        calibration_images(data, 1)
    check = check_model(registry, ref, [profile], imgsz=imgsz, head=head, nc=nc, workdir=workdir)
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
    job = CompileJob(onnx_path, platform, folder, data, calib, input_side(onnx_path),
                     model=lambda: resolve_model(registry, ref, nc=nc).model,  # the model check_model exported
                     export=export_onnx)
    build, what = chosen.build(job)
    return CompileResult(model_ref=check.model_ref, run_id=check.run_id, profile=profile, build=build, calibration=what,
                         ours=ours, agreement=chosen.agree(ours, build))
