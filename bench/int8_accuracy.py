"""INT8 mAP drop vs FP32 for a trained model: NPU-head cut + mixed precision vs naive whole-graph INT8.

Uses a run's weights (e.g. from `bench/roadsign4_series.py`) or a .pt file, the data set's val split for
scoring and its train split (only) for calibration. Prints one line per configuration.

    python bench/int8_accuracy.py --weights runs/roadsign4/.../best.pt --data ../shared/datasets/roadsign4/data.yaml
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import npuyolo  # noqa: F401
from npuyolo.deploy.eval.evaluate import evaluate_onnx
from npuyolo.deploy.export import export_onnx, load_weights
from npuyolo.deploy.int8.quantize import quantize_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default="../shared/datasets/roadsign4/data.yaml")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--auto-float", type=int, default=4, help="sensitive Conv nodes kept float in the mixed-precision run")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npuyolo-int8-"))
    src = Path(args.data).resolve().parent
    shutil.copytree(src, work / src.name)
    data = work / src.name / "data.yaml"
    model = load_weights(args.weights)
    variant = model.yaml.get("npuyolo", {}).get("variant", "?")
    rows = []

    def score(label: str, path: Path, extra: str = "") -> dict:
        t = time.time()
        r = evaluate_onnx(path, data).as_dict()
        rows.append((label, r, extra))
        print(f"{label:44s} mAP50 {r['map50']:.4f}  mAP50-95 {r['map50_95']:.4f}  P {r['precision']:.3f}  R {r['recall']:.3f}"
              f"  ({time.time() - t:.0f} s eval){extra}", flush=True)
        return r

    npu_fp32 = export_onnx(model, work / "npu_fp32.onnx", imgsz=args.imgsz, head="npu")
    ul_fp32 = export_onnx(model, work / "ul_fp32.onnx", imgsz=args.imgsz, head="ultralytics")
    print(f"{variant} from {args.weights}; {args.calib} calibration images from the train split; val split scored; imgsz {args.imgsz}")
    base_npu = score("FP32, NPU head (host decode)", npu_fp32)
    base_ul = score("FP32, Ultralytics head", ul_fp32)
    naive = work / "ul_int8.onnx"
    quantize_onnx(ul_fp32, naive, data, calib=args.calib, method="minmax")
    r = score("INT8 naive whole graph (DFL+decode inside)", naive)
    print(f"  -> drop vs FP32: {(base_ul['map50'] - r['map50']) * 100:.2f} mAP50 points")
    cut = work / "npu_int8.onnx"
    quantize_onnx(npu_fp32, cut, data, calib=args.calib, method="minmax")
    r = score("INT8 NPU head cut", cut)
    print(f"  -> drop vs FP32: {(base_npu['map50'] - r['map50']) * 100:.2f} mAP50 points")
    mixed = work / "npu_int8_mixed.onnx"
    info = quantize_onnx(npu_fp32, mixed, data, calib=args.calib, method="minmax", per_channel=True, auto_float=args.auto_float)
    r = score(f"INT8 NPU head cut, per-channel, {args.auto_float} float Convs", mixed,
              f"\n  kept float: {', '.join(c['node'] + ' (' + format(c['sqnr_db'], '.1f') + ' dB)' for c in info['auto_float'])}")
    print(f"  -> drop vs FP32: {(base_npu['map50'] - r['map50']) * 100:.2f} mAP50 points")


if __name__ == "__main__":
    main()
