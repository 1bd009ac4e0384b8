"""INT8 accuracy as each toolchain computes it: the vendor's own quantized model scored beside ours (issue 24).

For each model: FP32 (npuyolo's NPU head, host decode), npuyolo's QDQ routes, Ultralytics' INT8, and every vendor
compiler installed here, each scored on val through the same letterbox, host decode, NMS and metrics (`deploy eval`):
- RKNN-Toolkit2 (rk3588, rk3566): the toolkit's simulator runs the model it quantized (rebuilt from the compile's
  ONNX file, config and calibration list);
- TFLite/Vela (Ethos-U55): the full-integer TFLite file Vela compiles, on TFLite's reference kernels;
- IMX500: MCT's quantized model as `npu compile` builds it for the sensor (Ultralytics' `format='imx'` with the
  variant admitted past its YOLO11n gate), without its NMS layer, in ONNX Runtime with MCT's quantizer ops; its drop
  is against the FP32 file of the same head (Ultralytics' boxes and scores), and the note says whether it fits.
Columns: mAP50 and mAP50-95 at conf 0.001, the drop against the FP32 file each route was made from, and the
retention at the deployment threshold (mAP50 at conf 0.25 against FP32's at 0.25: what ships).

    python bench/int8_by_toolchain.py --data roadsign4/data.yaml \\
        --model L4-leaky=bench/seed_experiment/320/L4-leaky/best.pt --model L4-relu=... --imgsz 320
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

import npuyolo  # noqa: F401  (offline guards before Ultralytics)
from npuyolo.compilers.envs import installed
from npuyolo.deploy.compile import compile_model
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.plan import Accuracy, scores
from npuyolo.deploy.int8.quantize import quantize_onnx
from npuyolo.deploy.eval.vendor import evaluate_compiled
from npuyolo.errors import NpuyoloError
from npuyolo.variants.checkpoint import load_weights

HERE = Path(__file__).resolve().parent
OURS = {  # label -> quantize_onnx options (NPU head, whole graph QDQ)
    "ours: per-channel + bias correction": {"per_channel": True, "bias_correct": True},
    "ours: sweep + bias correction + per-channel": {"sweep": True, "bias_correct": True, "per_channel": True},
}
VENDORS = [("RKNN rk3588 (simulator)", "rknn", "rk3588"), ("RKNN rk3566 (simulator)", "rknn", "rk3566"),
           ("TFLite int8 for Vela U55 (reference kernels)", "vela", "ethos-u55-128"),
           ("IMX500 (MCT, ONNX Runtime)", "imx500", "imx500")]


def ultralytics_int8():
    spec = importlib.util.spec_from_file_location("int8_vs_ultralytics", HERE / "int8_vs_ultralytics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ultralytics_int8


def row(route: str, at: tuple, base: tuple, seconds: float, note: str = "") -> dict:
    (a, a_conf), (b, b_conf) = at, base
    return {"route": route, "map50": a.map50, "map50_95": a.map50_95, "drop_pp": (b.map50 - a.map50) * 100,
            "drop_pp_50_95": (b.map50_95 - a.map50_95) * 100,
            "retention": a_conf.map50 / b_conf.map50 if b_conf.map50 else None, "seconds": round(seconds, 1), "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="LABEL=path/to/best.pt (repeatable)")
    ap.add_argument("--data", type=Path, required=True, help="data.yaml: train split calibrates, val split scores")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--calib", type=int, default=200, help="calibration images of our routes and Ultralytics'")
    ap.add_argument("--vendor-calib", type=int, default=32, help="calibration images of the vendor builds")
    ap.add_argument("--conf", type=float, default=0.25, help="deployment confidence threshold for the retention")
    ap.add_argument("--skip", action="append", default=[], help="route label prefix to skip (repeatable)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, help="JSON of every row [default: WORK/int8_by_toolchain.json]")
    ap.add_argument("--merge", action="store_true", help="keep the rows already in --out; a route measured again "
                                                          "replaces its row (e.g. one toolchain installed later)")
    args = ap.parse_args()

    skip = lambda label: any(label.startswith(s) for s in args.skip)  # noqa: E731
    out = args.out or args.work / "int8_by_toolchain.json"
    before = json.loads(out.read_text()) if args.merge and out.is_file() else None
    settings = ("imgsz", "calib", "vendor_calib", "conf")
    if before is not None and any(before.get(k) != getattr(args, k) for k in settings):
        raise SystemExit(f"--merge: {out} was measured with {', '.join(f'{k} {before.get(k)}' for k in settings)}; "
                         "measure again with the same settings")
    print(f"{platform.processor() or platform.machine()}, {args.imgsz} px; ours/Ultralytics calibrate on {args.calib} "
          f"train images, vendors on {args.vendor_calib}; retention = mAP50 at conf {args.conf} / FP32's", flush=True)
    results = []
    for spec in args.model:
        label, _, pt = spec.partition("=")
        pt = Path(pt)
        work = args.work / label
        work.mkdir(parents=True, exist_ok=True)
        rows = []

        def add(r: dict) -> None:
            rows.append(r)
            kept = "-" if r["retention"] is None else f"{r['retention']:.3f}"
            print(f"{label:10s} {r['route']:46s} mAP50 {r['map50']:.4f}  mAP50-95 {r['map50_95']:.4f}  drop "
                  f"{r['drop_pp']:+.2f} pp  retention@{args.conf} {kept}  ({r['seconds']:.0f} s)"
                  f"{'  ' + r['note'] if r['note'] else ''}", flush=True)

        t = time.perf_counter()
        model = load_weights(pt)
        fp32 = export_onnx(model, work / "fp32-npu.onnx", imgsz=args.imgsz, head="npu")
        base = scores(fp32, args.data, args.conf)
        add(row("FP32 (NPU head, host decode)", base, base, time.perf_counter() - t))
        for route, opts in OURS.items():
            if skip(route):
                continue
            t = time.perf_counter()
            info = quantize_onnx(fp32, work / f"ours-{len(rows)}.onnx", args.data, calib=args.calib, **opts)
            add(row(route, scores(info["int8"], args.data, args.conf), base, time.perf_counter() - t,
                    f"chosen: {info['calibration']}" if opts.get("sweep") else ""))
        if not skip("Ultralytics"):
            t = time.perf_counter()
            fp32_ul = export_onnx(model, work / "fp32-ultralytics.onnx", imgsz=args.imgsz, head="ultralytics")
            base_ul = scores(fp32_ul, args.data, args.conf)
            ul = ultralytics_int8()(pt, args.data, args.imgsz, fp32_ul, work)
            add(row("Ultralytics INT8 (export quantize=8)", scores(ul, args.data, args.conf), base_ul,
                    time.perf_counter() - t, "vs its own FP32 (Ultralytics head); Conv/MatMul only"))
        for route, compiler, target in VENDORS:
            if skip(route):
                continue
            if installed(compiler) is None:
                print(f"{label:10s} {route:46s} not installed here (npuyolo compilers install {compiler})", flush=True)
                continue
            t = time.perf_counter()
            try:
                res = compile_model(None, str(pt), compiler, target, args.data, imgsz=args.imgsz, head="npu",
                                    workdir=work / "npu", calib=args.vendor_calib)
                built = {"rknn": lambda b: b.rknn_file, "vela": lambda b: b.tflite, "imx500": lambda b: b.scored}[compiler](res.build)
                if not built:
                    raise NpuyoloError(f"{compiler} wrote no model to score ({getattr(res.build, 'error', None) or 'see its log'})")
                score = evaluate_compiled(built, args.data, deploy_conf=args.conf)
            except NpuyoloError as e:
                print(f"{label:10s} {route:46s} failed: {e}", flush=True)
                continue
            note = f"contract {score.contract}"
            if compiler == "vela":
                perf = res.build.performance
                note += f"; Vela {perf.get('accelerator', target)} estimate {perf.get('inference_ms', float('nan')):.2f} ms"
            if compiler == "imx500":
                mem = res.build.memory
                note += (f"; vs FP32 Ultralytics head; converter {'ran' if res.build.converter_ran else 'did not run'}, "
                         f"{'fits' if mem.get('fits') else 'does NOT fit'} ({mem.get('used_mb')} of {mem.get('available_mb')} MB)")
            r = row(route, (Accuracy.of(score.result), Accuracy.of(score.at_conf)),
                    (Accuracy.of(score.fp32), Accuracy.of(score.fp32_at_conf)),
                    time.perf_counter() - t, note)
            summary = res.build.summary()
            r["compiler"] = {"version": res.build.version, "rows_npu": summary.get("rows_npu"),
                             "rows_cpu": summary.get("rows_cpu"), "cpu_rows": summary.get("cpu_rows"),
                             "inference_ms": summary.get("inference_ms"), "agreement": res.agreement.share,
                             "calibration": res.calibration, "contract": score.contract, "cosine": score.cosine}
            add(r)
        results.append({"model": label, "weights": str(pt), "rows": rows})

    if before is not None:  # earlier rows first, in their order; a route measured now replaces its row
        earlier = {m["model"]: m for m in before["models"]}
        for m in results:
            new = {r["route"]: r for r in m["rows"]}
            old = earlier.pop(m["model"], {"rows": []})["rows"]
            m["rows"] = [new.pop(r["route"], r) for r in old] + list(new.values())
        results = list(earlier.values()) + results

    print(f"\n| model | route | mAP50 | mAP50-95 | drop vs FP32 (mAP50 pp) | retention at conf {args.conf} |")
    print("|---|---|---|---|---|---|")
    for m in results:
        for r in m["rows"]:
            kept = "-" if r["retention"] is None else f"{r['retention']:.3f}"
            print(f"| {m['model']} | {r['route']} | {r['map50']:.4f} | {r['map50_95']:.4f} | {r['drop_pp']:+.2f} | {kept} |")
    out.write_text(json.dumps({"imgsz": args.imgsz, "calib": args.calib, "vendor_calib": args.vendor_calib,
                               "conf": args.conf, "machine": platform.processor() or platform.machine(),
                               "models": results}, indent=1))
    print(f"\nrows in {out}")


if __name__ == "__main__":
    main()
