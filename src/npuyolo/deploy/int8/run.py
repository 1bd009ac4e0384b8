"""INT8 of a run: its best weights exported to FP32 ONNX (L4: NPU head cut) and quantized, into the run's deploy/
folder. This computes; `services.deploy.quantize` serves it to both front doors and records both files as the run's
artefacts (`QuantizeResult.artefacts()` says what), the QAT service too after its fine-tuning."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from npuyolo.data.check import check_dataset
from npuyolo.deploy.errors import DeployError
from npuyolo.deploy.export import check_imgsz, default_head, export_onnx
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.deploy.int8.quantize import ends_allowed, quantize_onnx
from npuyolo.paths import slug
from npuyolo.resolve import resolve_model

__all__ = ["QuantizeResult", "quantize_run"]

_NOT_PRINTED = ("imgsz", "head")  # what the record needs beside what `deploy quantize --json` has always printed


@dataclass(frozen=True)
class QuantizeResult:
    """What `deploy quantize` did: the run, its FP32 and INT8 files, the calibration images (train split only) and the
    route taken (`quantize_onnx`'s settings: calibration, per-channel, float and 16-bit nodes, the sweep's scores)."""

    run_id: int
    fp32: str
    int8: str
    calibration_images: list[str]
    holdout_images: list[str]  # the sweep's held-back train images (none without a sweep)
    auto_float: list[str]  # the Conv nodes kept float by sensitivity
    calibration: str  # the calibration chosen, e.g. "minmax", "percentile99.999"
    method: str
    percentile: float | None
    calib: int
    per_channel: bool
    keep_float: list[str]
    float_tail: list[str]
    cle_pairs: int  # Conv pairs equalized (CLE)
    bias_corrected: int  # Convs whose bias was corrected (0: none)
    ends: str | None
    int16_nodes: list[str]
    sweep: list[dict]
    holdout: int
    imgsz: int  # the export's input size
    head: str  # "npu" (cut, host decode) or "ultralytics"

    def as_dict(self) -> dict:
        """The result as `deploy quantize` has always returned it (the API's dict, before `--json` counts the images)."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_PRINTED}

    def artefacts(self, target: str | None = None) -> list[tuple[str, Path, dict]]:
        """(kind, file, meta) of each artefact the run records: the FP32 export, then the INT8 file with its route."""
        route = {k: v for k, v in self.as_dict().items() if k not in ("run_id", "fp32", "calibration_images", "holdout_images")}
        return [("onnx/fp32", Path(self.fp32).resolve(), {"imgsz": self.imgsz, "head": self.head}),
                ("onnx/int8", Path(self.int8).resolve(), route | {"calibration_count": len(self.calibration_images), "target": target})]


def quantize_run(registry, ref: str, data: str | Path, options: QuantizeOptions | None = None, *, imgsz: int | None = None,
                 out_dir: Path | None = None, target: str | None = None, **given) -> QuantizeResult:
    """Export the run's best weights (L4: NPU head cut) to FP32 ONNX and quantize it as `options` (or `given` fields)
    say, into the run's deploy/ folder; recording them is the caller's (`services.deploy`). `seed`, unless given, is the
    run's own. `target`: with `ends`, refuse what its profile cannot run."""
    opts = QuantizeOptions.of(options, **given)
    opts.check()
    check_dataset(data, cache_dir=registry.root / "cache")
    if imgsz is not None:
        check_imgsz(imgsz)
    if registry.readonly:
        raise DeployError("quantize records artefacts; open the registry writable")
    if opts.ends is not None and target is not None:
        ends_allowed(opts.ends, target)
    resolved = resolve_model(registry, ref)
    if resolved.run_id is None:
        raise DeployError(f"{ref!r} is not a run; quantize takes a run id or name (train one with `npuyolo train`)")
    run = registry.get_run(resolved.run_id)
    if "seed" not in given and opts.seed == QuantizeOptions.seed:  # no seed asked for: the run's own draw of images
        opts = QuantizeOptions.of(opts, seed=QuantizeOptions.seed if run.recipe.seed is None else run.recipe.seed)
    imgsz = imgsz or run.recipe.imgsz
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
    return QuantizeResult(run_id=run.id, fp32=str(fp32), **info, imgsz=imgsz, head=head)
