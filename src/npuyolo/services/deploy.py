"""Deployment operations: INT8 (quantize, QAT), evaluation of any artefact with the INT8 drop, deployment plans (of a
run, of a series), board bundles, latency and prediction. Each is what both doors call; nothing here prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from npuyolo.services.common import registry_of, registry_path, targets_arg
from npuyolo.services.options import of
from npuyolo.services.options import BenchOptions, BundleOptions, EvalOptions, PlanOptions, PredictOptions, QatOptions

__all__ = ["bench", "bundle", "checkpoint_baseline", "evaluate", "plan", "precision_kind", "predict", "qat", "quantize",
           "series_plan"]


# ---------------------------------------------------------------------------------------------- INT8
def quantize(registry: Any, run: str, data: str | Path, options=None, *, imgsz: int | None = None,
             target: str | None = None):
    """FP32 + INT8 QDQ ONNX of a run (calibrated on train images only), both recorded as the run's artefacts; returns
    a `npuyolo.deploy.int8.run.QuantizeResult`. `options`: a `QuantizeOptions` (deploy/int8/options.py); `target`:
    with `ends`, refuse what its profile cannot run."""
    from npuyolo.deploy.int8.options import QuantizeOptions
    from npuyolo.deploy.int8.run import quantize_run

    o = of(QuantizeOptions, options)
    registry = registry_of(registry)
    result = quantize_run(registry, run, data, o, imgsz=imgsz, target=target)
    record_quantized(registry, result, target)
    return result


def record_quantized(registry, result, target: str | None = None) -> None:
    """The record step of a quantize: the FP32 export and the INT8 file (with its route) as the run's artefacts."""
    for kind, path, meta in result.artefacts(target):
        registry.add_artifact(result.run_id, kind, path, meta)


def qat(registry: Any, run: str, data: str | Path | None = None, options: QatOptions | None = None, *,
        verbose: bool = True):
    """Quantization-aware fine-tuning of a run as a new run (NVIDIA ModelOpt through Ultralytics), then its INT8 QDQ;
    the new run records its parent, then the files as `quantize` records them. Returns a `npuyolo.deploy.qat.QatResult`."""
    from npuyolo.deploy.qat import qat_run

    o = options or QatOptions()
    registry = registry_of(registry)
    result = qat_run(registry, run, data, epochs=o.epochs, lr0=o.lr0, calib=o.calib, per_channel=o.per_channel,
                     bias_correct=o.bias_correct, ends=o.ends, verbose=verbose,
                     on_trained=lambda run_id, row: registry.add_artifact(run_id, *row))  # the parent, before quantizing
    record_quantized(registry, result.quantized)
    return result


# ---------------------------------------------------------------------------------------------- evaluation
def precision_kind(path: str | Path) -> str:
    from npuyolo.deploy.export import onnx_metadata

    return "int8" if "npuyolo_quant" in onnx_metadata(path) else "fp32"


def checkpoint_baseline(registry, run_id: int, data, imgsz: int, fingerprint: str | None = None) -> dict | None:
    """The run's best.pt scored through the same square-letterbox pipeline as its ONNX files (once, then recorded).

    Ultralytics' validation during training batches images as rectangles (rect=True), which a static-shape ONNX
    cannot do; comparing the ONNX score with that figure mixes two pipelines. This is the like-for-like number.
    """
    from npuyolo.deploy.eval.compare import val_fingerprint
    from npuyolo.deploy.eval.evaluate import torch_predictor, validate
    from npuyolo.variants.checkpoint import load_weights

    run = registry.get_run(run_id)
    best = run.artifact_path("weights/best")
    if best is None:
        return None
    fingerprint = fingerprint or val_fingerprint(data)
    done = [e for e in registry.deploy_evals(run_id) if e.precision_kind == "pt" and e.result.get("imgsz") == imgsz
            and e.result.get("data_fingerprint") == fingerprint]  # on this data set only
    if done:
        return done[-1].result
    model = load_weights(best)
    result = {"artefact": str(best), **validate(torch_predictor(model), data, imgsz, dict(model.names)),
              "data_fingerprint": fingerprint}
    registry.add_deploy_eval(run_id=run_id, artefact=str(best), precision_kind="pt", result=result)
    return result


def same_data(evals, artefact: str | Path, fingerprint: str) -> list:
    """Recorded evals of one artefact on the data set with this fingerprint (older rows, without one, are not)."""
    return [e for e in evals if e.artefact == str(artefact) and e.result.get("data_fingerprint") == fingerprint]


def evaluate(registry: Any, artefact: str | Path, data: str | Path, options: EvalOptions | None = None):
    """Score an artefact on `data`'s val split; for a run's INT8 artefact also its FP32 twin, and the drop per class
    with its paired interval. A vendor-compiled model (.rknn, the int8 .tflite behind a Vela build, MCT's
    model_imx_dense.onnx behind an IMX500 build) is scored as the vendor quantized it, in the compiler's own
    environment, beside the FP32 ONNX file it was compiled from (deploy/eval/vendor.py). Recorded on the run; returns a
    `npuyolo.deploy.eval.evaluate.EvalResult`."""
    from npuyolo.deploy.eval.vendor import is_compiled

    o = options or EvalOptions()
    path = Path(artefact)
    if is_compiled(path):
        return _evaluate_compiled(registry, path, data, o)
    from npuyolo.data.check import check_dataset
    from npuyolo.deploy.eval.compare import keep, model_stats, val_fingerprint
    from npuyolo.deploy.eval.evaluate import DeployError, EvalResult, evaluate_onnx_matched
    from npuyolo.deploy.export import onnx_metadata
    from npuyolo.stats.compare import conversion_drop

    if o.layers:
        raise DeployError("layers compares a .rknn build with our QDQ model; give the .rknn file npu compile wrote", param="layers")
    onnx_metadata(path)  # a missing or garbage file fails here, before the data set is read
    registry = registry_of(registry)
    check_dataset(data, cache_dir=registry.root / "cache")
    score, stats = evaluate_onnx_matched(path, data)
    kind = precision_kind(path)
    run_id = registry.artifact_run(path)
    fingerprint = val_fingerprint(data)
    result = score.as_dict() | {"data_fingerprint": fingerprint}  # what the deploy-eval row records
    keep(registry, stats, path, run_id, fingerprint, score.imgsz)
    found: dict[str, Any] = {}
    if run_id is not None and not registry.readonly:
        found |= {"recorded": True, "pt": checkpoint_baseline(registry, run_id, data, score.imgsz, fingerprint)}
        if kind == "int8":
            fp32 = registry.get_run(run_id).artifact_path("onnx/fp32")
            if fp32 is not None:
                # FP32 on the same data only (an eval of another data set is no baseline), scored once
                done = same_data(registry.deploy_evals(run_id), fp32, fingerprint)
                if done:
                    base, fp32_stats = done[-1].result, model_stats(registry, str(fp32), data, fingerprint)[0]
                else:
                    fp32_score, fp32_stats = evaluate_onnx_matched(fp32, data)
                    base = fp32_score.as_dict() | {"data_fingerprint": fingerprint}
                    keep(registry, fp32_stats, fp32, run_id, fingerprint, base["imgsz"])
                    registry.add_deploy_eval(run_id=run_id, artefact=str(fp32), precision_kind="fp32", result=base)
                found |= {"fp32": base,
                          "drop_pp": {m: (base[m] - result[m]) * 100 for m in ("map50", "map50_95", "precision", "recall")},
                          "drop_pp_per_class": {c: (base["per_class"][c]["map50"] - v["map50"]) * 100
                                                for c, v in result["per_class"].items() if c in base["per_class"]},
                          "drop_interval": {m: d.as_dict() for m, d in conversion_drop(fp32_stats, stats).items()}}
        # the drop's paired interval goes into the INT8 row, so a report prints it without scoring anything again
        registry.add_deploy_eval(run_id=run_id, artefact=str(path.resolve()), precision_kind=kind,
                                 result=result | ({"drop_interval": found["drop_interval"]} if "drop_interval" in found else {}))
    return EvalResult(kind=kind, run_id=run_id, **result, **found)


def _evaluate_compiled(registry: Any, path: Path, data: str | Path, o: EvalOptions):
    """`evaluate` of a vendor-compiled model, beside the FP32 ONNX file it was built from."""
    from npuyolo.compilers.registry import require
    from npuyolo.data.check import check_dataset
    from npuyolo.deploy.eval.compare import keep, model_stats, val_fingerprint
    from npuyolo.deploy.eval.evaluate import EvalResult
    from npuyolo.deploy.eval.vendor import evaluate_compiled, read_compiled
    from npuyolo.stats.compare import conversion_drop

    art = read_compiled(path)  # before the data set is read: a file without its manifest is one line
    require(art.compiler)  # and a missing compiler
    registry = registry_of(registry)
    check_dataset(data, cache_dir=registry.root / "cache")
    run_id = registry.artifact_run(art.onnx)
    fingerprint = val_fingerprint(data)
    done = same_data(registry.deploy_evals(run_id), art.onnx, fingerprint) if run_id is not None else []
    score = evaluate_compiled(path, data, fp32=done[-1].result if done else None, layers=o.layers, qdq=o.qdq)
    score.fp32["data_fingerprint"] = score.result["data_fingerprint"] = fingerprint
    drop_interval = None
    if score.stats is not None:
        keep(registry, score.stats, path, None, fingerprint, None)
        fp32_stats = score.fp32_stats
        if fp32_stats is not None:
            keep(registry, fp32_stats, art.onnx, run_id, fingerprint, fp32_stats.meta.get("imgsz"))
        else:
            fp32_stats = model_stats(registry, str(art.onnx), data, fingerprint)[0]
        drop_interval = {m: d.as_dict() for m, d in conversion_drop(fp32_stats, score.stats).items()}
    recorded = run_id is not None and not registry.readonly
    out = EvalResult(run_id=run_id, **score.as_dict(), drop_interval=drop_interval, recorded=recorded)
    if recorded:
        if not done:
            registry.add_deploy_eval(run_id=run_id, artefact=str(art.onnx), precision_kind="fp32", result=score.fp32)
        registry.add_deploy_eval(run_id=run_id, artefact=str(path.resolve()), precision_kind=score.kind,
                                 result={k: v for k, v in out.as_dict().items() if k != "fp32"})
    return out


# ---------------------------------------------------------------------------------------------- plans
def plan(registry: Any, model: str, targets: list[str], data: str | Path, options: PlanOptions | None = None):
    """Every artefact that could serve each target, verified (placement, FP32/INT8 accuracy, accuracy at the
    deployment threshold) and ranked, the choice recorded on the run; returns a `npuyolo.deploy.plan.Plan`."""
    from npuyolo.deploy.plan import build_plan

    o = options or PlanOptions()
    targets = targets_arg(targets)
    return build_plan(registry_of(registry), model, targets, data, **o.as_dict())


def series_plan(registry: Any, name: str, targets: list[str], data: str | Path | None = None,
                options: PlanOptions | None = None):
    """`plan` for each finished member of a series (each recorded on its run): a `SeriesPlan` whose `cells()` say
    which artefact of which variant to ship on which target. `data` defaults to the series' own data set."""
    from npuyolo.deploy.plan import build_series_plan

    o = options or PlanOptions()
    targets = targets_arg(targets)
    return build_series_plan(registry_of(registry), name, targets, data, **o.as_dict())


# ---------------------------------------------------------------------------------------------- using an artefact
def bundle(registry: Any, run: str | None = None, target: str | None = None, *, artefact: str | Path | None = None,
           out: str | Path | None = None, options: BundleOptions | None = None):
    """A torch-free board package (folder + .tar.gz) of the target's chosen artefact in the run's recorded plan, or of
    `artefact`; returns a `npuyolo.deploy.bundle.Bundle`."""
    from npuyolo.deploy.bundle.service import bundle_model

    o = options or BundleOptions()
    return bundle_model(registry_path(registry), run, target, artefact=artefact, out=out, conf=o.conf, iou=o.iou)


def bench(artefact: str | Path, options: BenchOptions | None = None) -> dict:
    """ONNX Runtime CPU latency of an ONNX file: the model alone and the whole pipeline (pre-process, decode, NMS)."""
    from npuyolo.deploy.infer.latency import bench_onnx

    o = options or BenchOptions()
    return bench_onnx(artefact, runs=o.runs, threads=o.threads)


def predict(registry: Any, model: str, source: str | Path, options: PredictOptions | None = None, *,
            out: str | Path | None = None, on_start: Callable[[int], None] | None = None,
            on_frame: Callable[[], None] | None = None):
    """Detections of a run, .pt or ONNX artefact on an image, folder, glob or video; annotated copies and
    predictions.json/.csv written to `out` (a run's predict/ folder by default). Returns a `PredictResult`. The
    registry is opened (read-only) only when `model` is a run."""
    from npuyolo.deploy.infer.predict import run_predict

    o = options or PredictOptions()
    return run_predict(registry_path(registry), model, source, conf=o.conf, iou=o.iou, imgsz=o.imgsz, out=out,
                       max_det=o.max_det, on_start=on_start, on_frame=on_frame)
