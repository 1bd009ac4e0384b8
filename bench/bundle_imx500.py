"""The IMX500 bundle of an `npu compile --compiler imx500` build, its runner run on a host with MCT's model_imx.onnx
standing in for the sensor, scored beside `deploy eval` of the same build (issue 33).

    python bench/bundle_imx500.py BUILD_FOLDER --data data.yaml [--conf C]

The sensor is not here. What stands in for it is the network it runs: model_imx.onnx, the file MCT gave the converter,
in ONNX Runtime with MCT's quantizer ops and edge-mdt-cl's NMS op, in the imx500 compiler's environment. The bundle's
own runner does the rest, as it does on the Pi: letterbox, the sensor's outputs (boxes, scores, classes, count) to
detections. `deploy eval` scores MCT's model without its NMS layer (model_imx_dense.onnx) with npuyolo's decode and
Ultralytics' validation NMS (multi-label, IoU 0.7, 300 boxes): the same quantized network, the same kind of NMS.
Both are scored by Ultralytics' ap_per_class, matched in letterbox pixels (bench/bundle.py's score_detections), at
the same threshold: the sensor's NMS already drops every score under its own (0.25 in the builds seen here), so both
are scored there (default: the bundle's conf), not at the 0.001 `deploy eval` uses by default.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# In the imx500 environment: the bundle's runner, its host runtime and IMX500 post-processing, detections kept in
# letterbox pixels and unclipped (Ultralytics' validator matches there; results.json clips to the image).
LETTERBOX_DETS = r"""
import importlib.util, json, sys
from pathlib import Path
folder, val, out, conf = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
spec = importlib.util.spec_from_file_location("npuyolo_infer", folder / "npuyolo_infer.py")
infer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(infer)
bundle = infer.Bundle(folder)
m = bundle.manifest
found = {}
for p in infer.list_images(val):
    rgb = infer.read_image(p)
    canvas, gain, pad = infer.letterbox(rgb, m["imgsz"])
    raw = bundle.runtime.run(infer.prepare(canvas, m["input"], None))
    dets = infer.imx500_detections(raw, m, conf)
    found[p.name] = {"dets": dets.tolist(), "gain": list(gain), "pad": list(pad), "hw": list(rgb.shape[:2]),
                     "count": int(raw[3].reshape(-1)[0])}
out.write_text(json.dumps(found))
"""


def _bench_bundle():
    spec = importlib.util.spec_from_file_location("bench_bundle", HERE / "bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imx500_scores(build: Path, data: Path, conf: float | None = None) -> dict:
    """The build's bundle, its runner (CLI and letterbox detections) in the imx500 environment, scored beside
    `deploy eval` of the build's model_imx_dense.onnx on `data`'s val split."""
    from npuyolo.compilers.envs import clean_env, require
    from npuyolo.data.check import load_data_yaml
    from npuyolo.deploy.bundle import build_bundle
    from npuyolo.deploy.eval.vendor import evaluate_compiled

    bench = _bench_bundle()
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-imx500-"))
    try:
        t = time.perf_counter()
        bundle = build_bundle(build, work / "out")
        bundle_s = time.perf_counter() - t
        conf = bundle.manifest.conf if conf is None else conf
        private = bench.private_data(data, work)
        cfg, root, _ = load_data_yaml(private)
        val = root / cfg["val"]
        python, env = require("imx500").python, clean_env()
        t = time.perf_counter()  # 1. as a user runs it on a host: the CLI, results.json in the images' pixels
        done = subprocess.run([python, str(bundle.folder / "npuyolo_infer.py"), str(val), "--out", str(work / "r.json"),
                               "--conf", str(conf)], env=env, capture_output=True, text=True)
        run_s = time.perf_counter() - t
        if done.returncode:
            raise SystemExit(f"the bundle's runner failed in the imx500 environment:\n{done.stderr[-3000:]}")
        done = subprocess.run([python, "-c", LETTERBOX_DETS, str(bundle.folder), str(val), str(work / "lb.json"), str(conf)],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the bundle's runner failed in the imx500 environment:\n{done.stderr[-3000:]}")
        spec = importlib.util.spec_from_file_location("npuyolo_infer", bundle.folder / "npuyolo_infer.py")
        infer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(infer)
        found = {Path(r["source"]).name: r for r in json.loads((work / "r.json").read_text())["predictions"]}
        lb = json.loads((work / "lb.json").read_text())
        gap = 0.0  # the CLI's boxes are the letterbox ones mapped back and clipped
        for name, r in found.items():
            d = np.array(lb[name]["dets"], np.float32).reshape(-1, 6)
            back = infer.unletterbox(d, lb[name]["gain"], lb[name]["pad"], r["width"], r["height"])
            cli = np.array([[b[k] for k in ("x1", "y1", "x2", "y2", "conf", "cls")] for b in r["boxes"]], np.float32).reshape(-1, 6)
            if cli.shape != back.shape or (cli[:, 5] != back[:, 5]).any():
                raise SystemExit(f"{name}: the CLI and the runner's Bundle kept different boxes")
            gap = max(gap, float(np.abs(cli[:, :4] - back[:, :4]).max(initial=0)))

        def detect(p):
            r = lb[p.name]
            return np.array(r["dets"], np.float32).reshape(-1, 6), r["gain"], r["pad"], r["hw"]

        images = sorted(p for p in val.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        mine = bench.score_detections(detect, images)
        t = time.perf_counter()
        # as `deploy eval --conf` runs it, on the private copy of val (Ultralytics writes labels/val.cache beside the
        # labels: never into a shared data set) with the user's train images for the contract check's golden photo
        user_cfg, user_root, _ = load_data_yaml(data)
        scored = private.with_name("eval.yaml")
        scored.write_text(private.read_text().replace("train: images/val", f"train: {(user_root / user_cfg['train']).resolve()}", 1))
        theirs = evaluate_compiled(build / "model_imx_dense.onnx", scored, conf=conf)
        eval_s = time.perf_counter() - t
        counts = [lb[p.name]["count"] for p in images]
        out = {"build": str(build), "conf": conf, "bundle": mine, "cli_vs_bundle_max_px": gap,
               "deploy_eval": {k: theirs.result[k] for k in ("map50", "map50_95", "images")},
               "diff_map50": mine["map50"] - theirs.result["map50"], "diff_map50_95": mine["map50_95"] - theirs.result["map50_95"],
               "sensor_rows": {"min": min(counts), "max": max(counts)}, "runtime": theirs.runtime,
               "seconds": {"bundle_build": bundle_s, "bundle_run_cli": run_s, "deploy_eval": eval_s}}
        print(f"val ({mine['images']} images, conf {conf}): IMX500 bundle, model_imx.onnx as the sensor, mAP50 {mine['map50']:.4f} / "
              f"mAP50-95 {mine['map50_95']:.4f}; deploy eval of model_imx_dense.onnx {theirs.result['map50']:.4f} / "
              f"{theirs.result['map50_95']:.4f} (diff {out['diff_map50']:+.4f} / {out['diff_map50_95']:+.4f}); CLI boxes = "
              f"the Bundle's within {gap:.4f} px; sensor rows per image {min(counts)}-{max(counts)}; runner CLI {run_s:.0f} s, "
              f"deploy eval {eval_s:.0f} s")
        print(json.dumps(out))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path, help="an `npu compile --compiler imx500` build folder")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--conf", type=float, default=None, help="score threshold [default: the bundle's, at least the sensor's]")
    a = ap.parse_args()
    imx500_scores(a.build, a.data, a.conf)


if __name__ == "__main__":
    main()
