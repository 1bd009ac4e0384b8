"""INT8 of a run: its best weights exported to FP32 ONNX (L4: NPU head cut) and quantized, both recorded as the run's
artefacts. `services.deploy.quantize` serves it to both front doors; `deploy.qat` quantizes its fine-tuned run here."""

from __future__ import annotations

from pathlib import Path

from npuyolo.data.check import check_dataset
from npuyolo.deploy.errors import DeployError
from npuyolo.deploy.export import check_imgsz, default_head, export_onnx
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.deploy.int8.quantize import ends_allowed, quantize_onnx
from npuyolo.paths import slug
from npuyolo.resolve import resolve_model

__all__ = ["quantize_run"]


def quantize_run(registry, ref: str, data: str | Path, options: QuantizeOptions | None = None, *, imgsz: int | None = None,
                 out_dir: Path | None = None, target: str | None = None, **given) -> dict:
    """Export the run's best weights (L4: NPU head cut) to FP32 ONNX and quantize it as `options` (or `given` fields)
    say; both become run artefacts. `seed`, unless given, is the run's own. `target`: with `ends`, refuse what its profile
    cannot run."""
    opts = QuantizeOptions.of(options, **given)
    opts.check()
    check_dataset(data, cache_dir=registry.root / "cache")
    if imgsz is not None:
        check_imgsz(imgsz)
    if registry.readonly:
        raise DeployError("quantize records artefacts; open the registry writable")
    if opts.ends is not None and target is not None:
        ends_allowed(opts.ends, target)
    resolved = resolve_model(ref, registry)
    if resolved.run_id is None:
        raise DeployError(f"{ref!r} is not a run; quantize takes a run id or name (train one with `npuyolo train`)")
    run = registry.get_run(resolved.run_id)
    if "seed" not in given and opts.seed == QuantizeOptions.seed:  # no seed asked for: the run's own draw of images
        opts = QuantizeOptions.of(opts, seed=run.recipe.get("seed", QuantizeOptions.seed))
    imgsz = imgsz or run.recipe["imgsz"]
    out_dir = out_dir or registry.run_dir(run, "deploy")
    head = default_head(resolved.model)
    stem = slug(run.name)
    fp32 = export_onnx(resolved.model, out_dir / f"{stem}-{head}-{imgsz}-fp32.onnx", imgsz=imgsz, head=head)
    cal = "sweep" if opts.sweep else (f"percentile{opts.percentile:g}" if opts.method == "percentile" and opts.percentile else opts.method)
    tag = (f"{cal}{'-pc' if opts.per_channel else ''}{'-cle' if opts.cle else ''}{'-bc' if opts.bias_correct else ''}"
           f"{f'-ends{opts.ends}' if opts.ends else ''}{f'-float{opts.auto_float}' if opts.auto_float else ''}"
           f"{'-keep' if opts.keep_float else ''}")
    int8 = out_dir / f"{stem}-{head}-{imgsz}-int8-{tag}.onnx"
    info = quantize_onnx(fp32, int8, data, opts)
    registry.add_artifact(run.id, "onnx/fp32", fp32.resolve(), {"imgsz": imgsz, "head": head})
    registry.add_artifact(run.id, "onnx/int8", int8.resolve(), {k: v for k, v in info.items() if k not in ("calibration_images", "holdout_images")}
                          | {"calibration_count": len(info["calibration_images"]), "target": target})
    return {"run_id": run.id, "fp32": str(fp32), **info}
