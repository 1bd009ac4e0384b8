"""Deploy commands over the registry: quantize a run, evaluate an artefact (with the INT8 drop), benchmark it."""

from __future__ import annotations

from pathlib import Path

from npuyolo.compilers.envs import require
from npuyolo.data.check import check_dataset
from npuyolo.deploy.eval.compare import keep, model_stats, val_fingerprint
from npuyolo.deploy.eval.evaluate import DeployError, evaluate_onnx_matched, torch_predictor, validate
from npuyolo.deploy.export import check_imgsz, default_head, export_onnx, onnx_metadata
from npuyolo.deploy.int8.quantize import quantize_onnx
from npuyolo.deploy.eval.vendor import evaluate_compiled, is_compiled, read_compiled
from npuyolo.paths import slug
from npuyolo.resolve import resolve_model
from npuyolo.stats.compare import conversion_drop
from npuyolo.variants.checkpoint import load_weights


def quantize_run(registry, ref: str, data: str | Path, *, calib: int = 200, method: str = "minmax", per_channel: bool = False,
                 keep_float: list[str] | None = None, auto_float: int = 0, imgsz: int | None = None,
                 out_dir: Path | None = None, cle: bool = False, percentile: float | None = None, bias_correct: bool = False,
                 ends: str | None = None, target: str | None = None, sweep: bool = False, holdout: int = 50) -> dict:
    """Export the run's best weights (L4: NPU head cut) to FP32 ONNX and quantize it; both become run artefacts."""

    check_dataset(data, cache_dir=registry.root / "cache")
    if imgsz is not None:
        check_imgsz(imgsz)
    if registry.readonly:
        raise DeployError("quantize records artefacts; open the registry writable")
    if ends is not None and target is not None:
        from npuyolo.deploy.int8.quantize import ends_allowed

        ends_allowed(ends, target)
    resolved = resolve_model(ref, registry)
    if resolved.run_id is None:
        raise DeployError(f"{ref!r} is not a run; quantize takes a run id or name (train one with `npuyolo train`)")
    run = registry.get_run(resolved.run_id)
    imgsz = imgsz or run.recipe["imgsz"]
    out_dir = out_dir or registry.run_dir(run, "deploy")
    head = default_head(resolved.model)
    stem = slug(run.name)
    fp32 = export_onnx(resolved.model, out_dir / f"{stem}-{head}-{imgsz}-fp32.onnx", imgsz=imgsz, head=head)
    cal = "sweep" if sweep else (f"percentile{percentile:g}" if method == "percentile" and percentile else method)
    tag = (f"{cal}{'-pc' if per_channel else ''}{'-cle' if cle else ''}{'-bc' if bias_correct else ''}"
           f"{f'-ends{ends}' if ends else ''}{f'-float{auto_float}' if auto_float else ''}{'-keep' if keep_float else ''}")
    int8 = out_dir / f"{stem}-{head}-{imgsz}-int8-{tag}.onnx"
    info = quantize_onnx(fp32, int8, data, calib=calib, method=method, per_channel=per_channel, keep_float=keep_float,
                         auto_float=auto_float, seed=run.recipe.get("seed", 0), cle=cle, percentile=percentile,
                         bias_correct=bias_correct, ends=ends, sweep=sweep, holdout=holdout)
    registry.add_artifact(run.id, "onnx/fp32", fp32.resolve(), {"imgsz": imgsz, "head": head})
    registry.add_artifact(run.id, "onnx/int8", int8.resolve(), {k: v for k, v in info.items() if k not in ("calibration_images", "holdout_images")}
                          | {"calibration_count": len(info["calibration_images"]), "target": target})
    return {"run_id": run.id, "fp32": str(fp32), **info}


def precision_kind(path: str | Path) -> str:
    return "int8" if "npuyolo_quant" in onnx_metadata(path) else "fp32"


def checkpoint_baseline(registry, run_id: int, data, imgsz: int, fingerprint: str | None = None) -> dict | None:
    """The run's best.pt scored through the same square-letterbox pipeline as its ONNX files (once, then recorded).

    Ultralytics' validation during training batches images as rectangles (rect=True), which a static-shape ONNX
    cannot do; comparing the ONNX score with that figure mixes two pipelines. This is the like-for-like number.
    """

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


def evaluate_artefact(registry, path: str | Path, data: str | Path, layers: bool = False, qdq: str | Path | None = None) -> dict:
    """Score an ONNX artefact; for a run's INT8 artefact also score its FP32 twin and report the drop per class.

    A vendor-compiled model (.rknn, the int8 .tflite behind a Vela build, MCT's model_imx_dense.onnx behind an IMX500
    build) is scored as the vendor quantized it, in
    the compiler's own environment, beside the FP32 ONNX file it was compiled from (deploy/eval/vendor.py)."""

    path = Path(path)
    if is_compiled(path):
        art = read_compiled(path)  # before the data set is read: a file without its manifest is one line
        require(art.compiler)  # and a missing compiler
        check_dataset(data, cache_dir=registry.root / "cache")
        run_id = registry.artifact_run(art.onnx)
        fingerprint = val_fingerprint(data)
        done = same_data(registry.deploy_evals(run_id), art.onnx, fingerprint) if run_id is not None else []
        score = evaluate_compiled(path, data, fp32=done[-1].result if done else None, layers=layers, qdq=qdq)
        score.fp32["data_fingerprint"] = score.result["data_fingerprint"] = fingerprint
        out = {"run_id": run_id, **score.as_dict()}
        if score.stats is not None:
            keep(registry, score.stats, path, None, fingerprint, None)
            fp32_stats = score.fp32_stats
            if fp32_stats is not None:
                keep(registry, fp32_stats, art.onnx, run_id, fingerprint, fp32_stats.meta.get("imgsz"))
            else:
                fp32_stats = model_stats(registry, str(art.onnx), data, fingerprint)[0]
            out["drop_interval"] = {m: d.as_dict() for m, d in conversion_drop(fp32_stats, score.stats).items()}
        if run_id is not None and not registry.readonly:
            if not done:
                registry.add_deploy_eval(run_id=run_id, artefact=str(art.onnx), precision_kind="fp32", result=score.fp32)
            registry.add_deploy_eval(run_id=run_id, artefact=str(path.resolve()), precision_kind=score.kind,
                                     result={k: v for k, v in out.items() if k != "fp32"})
        return out
    if layers:
        raise DeployError("layers compares a .rknn build with our QDQ model; give the .rknn file npu compile wrote", param="layers")
    onnx_metadata(path)  # a missing or garbage file fails here, before the data set is read
    check_dataset(data, cache_dir=registry.root / "cache")
    result, stats = evaluate_onnx_matched(path, data)
    kind = precision_kind(path)
    run_id = registry.artifact_run(path)
    fingerprint = val_fingerprint(data)
    result["data_fingerprint"] = fingerprint
    keep(registry, stats, path, run_id, fingerprint, result["imgsz"])
    out = {"kind": kind, "run_id": run_id, **result}
    if run_id is not None and not registry.readonly:
        registry.add_deploy_eval(run_id=run_id, artefact=str(path.resolve()), precision_kind=kind, result=result)
        out["pt"] = checkpoint_baseline(registry, run_id, data, result["imgsz"], fingerprint)
        if kind == "int8":
            fp32 = registry.get_run(run_id).artifact_path("onnx/fp32")
            if fp32 is not None:
                # FP32 on the same data only (an eval of another data set is no baseline), scored once
                done = same_data(registry.deploy_evals(run_id), fp32, fingerprint)
                if done:
                    base, fp32_stats = done[-1].result, model_stats(registry, str(fp32), data, fingerprint)[0]
                else:
                    base, fp32_stats = evaluate_onnx_matched(fp32, data)
                    base["data_fingerprint"] = fingerprint
                    keep(registry, fp32_stats, fp32, run_id, fingerprint, base["imgsz"])
                    registry.add_deploy_eval(run_id=run_id, artefact=str(fp32), precision_kind="fp32", result=base)
                out["fp32"] = base
                out["drop_pp"] = {m: (base[m] - result[m]) * 100 for m in ("map50", "map50_95", "precision", "recall")}
                out["drop_pp_per_class"] = {c: (base["per_class"][c]["map50"] - v["map50"]) * 100
                                            for c, v in result["per_class"].items() if c in base["per_class"]}
                out["drop_interval"] = {m: d.as_dict() for m, d in conversion_drop(fp32_stats, stats).items()}
    return out
