"""Time `deploy bundle`'s host side (issue 33): post-processing per image and the ONNX bundle end to end.

    python bench/bundle.py [--weights bench/seed_experiment/320/L4-relu/best.pt] [--images DIR] [--count 100]
    python bench/bundle.py --rknn BUILD.rknn --data data.yaml   # the .rknn bundle in RKNN-Toolkit2's simulator
    python bench/bundle.py --tflite BUILD_full_integer_quant.tflite --data data.yaml   # the int8 .tflite bundle in LiteRT

On the same NPU-head outputs of a 320 px model (the committed L4-relu unless --weights), per image:
- the bundle's NumPy decode + NMS (`npuyolo_infer.py`: candidates over conf, DFL for them only, greedy class-aware NMS);
- its C post-processor (`postprocess.c`, built here with cc into a shared library, called through ctypes);
- what `npuyolo predict` does: the full DFL decode (`npuyolo.deploy.decode`) then Ultralytics' torch NMS;
each at the deployment threshold (conf 0.25) and at the validation one (0.001, the most candidates). Then end to end
on the same images: the bundle's runner in-process (read, letterbox, ONNX Runtime, post-processing) against
`npuyolo predict`'s `predict_source` (model loaded once for both), and both CLIs as a user runs them (process start
included). It checks, on every image, that the bundle and predict keep the same boxes. With --data, it also scores the
bundle's own detections (conf 0.001) on the whole val split with Ultralytics' matching and AP, beside `deploy eval`.

With --rknn (a .rknn that `npuyolo npu compile` built): only the accuracy of that file's bundle as it runs, its
`npuyolo_infer.py` in the compiler's environment with the simulator standing in for rknnlite, on --data's val split,
beside `deploy eval` of the same file (issue 33: within 0.002). With --tflite (the int8 .tflite that `npu compile
--compiler vela` built, the file Vela compiles): the same, its runner in the vela environment on LiteRT itself
(ai_edge_litert, installed there), where `deploy eval` runs TensorFlow Lite's reference kernels.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "bench" / "seed_experiment" / "320" / "L4-relu" / "best.pt"
IMAGES = REPO.parent / "shared" / "datasets" / "roadsign4" / "images" / "val"
DATA = REPO.parent / "shared" / "datasets" / "roadsign4" / "data.yaml"


from npuyolo.deploy.bundle.cabi import Config, Detection, Tensor  # noqa: E402  (postprocess.h's records)


def per_image_ms(fn, items, repeat: int = 5) -> float:
    """The best of `repeat` passes' mean ms per item: on a shared machine the other jobs only ever add time, so the
    fastest pass is the closest to the code's own cost (the median is in the JSON line as `*_median`)."""
    for it in items[:5]:
        fn(it)
    passes = []
    for _ in range(repeat):
        t = time.perf_counter()
        for it in items:
            fn(it)
        passes.append((time.perf_counter() - t) * 1e3 / len(items))
    MEDIANS.append(statistics.median(passes))
    return min(passes)


MEDIANS: list[float] = []


def private_data(data: Path, work: Path) -> Path:
    """A data.yaml over links to the val images and copies of their labels in `work`: Ultralytics' validator writes
    its label cache (`labels/val.cache`) beside the labels, which must not land in a shared data set."""
    from npuyolo.data.check import load_data_yaml

    cfg, root, _ = load_data_yaml(data)
    src = (root / cfg["val"]).resolve()
    images, labels = work / "data" / "images" / "val", work / "data" / "labels" / "val"
    images.mkdir(parents=True), labels.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            (images / p.name).symlink_to(p)
            label = Path(str(p.with_suffix(".txt")).replace("/images/", "/labels/"))
            if label.is_file():
                shutil.copyfile(label, labels / label.name)
    names = "".join(f"  {k}: {v}\n" for k, v in cfg["names"].items())
    (work / "data" / "data.yaml").write_text(f"train: images/val\nval: images/val\nnc: {cfg['nc']}\nnames:\n{names}")
    return work / "data" / "data.yaml"


def bundle_map(infer, runner, images: list[Path]) -> dict:
    """mAP of the bundle's own detections (letterbox, runtime, NumPy decode + NMS at conf 0.001), matched to the YOLO
    labels in letterbox pixels as Ultralytics' validator matches them, AP by Ultralytics' `ap_per_class`."""
    m = runner.manifest

    def detect(p):
        rgb = infer.read_image(p)
        canvas, gain, pad = infer.letterbox(rgb, m["imgsz"])
        dets = infer.postprocess(infer.arrange_outputs(runner.runtime.run(infer.prepare(canvas, m["input"], None)), m), m, 0.001, 0.7)
        return dets, gain, pad, rgb.shape[:2]

    return score_detections(detect, images)


def score_detections(detect, images: list[Path]) -> dict:
    """mAP50 and mAP50-95 over `images`; `detect(path)` gives ([N, 6] detections in letterbox pixels, gain, pad, (h, w))."""
    import torch
    from ultralytics.utils.metrics import ap_per_class, box_iou

    iouv = np.linspace(0.5, 0.95, 10)
    tps, confs, pcls, tcls = [], [], [], []
    for p in images:
        dets, gain, pad, (h, w) = detect(p)
        label = Path(str(p.with_suffix(".txt")).replace("/images/", "/labels/"))
        rows = np.loadtxt(label, ndmin=2) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        truth = np.stack(((cx - bw / 2) * gain[0] + pad[0], (cy - bh / 2) * gain[1] + pad[1],
                          (cx + bw / 2) * gain[0] + pad[0], (cy + bh / 2) * gain[1] + pad[1]), 1)
        correct = np.zeros((len(dets), len(iouv)), bool)
        if len(dets) and len(rows):
            iou = box_iou(torch.tensor(truth, dtype=torch.float32), torch.tensor(dets[:, :4], dtype=torch.float32)).numpy()
            iou = iou * (rows[:, :1] == dets[None, :, 5])
            matched = np.zeros((len(rows), len(iouv)), bool)  # Ultralytics' greedy matching, best score first
            for j in np.flatnonzero((iou >= iouv.min()).any(0)):
                available = np.where(matched, 0, iou[:, j, None])
                k = available.argmax(0)
                correct[j] = available[k, range(len(iouv))] >= iouv
                matched[k, range(len(iouv))] |= correct[j]
        tps.append(correct), confs.append(dets[:, 4]), pcls.append(dets[:, 5]), tcls.append(rows[:, 0])
    ap = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls))[5]
    return {"map50": float(ap[:, 0].mean()), "map50_95": float(ap.mean()), "images": len(images)}


# RKNN-Toolkit-Lite2 (the board's runtime) stood in for by RKNN-Toolkit2's simulator, imported by the bundle's runner
# from PYTHONPATH in the compiler's environment. A .rknn file cannot be simulated, so load_rknn checks the bundle's
# file is the build `npu compile` made and repeats that build from its manifest with score_driver.py's RknnModel:
# the same ONNX file, config and calibration list as `deploy eval` (loaded by path: its folder's rknn.py must not
# shadow the toolkit's `rknn` package).
SIM_RKNNLITE = """
import argparse, hashlib, importlib.util, json, os

SIM = json.loads(os.environ["NPUYOLO_RKNN_SIM"])


class RKNNLite:
    NPU_CORE_AUTO = 0

    def __init__(self, verbose=False):
        self.model = None

    def load_rknn(self, path):
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != SIM["sha256"]:
                return -1
        spec = importlib.util.spec_from_file_location("score_driver", SIM["driver"])
        driver = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(driver)
        here = os.getcwd()
        os.chdir(SIM["folder"])  # the calibration list is relative to the build folder
        try:
            self.model = driver.RknnModel(argparse.Namespace(**SIM["args"]))
        finally:
            os.chdir(here)
        return 0

    def init_runtime(self, core_mask=None):
        return 0  # RknnModel started the simulator

    def inference(self, inputs):
        return self.model(inputs[0])
"""


LETTERBOX_DETS = """
import importlib.util, json, sys
from pathlib import Path

folder, val, out = map(Path, sys.argv[1:])
spec = importlib.util.spec_from_file_location("npuyolo_infer", folder / "npuyolo_infer.py")
infer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(infer)
bundle = infer.Bundle(folder)
m, rt, found = bundle.manifest, bundle.runtime, {}
for p in infer.list_images(val):
    rgb = infer.read_image(p)
    canvas, gain, pad = infer.letterbox(rgb, m["imgsz"])
    raw = rt.run(infer.prepare(canvas, m["input"], rt.input_quant))
    dets = infer.postprocess(infer.arrange_outputs(raw, m, rt.output_quant), m, 0.001, 0.7)
    found[p.name] = {"dets": dets.tolist(), "gain": list(gain), "pad": list(pad), "hw": list(rgb.shape[:2])}
out.write_text(json.dumps(found))
"""


# The runner's own runtime and decode on the canvases `deploy eval` feeds the model (Ultralytics' validation loader):
# what is left between the two once the letterbox is the same. Used with --tflite.
EVAL_CANVAS_DETS = """
import importlib.util, json, sys
from pathlib import Path
import numpy as np

folder, canvases, out = map(Path, sys.argv[1:])
spec = importlib.util.spec_from_file_location("npuyolo_infer", folder / "npuyolo_infer.py")
infer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(infer)
bundle = infer.Bundle(folder)
m, rt, found = bundle.manifest, bundle.runtime, {}
arrays, frames = np.load(canvases), json.loads(canvases.with_suffix(".json").read_text())
for name in arrays.files:
    raw = rt.run(infer.prepare(arrays[name], m["input"], rt.input_quant))
    dets = infer.postprocess(infer.arrange_outputs(raw, m, rt.output_quant), m, 0.001, 0.7)
    found[name] = {"dets": dets.tolist(), **frames[name]}
out.write_text(json.dumps(found))
"""


def eval_canvases(data: Path, imgsz: int, infer, out: Path) -> int:
    """The letterboxed val images as `deploy eval` feeds them (Ultralytics' validation dataset, rect off) into
    `out` (.npz, RGB HWC uint8) with each one's gain and pad (.json); returns how many differ from the bundle's own
    letterbox (none since the runner sizes the short side with ceil as Ultralytics' loader does, where its predictor
    rounds; before issue 33's fix, 4 of roadsign4's 175 at 320 px)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(data))
    ds = build_yolo_dataset(get_cfg(overrides=dict(imgsz=imgsz, rect=False, batch=1, mode="val", task="detect")),
                            info["val"], 1, info, mode="val", rect=False, stride=32)
    arrays, frames, differ = {}, {}, 0
    for i in range(len(ds)):
        item = ds[i]
        name = Path(item["im_file"]).name
        arrays[name] = np.ascontiguousarray(item["img"].numpy().transpose(1, 2, 0))  # Format made it RGB CHW
        (rh, rw), (pw, ph) = item["ratio_pad"]
        frames[name] = {"gain": [float(rw), float(rh)], "pad": [float(pw), float(ph)], "hw": [int(v) for v in item["ori_shape"]]}
        mine, _, _ = infer.letterbox(infer.read_image(Path(item["im_file"])), imgsz)
        differ += int(not np.array_equal(mine, arrays[name]))
    np.savez(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(frames))
    return differ


def rknn_scores(rknn: Path, data: Path) -> dict:
    """The .rknn bundle as it runs: `npuyolo_infer.py` on every val image (conf 0.001, IoU 0.7) in the compiler's
    environment with the simulator as rknnlite, scored here beside `deploy eval` of the same file."""
    return compiled_scores(rknn, data)


def tflite_scores(tflite: Path, data: Path) -> dict:
    """The int8 .tflite bundle (what Vela compiles) as it runs: `npuyolo_infer.py` on every val image (conf 0.001,
    IoU 0.7) in the vela environment, on LiteRT itself (ai_edge_litert, the runner's own first choice), scored here
    beside `deploy eval` of the same file (TensorFlow Lite's reference kernels)."""
    return compiled_scores(tflite, data)


def compiled_scores(path: Path, data: Path) -> dict:
    """A `npu compile` build's bundle, its runner run in the compiler's environment, scored beside `deploy eval`."""
    from npuyolo.compilers.envs import clean_env, require
    from npuyolo.data.check import load_data_yaml
    from npuyolo.deploy.bundle import build_bundle
    from npuyolo.deploy.eval.vendor import DRIVER, evaluate_compiled, read_compiled

    work = Path(tempfile.mkdtemp(prefix=f"bench-bundle-{path.suffix[1:]}-"))
    try:
        art = read_compiled(path)
        if art.kind not in ("rknn", "tflite"):
            raise SystemExit(f"{path}: not a .rknn or int8 .tflite that `npu compile` built")
        if art.kind == "rknn":
            parser = argparse.ArgumentParser()
            for flag in ("--onnx", "--target", "--dataset"):
                parser.add_argument(flag)
            parser.add_argument("--disable-rule", action="append", default=[])
            target, where = f"rknn-{vars(parser.parse_args(art.args))['target']}", "the simulator"
        else:  # the Vela target the int8 file is compiled for; the board runs it through LiteRT / TFLite Micro
            target, where = "ethos-u55", "LiteRT"
        t = time.perf_counter()
        bundle = build_bundle(path, work / "out", target=target)
        bundle_s = time.perf_counter() - t
        private = private_data(data, work)
        cfg, root, _ = load_data_yaml(private)
        val = root / cfg["val"]
        if art.kind == "rknn":
            site = work / "site" / "rknnlite"
            site.mkdir(parents=True)
            (site / "__init__.py").write_text("")
            (site / "api.py").write_text(SIM_RKNNLITE)
            sim = {"sha256": json.loads((bundle.folder / "manifest.json").read_text())["artefact"]["sha256"],
                   "driver": str(DRIVER), "folder": str(art.folder), "args": vars(parser.parse_args(art.args))}
            env = {**os.environ, "PYTHONPATH": str(work / "site"), "NPUYOLO_RKNN_SIM": json.dumps(sim)}
        else:  # nothing stands in: ai_edge_litert is installed in the vela environment
            env = clean_env()
        python = require("rknn" if art.kind == "rknn" else "vela").python
        t = time.perf_counter()  # 1. as a user runs it on the board: the CLI, results.json in the images' pixels
        done = subprocess.run([python, str(bundle.folder / "npuyolo_infer.py"), str(val), "--out", str(work / "r.json"),
                               "--conf", "0.001", "--iou", "0.7"], env=env, capture_output=True, text=True)
        run_s = time.perf_counter() - t
        if done.returncode:
            raise SystemExit(f"the bundle's runner failed in {where}:\n{done.stderr[-3000:]}")
        # 2. the same runner's Bundle, its detections kept in letterbox pixels, unclipped: Ultralytics' validator (and
        # so deploy eval) matches there, while results.json clips boxes to the image (+0.008 mAP50-95 on the ONNX bundle)
        done = subprocess.run([python, "-c", LETTERBOX_DETS, str(bundle.folder), str(val), str(work / "lb.json")],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the bundle's runner failed in {where}:\n{done.stderr[-3000:]}")
        spec = importlib.util.spec_from_file_location("npuyolo_infer", bundle.folder / "npuyolo_infer.py")
        infer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(infer)
        found = {Path(r["source"]).name: r for r in json.loads((work / "r.json").read_text())["predictions"]}
        lb = json.loads((work / "lb.json").read_text())
        gap = 0.0  # the CLI's boxes are the letterbox ones mapped back and clipped
        for name, r in found.items():
            d = np.array(lb[name]["dets"], np.float32).reshape(-1, 6)
            back = infer.unletterbox(d, lb[name]["gain"], lb[name]["pad"], r["width"], r["height"])
            cli = np.array([[b[k] for k in ("x1", "y1", "x2", "y2", "conf", "cls")] for b in r["boxes"]], np.float32)
            cli = cli.reshape(-1, 6)
            if cli.shape != back.shape or (cli[:, 5] != back[:, 5]).any():
                raise SystemExit(f"{name}: the CLI and the runner's Bundle kept different boxes")
            gap = max(gap, float(np.abs(cli[:, :4] - back[:, :4]).max(initial=0)))

        def detect(p):
            r = lb[p.name]
            return np.array(r["dets"], np.float32).reshape(-1, 6), r["gain"], r["pad"], r["hw"]

        images = sorted(p for p in val.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        mine = score_detections(detect, images)
        same_input = None
        if art.kind == "tflite":  # 3. the runner's runtime and decode on deploy eval's own canvases
            differ = eval_canvases(private, json.loads((bundle.folder / "manifest.json").read_text())["imgsz"], infer,
                                   work / "canvases.npz")
            done = subprocess.run([python, "-c", EVAL_CANVAS_DETS, str(bundle.folder), str(work / "canvases.npz"),
                                   str(work / "ev.json")], env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the bundle's runner failed in {where}:\n{done.stderr[-3000:]}")
            ev = json.loads((work / "ev.json").read_text())

            def detect_ev(p):
                r = ev[p.name]
                return np.array(r["dets"], np.float32).reshape(-1, 6), r["gain"], r["pad"], r["hw"]

            same_input = {**score_detections(detect_ev, images), "letterbox_differs": differ}
        t = time.perf_counter()
        theirs = evaluate_compiled(path, data)  # as the CLI runs it (its contract check reads a train photo)
        eval_s = time.perf_counter() - t
        out = {"artefact": str(path), "target": target, "bundle_runtime": where, "bundle": mine, "cli_vs_bundle_max_px": gap,
               "deploy_eval": {k: theirs.result[k] for k in ("map50", "map50_95", "images")},
               "diff_map50": mine["map50"] - theirs.result["map50"],
               "diff_map50_95": mine["map50_95"] - theirs.result["map50_95"],
               "on_eval_letterbox": same_input and {**same_input, "diff_map50": same_input["map50"] - theirs.result["map50"],
                                                    "diff_map50_95": same_input["map50_95"] - theirs.result["map50_95"]},
               "seconds": {"bundle_build": bundle_s, "bundle_run_cli": run_s, "deploy_eval": eval_s}}
        print(f"val ({mine['images']} images): .{art.kind} bundle through {where} mAP50 {mine['map50']:.4f} / mAP50-95 "
              f"{mine['map50_95']:.4f}; deploy eval {theirs.result['map50']:.4f} / {theirs.result['map50_95']:.4f} "
              f"(diff {out['diff_map50']:+.4f} / {out['diff_map50_95']:+.4f}); CLI boxes = the Bundle's within {gap:.4f} px; "
              f"runner CLI {run_s:.0f} s, deploy eval {eval_s:.0f} s")
        if same_input:
            e = out["on_eval_letterbox"]
            print(f"the runner's runtime and decode on deploy eval's letterboxed images ({e['letterbox_differs']} of "
                  f"{e['images']} differ from the bundle's): mAP50 {e['map50']:.4f} / mAP50-95 {e['map50_95']:.4f} "
                  f"(diff {e['diff_map50']:+.4f} / {e['diff_map50_95']:+.4f})")
        print(json.dumps(out))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--images", type=Path, default=IMAGES)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--data", type=Path, default=DATA if DATA.is_file() else None, help="score the bundle on its val split")
    ap.add_argument("--rknn", type=Path, default=None, help="instead: score the bundle of this `npu compile` .rknn on --data's "
                    "val split, run through RKNN-Toolkit2's simulator in place of rknnlite, beside `deploy eval`")
    ap.add_argument("--tflite", type=Path, default=None, help="instead: score the bundle of this int8 .tflite (what `npu compile "
                    "--compiler vela` built and Vela compiled) on --data's val split, run through LiteRT, beside `deploy eval`")
    args = ap.parse_args()
    if args.rknn is not None or args.tflite is not None:
        if args.data is None:
            raise SystemExit("--rknn / --tflite need --data")
        compiled_scores(args.rknn or args.tflite, args.data)
        return

    import torch

    from npuyolo.deploy.bundle import build_bundle
    from npuyolo.deploy.decode import decode_npu_outputs, nms
    from npuyolo.deploy.export import export_onnx
    from npuyolo.deploy.infer.predict import load_predictor, predict_source
    from npuyolo.variants.checkpoint import load_weights

    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.count]
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    try:
        onnx = export_onnx(load_weights(args.weights), work / "model.onnx", imgsz=args.imgsz, head="npu")
        bundle = build_bundle(onnx, work / "out")
        spec = importlib.util.spec_from_file_location("npuyolo_infer", bundle.folder / "npuyolo_infer.py")
        infer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(infer)
        runner = infer.Bundle(bundle.folder)
        m = runner.manifest
        cc = shutil.which("cc") or shutil.which("gcc")
        lib = None
        if cc:
            subprocess.run([cc, "-std=c99", "-O2", "-shared", "-fPIC", "-o", str(work / "libpp.so"),
                            str(bundle.folder / "postprocess.c"), "-lm"], check=True)
            lib = ctypes.CDLL(str(work / "libpp.so"))
            lib.npuyolo_workspace_size.restype = ctypes.c_size_t

        raws = []
        for p in images:
            canvas, _, _ = infer.letterbox(infer.read_image(p), args.imgsz)
            raws.append(runner.runtime.run(infer.prepare(canvas, m["input"], None)))
        arranged = [infer.arrange_outputs(r, m) for r in raws]

        def c_call(outs, conf):
            n_s = len(m["strides"])
            cfg = Config(m["imgsz"], n_s, (ctypes.c_int * 8)(*m["strides"]), m["reg_max"], len(m["names"]), 0, conf, m["iou"], 300)
            ws = ctypes.create_string_buffer(lib.npuyolo_workspace_size(ctypes.byref(cfg)))
            dets = (Detection * 300)()
            wrap = [Tensor(o.ctypes.data, 0, 0, 1.0, 0) for o in outs]
            boxes, scores = (Tensor * n_s)(*wrap[0::2]), (Tensor * n_s)(*wrap[1::2])
            return lambda: lib.npuyolo_postprocess(ctypes.byref(cfg), boxes, scores, ws, len(ws), dets, 300)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # post-processing is timed on one thread everywhere (NumPy and C use one)
        print(f"model {args.weights} at {args.imgsz} px, {len(images)} images from {args.images}; post-processing on one thread")
        post = {}
        for conf in (0.25, 0.001):
            cands = statistics.mean(int((np.concatenate([o.reshape(o.shape[0], -1) for o in a[1::2]], 1).max(0) > conf).sum())
                                    for a in arranged)
            numpy_ms = per_image_ms(lambda i: infer.postprocess(infer.arrange_outputs(raws[i], m), m, conf, m["iou"]), range(len(raws)))
            decoded = [decode_npu_outputs(r, m["strides"], m["reg_max"]) for r in raws]
            decode_ms = per_image_ms(lambda i: decode_npu_outputs(raws[i], m["strides"], m["reg_max"]), range(len(raws)))
            torch_nms_ms = per_image_ms(lambda i: nms(decoded[i], conf, m["iou"]), range(len(raws)))
            ultra_ms = decode_ms + torch_nms_ms
            calls = [c_call(a, conf) for a in arranged] if lib else []
            c_ms = per_image_ms(lambda f: f(), calls) if lib else None
            post[conf] = {"candidates": cands, "numpy_ms": numpy_ms, "c_ms": c_ms, "ultralytics_ms": ultra_ms,
                          "full_decode_ms": decode_ms, "torch_nms_ms": torch_nms_ms}
            print(f"post-processing at conf {conf}: {cands:.0f} candidates/image; numpy {numpy_ms:.3f} ms, "
                  f"C {c_ms:.4f} ms, full decode + Ultralytics torch NMS {ultra_ms:.3f} ms ({decode_ms:.3f} + {torch_nms_ms:.3f}) per image"
                  if lib else
                  f"post-processing at conf {conf}: numpy {numpy_ms:.3f} ms, Ultralytics {ultra_ms:.3f} ms (no C compiler)")

        torch.set_num_threads(threads)
        predictor = load_predictor(None, str(onnx))
        mismatched = 0
        ref = predict_source(predictor, images)
        for d, p in zip(ref, images):
            mine = runner.detect(infer.read_image(p), m["conf"], m["iou"])
            if len(mine) != len(d.boxes) or any(int(a[5]) != b.cls or abs(a[0] - b.x1) > 0.5 or abs(a[4] - b.conf) > 1e-3
                                                for a, b in zip(mine, sorted(d.boxes, key=lambda b: -b.conf))):
                mismatched += 1
        boxes = sum(len(d.boxes) for d in ref)
        print(f"bundle vs predict: {boxes} boxes on {len(images)} images, {mismatched} images differ")
        bundle_e2e = per_image_ms(lambda p: runner.detect(infer.read_image(p), m["conf"], m["iou"]), images, repeat=3)
        predict_e2e = per_image_ms(lambda p: predict_source(predictor, [p]), images, repeat=3)
        print(f"end to end in-process (read, letterbox, ONNX Runtime, post): bundle {bundle_e2e:.2f} ms, predict {predict_e2e:.2f} ms per image")

        scores = None
        if args.data is not None:
            from npuyolo.data.check import load_data_yaml
            from npuyolo.deploy.eval.evaluate import evaluate_onnx

            data = private_data(args.data, work)
            cfg, root, _ = load_data_yaml(data)
            val = sorted(p for p in (root / cfg["val"]).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            mine, theirs = bundle_map(infer, runner, val), evaluate_onnx(onnx, data).as_dict()
            scores = {"bundle": mine, "deploy_eval": {k: theirs[k] for k in ("map50", "map50_95", "images")}}
            print(f"val ({mine['images']} images): bundle mAP50 {mine['map50']:.4f} / mAP50-95 {mine['map50_95']:.4f}; "
                  f"deploy eval {theirs['map50']:.4f} / {theirs['map50_95']:.4f} ({theirs['images']} images)")
        folder = work / "imgs"
        folder.mkdir()
        for p in images:
            shutil.copyfile(p, folder / p.name)
        t = time.perf_counter()
        subprocess.run([sys.executable, str(bundle.folder / "npuyolo_infer.py"), str(folder), "--out", str(work / "r.json")],
                       check=True, capture_output=True)
        bundle_cli = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(["npuyolo", "predict", str(onnx), str(folder), "--out", str(work / "pred")], check=True, capture_output=True)
        predict_cli = time.perf_counter() - t
        print(f"CLI wall time for {len(images)} images (process start included): python npuyolo_infer.py {bundle_cli:.1f} s, "
              f"npuyolo predict {predict_cli:.1f} s (which also writes annotated copies and CSV)")
        print(json.dumps({"post": {str(k): v for k, v in post.items()}, "e2e_ms": {"bundle": bundle_e2e, "predict": predict_e2e},
                          "cli_s": {"bundle": bundle_cli, "predict": predict_cli}, "images": len(images), "boxes": boxes,
                          "mismatched_images": mismatched, "val": scores,
                          "medians_ms_in_order": [round(x, 4) for x in MEDIANS]}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
