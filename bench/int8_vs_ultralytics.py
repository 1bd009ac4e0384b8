"""INT8 routes side by side on one model: FP32, Ultralytics' own INT8, and each npuyolo route (PTQ options, QAT).

For each: mAP50, mAP50-95, drop vs FP32, ONNX Runtime CPU p50 (model alone), speed-up, and how many compute nodes
still run in float (0 = full-integer: what an integer-only NPU can execute). Every route calibrates on the *train*
split (Ultralytics' export defaults to the val split; it is given split=train here so that no route has seen the
images it is scored on). Scoring uses the val split through one pipeline (deploy eval).

    python bench/int8_vs_ultralytics.py                       # demo scale: synthetic signs, L4-leaky, 12 epochs, 160 px
    python bench/int8_vs_ultralytics.py --weights best.pt --data data.yaml --imgsz 640   # e.g. a roadsign4 run
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import onnx

import npuyolo  # noqa: F401  (offline guards before Ultralytics)
from npuyolo.deploy.eval.evaluate import evaluate_onnx
from npuyolo.deploy.export import export_onnx, load_weights, onnx_metadata, set_metadata
from npuyolo.deploy.infer.latency import bench_onnx
from npuyolo.deploy.int8.qdq import float_compute_nodes
from npuyolo.deploy.int8.quantize import quantize_onnx

ROUTES = {  # label -> quantize_onnx options (NPU head cut, whole graph QDQ)
    "PTQ minmax per-tensor": {},
    "PTQ minmax per-tensor + bias correction": {"bias_correct": True},
    "PTQ minmax per-channel": {"per_channel": True},
    "PTQ per-channel + bias correction": {"per_channel": True, "bias_correct": True},
    "PTQ sweep (held-back train) + bias correction": {"sweep": True, "bias_correct": True},
    "PTQ per-channel + bias correction + int16 ends": {"per_channel": True, "bias_correct": True, "ends": "int16"},
}


def demo_model(work: Path, epochs: int, val: int) -> tuple[Path, Path, str, Path]:
    """The demo's L4-leaky (synthetic signs, 12 epochs at 160 px, lr0 0.01) with a larger val split to score on."""
    from npuyolo.data.synth import synthesize
    from npuyolo.registry.db import Registry
    from npuyolo.train.recipe import Recipe
    from npuyolo.train.trainer import train_variant

    data = synthesize(work / "synth", n_train=300, n_val=val, imgsz=320, seed=0, force=True)  # --work reused: the same set
    reg = Registry(work / "runs" / "npuyolo.db")
    recipe = Recipe(epochs=epochs, imgsz=160, batch=16, lr0=0.01, warmup_epochs=1, plots=False)
    run = train_variant(reg, "L4-leaky", data, recipe, name="bench-L4-leaky", verbose=False)
    return reg.get_run(run.run_id).artifact_path("weights/best"), data, "bench-L4-leaky", reg.path


def ultralytics_int8(weights: Path, data: Path, imgsz: int, fp32_ul: Path, work: Path) -> Path:
    """Ultralytics' own `export(format='onnx', quantize=8)`, calibrated on the train split, with our metadata copied in."""
    from ultralytics import YOLO

    src = work / "ultralytics.pt"
    shutil.copyfile(weights, src)
    out = Path(YOLO(str(src)).export(format="onnx", quantize=8, data=str(data), imgsz=imgsz, batch=1, split="train", verbose=False))
    model = onnx.load(str(out))
    set_metadata(model, {p.key: p.value for p in model.metadata_props} | onnx_metadata(fp32_ul))
    onnx.save(model, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="a trained .pt (default: train the demo-scale L4-leaky here)")
    ap.add_argument("--data", help="its data.yaml (calibration: train split; scoring: val split)")
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--val", type=int, default=500, help="demo scale: synthetic val images to score on")
    ap.add_argument("--epochs", type=int, default=12, help="demo scale: training epochs")
    ap.add_argument("--qat-epochs", type=int, default=5, help="0 skips QAT")
    ap.add_argument("--runs", type=int, default=50, help="timed ORT runs per model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, help="working folder (kept) [default: a temporary one]")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="npuyolo-int8-vs-ul-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    registry_path = run_name = None
    if args.weights:
        weights, data = Path(args.weights), Path(args.data)
    else:
        weights, data, run_name, registry_path = demo_model(work, args.epochs, args.val)
    model = load_weights(weights)
    variant = (getattr(model, "yaml", {}) or {}).get("npuyolo", {}).get("variant", "?")
    fp32 = export_onnx(model, work / "fp32-npu.onnx", imgsz=args.imgsz, head="npu")
    fp32_ul = export_onnx(model, work / "fp32-ultralytics.onnx", imgsz=args.imgsz, head="ultralytics")
    rows = []

    def measure(label: str, path: Path, note: str = "") -> dict:
        r = evaluate_onnx(path, data).as_dict()
        lat = bench_onnx(path, runs=args.runs, warmup=5, threads=args.threads)["model"]["p50_ms"]
        floats = len(float_compute_nodes(onnx.load(str(path))))
        row = {"route": label, "map50": r["map50"], "map50_95": r["map50_95"], "p50_ms": lat, "float_nodes": floats, "note": note}
        rows.append(row)
        print(f"{label:48s} mAP50 {r['map50']:.4f}  mAP50-95 {r['map50_95']:.4f}  p50 {lat:6.2f} ms  float nodes {floats}"
              f"{'  ' + note if note else ''}", flush=True)
        return r

    print(f"{variant} from {weights}; imgsz {args.imgsz}; {args.calib} calibration images (train split); "
          f"ORT CPU {args.threads} threads; {platform.processor() or platform.machine()}", flush=True)
    base = measure("FP32 (NPU head, host decode)", fp32)
    measure("FP32 (Ultralytics head)", fp32_ul)
    measure("Ultralytics INT8 (export quantize=8)", ultralytics_int8(weights, data, args.imgsz, fp32_ul, work), "Conv/MatMul only")
    for label, opts in ROUTES.items():
        info = quantize_onnx(fp32, work / f"{label.replace(' ', '_').replace('/', '')}.onnx", data, calib=args.calib, **opts)
        note = f"chosen: {info['calibration']}" if opts.get("sweep") else ""
        measure(label, Path(info["int8"]), note)
    if args.qat_epochs and registry_path:
        from npuyolo.services import deploy
        from npuyolo.services.options import QatOptions

        info = deploy.qat(registry_path, run_name, data, QatOptions(epochs=args.qat_epochs, calib=args.calib, per_channel=True,
                                                                    bias_correct=True), verbose=False).quantized
        measure(f"QAT {args.qat_epochs} epochs + per-channel + bias correction", Path(info.int8))
        measure(f"  (its FP32, after {args.qat_epochs} more epochs)", Path(info.fp32))
    elif args.qat_epochs:
        print("QAT: needs a registry run; run without --weights (demo scale) or use `npuyolo deploy qat RUN`")

    ul = next(r for r in rows if r["route"].startswith("Ultralytics INT8"))
    print("\n| route | mAP50 | mAP50-95 | drop vs FP32 (mAP50 pp) | ORT p50 ms | vs FP32 | vs Ultralytics INT8 | float compute nodes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['route'].strip()}{' (' + r['note'] + ')' if r['note'] else ''} | {r['map50']:.4f} | {r['map50_95']:.4f} | "
              f"{(base['map50'] - r['map50']) * 100:+.2f} | {r['p50_ms']:.2f} | {rows[0]['p50_ms'] / r['p50_ms']:.2f}x | "
              f"{ul['p50_ms'] / r['p50_ms']:.2f}x | {r['float_nodes']} |")
    (work / "int8_vs_ultralytics.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{time.time() - t0:.0f} s in all; rows in {work / 'int8_vs_ultralytics.json'}")


if __name__ == "__main__":
    main()
