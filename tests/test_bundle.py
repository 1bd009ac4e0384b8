"""`npuyolo deploy bundle` (issue 33): the board package runs without PyTorch or Ultralytics and gives `npuyolo predict`'s
boxes; its C post-processor gives the NumPy one's; bad input is one line and writes nothing outside --out."""

import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.compilers.envs import clean_env, installed
from npuyolo.deploy.bundle import BundleError, build_bundle, inspect_artefact
from npuyolo.deploy.bundle.build import c_workspace_bytes
from npuyolo.deploy.bundle.service import bundle_model
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.infer.predict import load_predictor, predict_source
from npuyolo.errors import NpuyoloError
from npuyolo.registry.db import Registry
from npuyolo.variants.build import build_model

from .conftest import REPO, perturbed

runner = CliRunner()
MINI = REPO / "tests" / "fixtures" / "roadsign4_mini"
NAMES = ["trafficlight", "stop", "speedlimit", "crosswalk"]
IMGSZ = 160
COORD_TOL, CONF_TOL = 0.5, 1e-3  # the issue's: px in the original image; score
BLOCKED = ("torch", "torchvision", "ultralytics", "cv2", "npuyolo")
# Runs a script with PyTorch, Ultralytics, OpenCV and npuyolo unimportable: what a board without them has.
NO_TORCH = f"""
import runpy, sys
BLOCKED = {BLOCKED!r}
assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED], 'already imported before the blocker'
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked on the board: ' + name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An L4-leaky model with many confident, varied boxes on the roadsign4 photos (scores spread up to ~0.995, none
    tied at 1.0, so the order NMS sees is well defined), as FP32 ONNX of both heads at 160 px."""
    root = tmp_path_factory.mktemp("bundle-models")
    torch.manual_seed(0)
    model = perturbed(build_model("L4-leaky", nc=4, names=NAMES), scale=0.1, seed=0, class_bias=-2.5)
    with torch.no_grad():  # untrained class logits would saturate the sigmoid: soften them
        for branch in model.model[-1].cv3:
            branch[-1].weight.mul_(0.01)
    return {head: export_onnx(model, root / f"leaky-{head}.onnx", imgsz=IMGSZ, head=head) for head in ("npu", "ultralytics")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The 8 roadsign4_mini photos in one folder (the same JPEG bytes)."""
    folder = tmp_path_factory.mktemp("photos")
    for p in sorted((MINI / "images").glob("*/*.jpg")):
        shutil.copyfile(p, folder / p.name)
    assert len(list(folder.iterdir())) == 8
    return folder


@pytest.fixture(scope="module")
def bundles(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    return {head: build_bundle(path, out) for head, path in models.items()}


def run_script(script: Path, *args, blocked: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", NO_TORCH, str(script)] if blocked else [sys.executable, str(script)]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd)


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: what a command wrote or changed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_detections(reference, predictions) -> tuple[int, float, float]:
    """predict's ImageDetections vs the runner's results.json: same images, same boxes one-to-one by class within the
    issue's tolerances. Returns (boxes, largest px gap, largest score gap)."""
    assert [Path(d.source).name for d in reference] == [Path(p["source"]).name for p in predictions]
    boxes, worst_px, worst_conf = 0, 0.0, 0.0
    for ref, got in zip(reference, predictions):
        assert (ref.width, ref.height) == (got["width"], got["height"])
        assert len(ref.boxes) == len(got["boxes"]), ref.source
        left = list(got["boxes"])
        for b in ref.boxes:
            same = [g for g in left if g["cls"] == b.cls]
            assert same, f"{ref.source}: no {b.name} box from the bundle"
            g = min(same, key=lambda g: max(abs(b.x1 - g["x1"]), abs(b.y1 - g["y1"]), abs(b.x2 - g["x2"]), abs(b.y2 - g["y2"])))
            left.remove(g)
            gap = max(abs(b.x1 - g["x1"]), abs(b.y1 - g["y1"]), abs(b.x2 - g["x2"]), abs(b.y2 - g["y2"]))
            assert gap <= COORD_TOL and abs(b.conf - g["conf"]) <= CONF_TOL, (ref.source, b, g)
            assert g["name"] == b.name
            boxes, worst_px, worst_conf = boxes + 1, max(worst_px, gap), max(worst_conf, abs(b.conf - g["conf"]))
    return boxes, worst_px, worst_conf


# ------------------------------------------------------------------------------------------ (a) the runner, no torch
@pytest.mark.parametrize("head", ["npu", "ultralytics"])
def test_runner_without_torch_gives_predicts_detections(models, bundles, photos, head, tmp_path, capsys):
    b = bundles[head]
    assert sorted(p.name for p in b.folder.iterdir()) == sorted(
        ["README.md", "manifest.json", "npuyolo_infer.py", "postprocess.c", "postprocess.h", models[head].name])
    out = tmp_path / "results.json"
    done = run_script(b.folder / "npuyolo_infer.py", photos, "--out", out, "--save-annotated", tmp_path / "drawn")
    assert done.returncode == 0, done.stderr
    assert "blocked" not in done.stderr
    doc = json.loads(out.read_text())
    reference = predict_source(load_predictor(None, str(models[head])), photos)
    found = [b for d in reference for b in d.boxes]
    assert len(found) >= 50 and len({b.cls for b in found}) >= 3  # a meaningful comparison, not empty outputs
    assert len({round(b.conf, 3) for b in found}) > 20
    boxes, px, conf = assert_same_detections(reference, doc["predictions"])
    assert boxes == len(found) == doc["detections"]
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted([".npuyolo-annotated", *(p.name for p in photos.iterdir())])
    again = run_script(b.folder / "npuyolo_infer.py", photos, "--out", out, "--save-annotated", tmp_path / "drawn")
    assert again.returncode == 0 and json.loads(out.read_text()) == doc, again.stderr  # its own outputs are replaced
    with capsys.disabled():
        print(f"\n[{head}] bundle runner (no torch) vs npuyolo predict: {boxes} boxes, max gap {px:.2e} px, {conf:.2e} score")


def test_the_block_bites(tmp_path):
    """The blocker is real: a script importing torch under it fails."""
    script = tmp_path / "s.py"
    script.write_text("import torch\n")
    done = run_script(script)
    assert done.returncode != 0 and "blocked on the board: torch" in done.stderr


def test_bundle_contents(bundles, models):
    b = bundles["npu"]
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["artefact"]["sha256"] == hashlib.sha256(models["npu"].read_bytes()).hexdigest()
    assert (m["imgsz"], m["strides"], m["reg_max"], m["head"]) == (IMGSZ, [8, 16, 32], 16, "npu")
    assert m["names"] == {str(i): n for i, n in enumerate(NAMES)} and (m["conf"], m["iou"]) == (0.25, 0.7)
    assert m["input"]["layout"] == "NCHW" and m["input"]["channels"] == "RGB" and m["input"]["scale"] == "0-1"
    assert [(o["role"], o["stride"], o["shape"]) for o in m["outputs"]][:2] == [("box", 8, [1, 64, 20, 20]), ("cls", 8, [1, 4, 20, 20])]
    assert m["runtime"] == "onnxruntime" and m["plan"] is None and m["npuyolo_version"]
    runner_text = (b.folder / "npuyolo_infer.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in runner_text.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "hashlib", "json", "os", "sys", "pathlib", "numpy", "PIL"}, imports
    assert "@NPUYOLO_VERSION@" not in runner_text and "pip install numpy pillow onnxruntime" in (b.folder / "README.md").read_text()
    with tarfile.open(b.archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert members == {f"{b.folder.name}/{p.name}": p.read_bytes() for p in b.folder.iterdir()}
    assert not [p for p in b.folder.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_the_archive_runs_where_it_is_unpacked(bundles, photos, tmp_path):
    """What the board gets is the .tar.gz: unpacked elsewhere, it runs (and checks its model) on its own."""
    with tarfile.open(bundles["npu"].archive) as tar:
        tar.extractall(tmp_path / "board", filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp_path / "board")
    folder = tmp_path / "board" / bundles["npu"].folder.name
    assert os.access(folder / "npuyolo_infer.py", os.X_OK)
    done = run_script(folder / "npuyolo_infer.py", photos / "road0.jpg", "--out", tmp_path / "r.json",
                      "--provider", "CPUExecutionProvider", cwd=tmp_path)
    assert done.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["images"] == 1, done.stderr


@pytest.mark.parametrize("n, classes", [(600, 3), (2600, 1)])  # one IoU matrix per class; past 2048 boxes row by row
def test_numpy_nms_keeps_torchvisions_boxes(bundles, n, classes):
    import torchvision

    infer = load_runner(bundles["npu"].folder)
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 300, (n, 2)).astype(np.float32)
    boxes = np.concatenate((xy, xy + rng.uniform(5, 60, (n, 2)).astype(np.float32)), 1)
    scores, cls = rng.uniform(0.001, 1, n).astype(np.float32), rng.integers(0, classes, n)
    for iou in (0.45, 0.7):
        kept = infer.nms(boxes, scores, cls, iou, max_det=10_000)
        ref = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cls), iou).numpy()
        assert len(ref) > 50 and kept.tolist() == ref.tolist()
        assert infer.nms(boxes, scores, cls, iou, max_det=7).tolist() == ref[:7].tolist()


# ------------------------------------------------------------------------------------------ (b) the C post-processor
from npuyolo.deploy.bundle.cabi import Config, Detection, Tensor  # noqa: E402  (postprocess.h's records)


def load_runner(folder: Path):
    spec = importlib.util.spec_from_file_location(f"npuyolo_infer_{folder.name}", folder / "npuyolo_infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# (width, height) at 320 px: ceil and round differ on the short side (400x228 -> 320x182.4, 228x400 the other way,
# 500x333 -> 213.1), an exact 2x shrink (OpenCV then averages), an enlargement (150x100 -> 320x213.3) and a square.
TRAINING_SIZES = [(400, 228), (228, 400), (500, 333), (640, 480), (150, 100), (97, 61), (320, 320)]


def test_runner_letterbox_is_the_training_loaders(models, bundles, tmp_path):
    """The runner's letterboxed input is, byte for byte, the image Ultralytics' training and validation loader
    (YOLODataset at mode "val", as deploy eval scores) gives the network: the long side to imgsz with ceil, not the
    predictor's round (one pixel more on 400x228's short side), OpenCV's bilinear either way, then centred grey padding.
    `npuyolo predict` feeds its model the same pixels (so the bundle's boxes stay predict's)."""
    import dataclasses

    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.utils import DEFAULT_CFG

    from npuyolo.deploy.infer.predict import detect

    images, labels = tmp_path / "images" / "val", tmp_path / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for w, h in TRAINING_SIZES:  # smooth colour fields with noise: every resize weight shows in the pixels
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // (w + h)], axis=2)
        rgb = np.clip(base + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(images / f"im_{w}x{h}.png"), rgb[..., ::-1])  # lossless: Pillow and OpenCV read the same pixels
        (labels / f"im_{w}x{h}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    data = {"path": str(tmp_path), "val": "images/val", "names": {0: "a"}, "nc": 1, "channels": 3}
    run = load_runner(bundles["npu"].folder)
    seen = []
    plain = load_predictor(None, str(models["npu"]))
    predictor = dataclasses.replace(plain, forward=lambda x: seen.append(x) or plain.forward(x))
    for size in (320, IMGSZ):
        cfg = get_cfg(DEFAULT_CFG, {"imgsz": size, "rect": False, "cache": False})
        dataset = build_yolo_dataset(cfg, str(images), 1, data, mode="val", rect=False)
        assert len(dataset) == len(TRAINING_SIZES)
        for i in range(len(dataset)):
            item = dataset[i]
            name = Path(item["im_file"]).name
            trained = item["img"].numpy().transpose(1, 2, 0)  # CHW -> HWC, in the channel order the network saw
            ours, gain, pad = run.letterbox(run.read_image(images / name), size)
            h0, w0 = item["ori_shape"]
            assert ours.shape == trained.shape == (size, size, 3), (size, name)
            gap = np.abs(ours.astype(int) - trained)
            if max(h0, w0) >= size:  # shrinking (and the untouched square): byte for byte
                assert np.array_equal(ours, trained), (size, name, int(gap.max()), int((gap > 0).sum()))
            else:  # enlarging: OpenCV's bilinear rounds a few pixels one LSB apart from the runner's integer arithmetic
                assert gap.max() <= 1 and (gap > 0).mean() < 0.01, (size, name, int(gap.max()), int((gap > 0).sum()))
            (gy, gx), (px, py) = item["ratio_pad"]  # what the validator maps boxes back with
            assert gain == pytest.approx((gx, gy), abs=1e-12) and pad == (px, py), (size, name, gain, pad, item["ratio_pad"])
            if size == IMGSZ:  # predict's model input: OpenCV's resize itself, so the loader's pixels exactly
                detect(predictor, cv2.imread(str(images / name)))
                fed = np.rint(seen.pop()[0].numpy().transpose(1, 2, 0) * 255).astype(int)
                assert np.array_equal(fed, trained), (name, int(np.abs(fed - trained).max()))
    # the case the issue measured: 400x228 is 183 rows high in training, where the predictor's rounding gives 182
    canvas, _, (_, top) = run.letterbox(np.zeros((228, 400, 3), np.uint8), 320)
    assert (canvas[:, 0, 0] == 0).sum() == 183 and top == 68


@pytest.fixture(scope="module")
def c_lib(bundles, tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on this machine to build postprocess.c")
    folder = tmp_path_factory.mktemp("c")
    lib = folder / "libnpuyolo_pp.so"
    done = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-shared", "-fPIC", "-o", str(lib),
                           str(bundles["npu"].folder / "postprocess.c"), "-lm"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    c = ctypes.CDLL(str(lib))
    c.npuyolo_workspace_size.restype = ctypes.c_size_t
    return c


def c_postprocess(lib, manifest: dict, tensors: list[np.ndarray], dtype: int, quant: list, layout: int, sigmoid: int,
                  conf: float = 0.25, iou: float = 0.7) -> np.ndarray:
    n_s = len(manifest["strides"])
    cfg = Config(manifest["imgsz"], n_s, (ctypes.c_int * 8)(*manifest["strides"]), manifest["reg_max"], len(manifest["names"]),
                 sigmoid, conf, iou, manifest["max_det"])
    keep = [np.ascontiguousarray(t) for t in tensors]
    wrap = [Tensor(t.ctypes.data, dtype, layout, *(quant[i] or (1.0, 0))) for i, t in enumerate(keep)]
    boxes, scores = (Tensor * n_s)(*wrap[0::2]), (Tensor * n_s)(*wrap[1::2])
    size = lib.npuyolo_workspace_size(ctypes.byref(cfg))
    assert size == c_workspace_bytes(manifest["imgsz"], manifest["strides"])  # the figure the bundle's README gives
    assert lib.npuyolo_postprocess(ctypes.byref(cfg), boxes, scores, ctypes.create_string_buffer(size - 64), size - 64,
                                   (Detection * 300)(), 300) == -2  # a workspace too small is refused, not overrun
    ws, dets = ctypes.create_string_buffer(size), (Detection * 300)()
    n = lib.npuyolo_postprocess(ctypes.byref(cfg), boxes, scores, ws, size, dets, 300)
    assert n >= 0
    return np.array([[d.x1, d.y1, d.x2, d.y2, d.score, d.cls] for d in dets[:n]], np.float32).reshape(-1, 6)


def quantize(x: np.ndarray, dtype) -> tuple[np.ndarray, tuple[float, int]]:
    info = np.iinfo(dtype)
    lo, hi = float(min(x.min(), 0)), float(max(x.max(), 0))
    scale = (hi - lo) / (info.max - info.min) or 1.0
    zero = int(round(info.min - lo / scale))
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype), (scale, zero)


@pytest.mark.parametrize("case", ["float", "int8", "int8-nhwc", "uint8", "logits"])
def test_c_postprocessor_matches_numpy(bundles, photos, c_lib, case, capsys):
    """The same output tensors through the runner's NumPy decode + NMS and through postprocess.c: the same kept boxes
    (within 1e-3 px), classes and scores, for float outputs, int8/uint8 with scale and zero point (NCHW and NHWC),
    and class logits (sigmoid on the host)."""
    folder = bundles["npu"].folder
    infer = load_runner(folder)
    bundle = infer.Bundle(folder)
    m = dict(bundle.manifest)
    total = worst = 0
    for path in sorted(photos.iterdir()):
        rgb = infer.read_image(path)
        canvas, gain, pad = infer.letterbox(rgb, m["imgsz"])
        outs = infer.arrange_outputs(bundle.runtime.run(infer.prepare(canvas, m["input"], None)), m)
        quant, layout, sigmoid, dtype = [None] * len(outs), 0, 0, 0
        if case == "logits":  # a graph that stops before the class sigmoid
            outs = [o if i % 2 == 0 else np.log(np.clip(o, 1e-7, 1 - 1e-7) / (1 - np.clip(o, 1e-7, 1 - 1e-7))).astype(np.float32)
                    for i, o in enumerate(outs)]
            m["class_sigmoid"], sigmoid = "host", 1
        if case.startswith(("int8", "uint8")):
            np_dtype, dtype = (np.int8, 1) if case.startswith("int8") else (np.uint8, 2)
            pairs = [quantize(o, np_dtype) for o in outs]
            raw, quant = [p[0] for p in pairs], [p[1] for p in pairs]
            outs = infer.arrange_outputs([r[None] for r in raw], m, quant)  # the runner's own dequantization
            c_in = [r.transpose(1, 2, 0) for r in raw] if case == "int8-nhwc" else raw
            layout = 1 if case == "int8-nhwc" else 0
        else:
            c_in = outs
        ref = infer.postprocess(outs, m, 0.25, 0.7)
        got = c_postprocess(c_lib, m, c_in, dtype, quant, layout, sigmoid)
        assert len(got) == len(ref), path.name
        assert (got[:, 5] == ref[:, 5]).all(), path.name
        assert np.abs(got[:, :4] - ref[:, :4]).max(initial=0) <= 1e-3, path.name
        assert np.abs(got[:, 4] - ref[:, 4]).max(initial=0) <= 1e-5, path.name
        worst = max(worst, float(np.abs(got[:, :4] - ref[:, :4]).max(initial=0)))
        total += len(ref)
        # and the mapping back to the image
        c_dets = (Detection * len(got))(*[Detection(*map(float, d[:5]), int(d[5])) for d in got])
        c_lib.npuyolo_unletterbox(c_dets, len(got), rgb.shape[1], rgb.shape[0], m["imgsz"])
        mapped = infer.unletterbox(ref, gain, pad, rgb.shape[1], rgb.shape[0])
        assert np.abs(np.array([[d.x1, d.y1, d.x2, d.y2] for d in c_dets]).reshape(-1, 4) - mapped[:, :4]).max(initial=0) <= 1e-3
    assert total >= 50
    with capsys.disabled():
        print(f"\n[{case}] C vs NumPy post-processing: {total} kept boxes, max gap {worst:.2e} px")


# ------------------------------------------------------------------------------------------ (c) bad input: one line
def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [x for x in done.stderr.strip().splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("npuyolo_infer.py: error: ") and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture
def own_bundle(bundles, tmp_path) -> Path:
    """A private copy of the npu bundle (tests below damage it)."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["npu"].folder, copy)
    return copy


def test_bad_bundles_are_one_line(own_bundle, photos, tmp_path):
    script, out = own_bundle / "npuyolo_infer.py", tmp_path / "out" / "results.json"
    out.parent.mkdir()
    before = tree(tmp_path)
    manifest = json.loads((own_bundle / "manifest.json").read_text())
    model = own_bundle / manifest["artefact"]["file"]

    data = model.read_bytes()
    model.write_bytes(data + b"\0")  # replaced or damaged in the copy
    one_line_error(run_script(script, photos, "--out", out), "sha256 does not match")
    model.unlink()
    one_line_error(run_script(script, photos, "--out", out), f"model file {model.name} not found")
    model.write_bytes(data)
    assert tree(tmp_path) == before

    edited = dict(manifest, conf=0.3)  # a hand edit, still valid JSON and values
    (own_bundle / "manifest.json").write_text(json.dumps(edited))
    one_line_error(run_script(script, photos, "--out", out), "manifest.json", "edited by hand")
    (own_bundle / "manifest.json").write_text("{not json")
    one_line_error(run_script(script, photos, "--out", out), "manifest.json", "not readable JSON")
    (own_bundle / "manifest.json").unlink()
    one_line_error(run_script(script, photos, "--out", out), "no manifest.json")
    assert not out.exists()


def test_bad_sources_are_one_line_and_write_nothing(bundles, photos, tmp_path):
    script = bundles["npu"].folder / "npuyolo_infer.py"
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    (work / "notes.jpg").write_text("not a picture\n")
    (work / "readme.txt").write_text("hello\n")
    (work / "mixed").mkdir()
    shutil.copyfile(photos / "road0.jpg", work / "mixed" / "a.jpg")
    (work / "mixed" / "b.jpg").write_bytes(b"\xff\xd8broken jpeg")
    out = tmp_path / "out.json"
    before, bundle_before = tree(tmp_path), tree(bundles["npu"].folder)
    one_line_error(run_script(script, work / "empty", "--out", out), "no images in folder")
    one_line_error(run_script(script, work / "notes.jpg", "--out", out), "notes.jpg", "not an image")
    one_line_error(run_script(script, work / "readme.txt", "--out", out), "readme.txt", "not an image")
    one_line_error(run_script(script, work / "mixed", "--out", out, "--save-annotated", tmp_path / "drawn"), "b.jpg")
    one_line_error(run_script(script, work / "missing", "--out", out), "source not found")
    one_line_error(run_script(script, photos, "--out", tmp_path), "is a folder")
    one_line_error(run_script(script, photos, "--out", tmp_path / "nowhere" / "r.json"), "does not exist")
    one_line_error(run_script(script, photos, "--out", out, "--conf", "0"), "--conf must be in (0, 1]")
    one_line_error(run_script(script, photos, "--out", out, "--provider", "NoSuchExecutionProvider"), "not in this ONNX Runtime")
    one_line_error(run_script(script, photos, "--out", out, "--save-annotated", photos), "where the source images")
    assert tree(tmp_path) == before
    (tmp_path / "mine.json").write_text("{}")  # a user's file is never replaced
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "road0.jpg").write_bytes(b"a user's picture")
    before = tree(tmp_path)
    one_line_error(run_script(script, photos, "--out", tmp_path / "mine.json"), "already exists", "is not a results file")
    one_line_error(run_script(script, photos, "--out", out, "--save-annotated", tmp_path / "theirs"), "did not write")
    one_line_error(run_script(script, photos, "--out", out, "--save-annotated", bundles["npu"].folder), "the bundle")
    assert tree(tmp_path) == before and tree(bundles["npu"].folder) == bundle_before


def test_grey_and_16_bit_images_work_as_predict_reads_them(models, bundles, photos, tmp_path):
    """A grey and a 16-bit grey image are converted to RGB (16-bit scaled by 1/256, as OpenCV reads them in colour):
    results, not a crash, and the boxes `npuyolo predict` finds on them."""
    folder = tmp_path / "odd"
    folder.mkdir()
    grey = cv2.imread(str(photos / "road0.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(folder / "grey.png"), grey)
    deep = grey.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 200, grey.shape).astype(np.uint16)
    cv2.imwrite(str(folder / "deep16.png"), deep)
    from PIL import Image

    assert Image.open(folder / "grey.png").mode == "L" and Image.open(folder / "deep16.png").mode.startswith("I")
    out = tmp_path / "r.json"
    done = run_script(bundles["npu"].folder / "npuyolo_infer.py", folder, "--out", out)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["images"] == 2 and doc["detections"] > 0
    assert_same_detections(predict_source(load_predictor(None, str(models["npu"])), folder), doc["predictions"])


# ------------------------------------------------------------------------------------------ building: errors and plans
def test_build_refuses_what_it_cannot_ship(models, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    (tmp_path / "lonely.rknn").write_bytes(b"RKNN")
    (tmp_path / "model.bin").write_bytes(b"x")
    cases = {tmp_path / "missing.onnx": "artefact not found", tmp_path / "junk.onnx": "not a readable ONNX model",
             tmp_path / "lonely.rknn": "only models built by `npuyolo npu compile`", tmp_path / "model.bin": "not an artefact"}
    for path, needle in cases.items():
        with pytest.raises(BundleError) as e:
            build_bundle(path, tmp_path / "out")
        assert needle in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "lonely.rknn.npuyolo.json").write_text(json.dumps({"kind": "rknn", "onnx": models["npu"].name}))
    shutil.copyfile(models["npu"], tmp_path / models["npu"].name)
    art = inspect_artefact(tmp_path / "lonely.rknn")  # a build's manifest: the ONNX graph it came from describes it
    assert (art.runtime, art.input.layout, art.input.dtype, art.imgsz) == ("rknnlite", "NHWC", "uint8", IMGSZ)
    with pytest.raises(BundleError, match="conf must be in"):
        build_bundle(models["npu"], tmp_path / "out", conf=1.5)
    (tmp_path / "out" / "leaky-npu-onnxruntime").mkdir(parents=True)
    (tmp_path / "out" / "leaky-npu-onnxruntime" / "mine.txt").write_text("a user's file")
    with pytest.raises(BundleError, match="not a bundle npuyolo wrote"):
        build_bundle(models["npu"], tmp_path / "out")
    assert (tmp_path / "out" / "leaky-npu-onnxruntime" / "mine.txt").read_text() == "a user's file"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["leaky-npu-onnxruntime"]


def _run(reg: Registry, name: str) -> int:
    return reg.create_run(name=name, variant="L4-leaky", recipe={"imgsz": IMGSZ}, data_path=str(MINI / "data.yaml"),
                          data_hash="x", class_names=NAMES, weights_source=None, device="cpu", versions={})


def _record_plan(reg: Registry, run_id: int, folder: Path, int8: Path) -> None:
    """A plan as `deploy plan` records it, with hand-made figures: relu-only ships `int8` (no compiler for it),
    rknn-rk3588 was planned without RKNN-Toolkit2 installed (nothing compiled to ship)."""
    from npuyolo.deploy.plan import Accuracy, Candidate, Placement, Plan, Row, TargetPlan

    def row(t, status=None):
        acc = lambda v: Accuracy(0.8, 0.7, v, v * 0.6)  # noqa: E731
        placement = Placement(1.0, 300, 0, 0, 0, {}, {}, compiler="rknn" if status else None, compiler_status=status)
        return Row(t, Candidate("export", None, "int8"), str(int8), str(int8), placement, acc(0.62), acc(0.61), acc(0.55),
                   acc(0.54), 0.25)

    targets = [TargetPlan(t, r, None, None, [r]) for t, r in (("relu-only", row("relu-only")),
                                                                ("rknn-rk3588", row("rknn-rk3588", "compiler not installed")))]
    path = folder / "plan.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Plan("L4-leaky", run_id, "d.yaml", 0.25, "minmax", targets).as_dict()))
    reg.add_artifact(run_id, "plan", path)


def test_a_run_ships_its_planned_artefact(models, tmp_path, monkeypatch):
    reg = Registry(tmp_path / "r.db")
    planned, bare = _run(reg, "planned"), _run(reg, "bare")
    _record_plan(reg, planned, tmp_path / "plan", models["npu"])
    before = tree(tmp_path / "plan")

    b = bundle_model(tmp_path / "r.db", str(planned), "relu-only")  # the run's own bundle/ folder
    assert b.folder.parent == Path(reg.get_run(planned).save_dir).resolve() / "bundle"
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["target"] == "relu-only" and m["plan"]["candidate"] == "export+int8" and m["plan"]["int8_map50"] == 0.61
    assert m["plan"]["int8_map50_at_conf"] == 0.54 and m["conf"] == 0.25
    readme = (b.folder / "README.md").read_text()
    assert "0.610" in readme and "export+int8" in readme and "no accuracy or speed was measured" not in readme
    assert Registry(tmp_path / "r.db").get_run(planned).artifact("bundle/relu-only").path == str(b.archive)
    assert tree(tmp_path / "plan") == before

    with pytest.raises(BundleError) as e:  # no plan at all
        bundle_model(tmp_path / "r.db", str(bare), "relu-only")
    assert f"npuyolo deploy plan {bare} -t relu-only" in str(e.value)
    with pytest.raises(BundleError, match="planned: relu-only, rknn-rk3588.*npuyolo deploy plan"):
        bundle_model(tmp_path / "r.db", "planned", "edgetpu")
    with pytest.raises(BundleError, match="no rknn build to ship.*npuyolo compilers install rknn"):
        bundle_model(tmp_path / "r.db", "planned", "rknn-rk3588")
    with pytest.raises(NpuyoloError, match="target is required"):
        bundle_model(tmp_path / "r.db", "planned", None)
    moved = models["npu"].with_name("moved.onnx")
    models["npu"].rename(moved)
    try:
        with pytest.raises(BundleError, match="the plan's artefact for relu-only, .* is gone.*npuyolo deploy plan"):
            bundle_model(tmp_path / "r.db", "planned", "relu-only")
    finally:
        moved.rename(models["npu"])

    monkeypatch.chdir(tmp_path)
    cwd_before = sorted(p.name for p in tmp_path.iterdir())
    done = runner.invoke(app, ["deploy", "bundle", "bare", "-t", "amd-dpu", "--registry", str(tmp_path / "r.db"), "--out", "o"])
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1, done.output
    assert "npuyolo deploy plan" in done.output and "amd-dpu" in done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == cwd_before  # nothing written, not even --out
    done = runner.invoke(app, ["deploy", "bundle", "planned", "-t", "relu-only", "--registry", str(tmp_path / "r.db"),
                               "--out", "o", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["plan"]["candidate"] == "export+int8" and (tmp_path / "o").is_dir()
    done = runner.invoke(app, ["deploy", "bundle", "planned", "-t", "relu-only", "--registry", str(tmp_path / "r.db"), "--out", "o"])
    assert done.exit_code == 0 and "plan: export+int8, INT8 mAP50 0.610" in done.output and "npuyolo_infer.py" in done.output

    from npuyolo import Workspace

    api = Workspace(tmp_path / "r.db").bundle("planned", "relu-only", out=tmp_path / "api")
    assert (api.folder / "manifest.json").read_bytes() == (tmp_path / "o" / api.folder.name / "manifest.json").read_bytes()



def test_a_run_ships_its_planned_vela_build_from_cli_and_api(models, tmp_path, monkeypatch):
    """An ethos-u55 plan whose Vela build compiled ships that build's int8 .tflite (runtime tflite, Vela's NPU time),
    from the CLI and from the API alike (issue 33: deploy bundle for a vela target); no compiler needed here."""
    from npuyolo import Workspace
    from npuyolo.deploy.plan import Accuracy, Candidate, Placement, Plan, Row, TargetPlan

    build = tmp_path / "npu" / "vela-ethos-u55-128" / "tflite"
    build.mkdir(parents=True)
    tflite = build / "m_full_integer_quant.tflite"
    tflite.write_bytes(b"TFL3" + b"\0" * 64)
    shutil.copyfile(models["npu"], build / "m.onnx")
    (build / f"{tflite.name}.npuyolo.json").write_text(json.dumps({"kind": "tflite", "onnx": "m.onnx"}))
    for config in ("ethos-u55-128", "ethos-u85-256"):  # Vela's compilations, as npu compile leaves them beside it
        (build.parent / f"vela-{config}").mkdir()
        (build.parent / f"vela-{config}" / "m_full_integer_quant_vela.tflite").write_bytes(b"TFL3" + config.encode())
    reg = Registry(tmp_path / "r.db")
    run = _run(reg, "velarun")
    acc = lambda v: Accuracy(0.8, 0.7, v, v * 0.6)  # noqa: E731
    placement = Placement(1.0, 223, 0, 0, 0, {}, {}, compiler="vela 5.2.0", compiler_status="compiled", compiler_cpu_ops=0,
                          npu_ms=19.14, compiled_file=str(tflite))
    row = Row("ethos-u55", Candidate("export", None, "int8"), str(models["npu"]), str(models["npu"]), placement, acc(0.70),
              acc(0.69), acc(0.6), acc(0.59), 0.25)
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "plan.json").write_text(json.dumps(Plan("L4-leaky", run, "d.yaml", 0.25, "minmax",
                                                                 [TargetPlan("ethos-u55", row, None, None, [row])]).as_dict()))
    reg.add_artifact(run, "plan", tmp_path / "plan" / "plan.json")

    monkeypatch.chdir(tmp_path)
    done = runner.invoke(app, ["deploy", "bundle", "velarun", "-t", "ethos-u55", "--registry", str(tmp_path / "r.db"),
                               "--out", "cli", "--json"])
    assert done.exit_code == 0, done.output
    cli = json.loads(done.output)
    assert cli["runtime"] == "tflite" and cli["artefact"] == tflite.name and cli["plan"]["npu_ms"] == 19.14
    api = Workspace(tmp_path / "r.db").bundle("velarun", "ethos-u55", out=tmp_path / "api")
    m = json.loads((api.folder / "manifest.json").read_text())
    assert m["target"] == "ethos-u55" and m["runtime"] == "tflite" and m["artefact"]["kind"] == "tflite"
    assert (m["input"]["layout"], m["input"]["dtype"]) == ("NHWC", "int8") and m["plan"]["compiler"] == "vela 5.2.0"
    assert (api.folder / tflite.name).read_bytes() == tflite.read_bytes()
    assert (api.folder / "manifest.json").read_bytes() == (tmp_path / "cli" / api.folder.name / "manifest.json").read_bytes()
    # the Ethos-U's own file ships beside it, the one for this target only, checksummed
    vela = api.folder / "m_full_integer_quant_vela.tflite"
    assert vela.read_bytes() == b"TFL3ethos-u55-128" and m["device"]["npu_models"] == [
        {"file": vela.name, "accelerator": "ethos-u55-128", "sha256": hashlib.sha256(vela.read_bytes()).hexdigest(), "bytes": 17}]
    assert sorted(p.name for p in api.folder.glob("*.tflite")) == ["m_full_integer_quant.tflite", vela.name]
    readme = (api.folder / "README.md").read_text()
    assert "19.14 ms (vela 5.2.0's estimate)" in readme and f"`{vela.name}` for `ethos-u55-128`" in readme
    assert f"vela {tflite.name} --accelerator-config ethos-u65-256" in readme

# ------------------------------------------------------------------------------------------ the board runtimes, stood in for
FAKE_RKNN = """
import os
import numpy as np
import onnxruntime as ort


class RKNNLite:
    \"\"\"Stands in for RKNN-Toolkit-Lite2 on the board: the reference ONNX graph plays the NPU, behind the .rknn
    input contract (NHWC RGB uint8; the build's config divides by 255).\"\"\"
    NPU_CORE_AUTO = 0

    def __init__(self, verbose=False):
        self.calls = []

    def load_rknn(self, path):
        assert open(path, "rb").read().startswith(b"RKNN")
        self.sess = ort.InferenceSession(os.environ["FAKE_NPU_ONNX"], providers=["CPUExecutionProvider"])
        return 0

    def init_runtime(self, core_mask=None):
        return 0

    def inference(self, inputs):
        x = inputs[0]
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] == 3, (x.dtype, x.shape)
        x = x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        return self.sess.run(None, {self.sess.get_inputs()[0].name: x})
"""

FAKE_LITERT = """
import os
import numpy as np
import onnxruntime as ort

ORDER = [5, 2, 0, 3, 1, 4]  # onnx2tf may reorder outputs and makes them NHWC


class OpResolverType:
    AUTO, BUILTIN, BUILTIN_REF, BUILTIN_WITHOUT_DEFAULT_DELEGATES = range(4)


class Interpreter:
    \"\"\"Stands in for LiteRT on the host: an int8 NHWC input (scale 1/255, zero point -128) and float NHWC outputs
    in another order, computed by the reference ONNX graph. The runner must ask for TFLite's own integer kernels:
    LiteRT's default XNNPACK delegate rounds int8 differently from the Ethos-U (+0.007 mAP50 on roadsign4 val).\"\"\"

    def __init__(self, model_path, num_threads=None, experimental_op_resolver_type=OpResolverType.AUTO):
        assert open(model_path, "rb").read().startswith(b"TFL3")
        if experimental_op_resolver_type != OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES:
            raise ValueError("XNNPACK would run this int8 model: its rounding is not the NPU's")
        self.sess = ort.InferenceSession(os.environ["FAKE_NPU_ONNX"], providers=["CPUExecutionProvider"])

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{"index": 0, "dtype": np.int8, "quantization": (1 / 255, -128)}]

    def get_output_details(self):
        return [{"index": i, "dtype": np.float32, "quantization": (0.0, 0)} for i in range(len(ORDER))]

    def set_tensor(self, index, x):
        assert x.dtype == np.int8 and x.shape[3] == 3, (x.dtype, x.shape)
        self.x = ((x.astype(np.float32) + 128) / np.float32(255)).transpose(0, 3, 1, 2)

    def invoke(self):
        outs = self.sess.run(None, {self.sess.get_inputs()[0].name: self.x})
        self.outs = [np.ascontiguousarray(outs[j].transpose(0, 2, 3, 1)) for j in ORDER]

    def get_tensor(self, index):
        return self.outs[index]
"""


@pytest.mark.parametrize("kind", ["rknn", "tflite"])
def test_compiled_bundles_run_through_their_runtime(models, photos, kind, tmp_path):
    """A .rknn / int8 .tflite bundle on a runtime that stands in for the board's (rknnlite, ai_edge_litert: the
    reference ONNX graph behind the compiled model's input contract; for LiteRT, an int8 input quantized as the
    interpreter declares, outputs NHWC and reordered): the runner's contract handling and output matching give
    `predict`'s boxes. The real runtimes are tested where the compilers are (below)."""
    build = tmp_path / "build"
    build.mkdir()
    compiled = build / f"model.{kind}"
    compiled.write_bytes((b"RKNN" if kind == "rknn" else b"TFL3") + b"\0" * 64)
    shutil.copyfile(models["npu"], build / "model.onnx")
    (build / f"model.{kind}.npuyolo.json").write_text(json.dumps({"kind": kind, "onnx": "model.onnx", "target": "rk3588"}))
    b = build_bundle(compiled, tmp_path / "out")
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["runtime"] == ("rknnlite" if kind == "rknn" else "tflite") and m["input"]["layout"] == "NHWC"
    assert m["target"] == ("rk3588" if kind == "rknn" else "tflite") and m["artefact"]["file"] == compiled.name
    readme = (b.folder / "README.md").read_text()
    if kind == "tflite":  # the board's README: LiteRT on a host, Vela's file and postprocess.c's NHWC int8 on the Ethos-U
        assert "pip install numpy pillow ai-edge-litert" in readme and "XNNPACK" in readme
        assert "vela model.tflite --accelerator-config" in readme and "model_vela.tflite" in readme
        assert "TensorFlow Lite Micro" in readme and "NPUYOLO_NHWC" in readme and "1 x g x g x 64" in readme
    else:
        assert "rknn_toolkit_lite2" in readme and "_vela" not in readme and "XNNPACK" not in readme
    fake = tmp_path / "site"
    package = fake / ("rknnlite" if kind == "rknn" else "ai_edge_litert")
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / ("api.py" if kind == "rknn" else "interpreter.py")).write_text(FAKE_RKNN if kind == "rknn" else FAKE_LITERT)
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(fake), "FAKE_NPU_ONNX": str(build / "model.onnx")}
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(b.folder / "npuyolo_infer.py"), str(photos), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    reference = predict_source(load_predictor(None, str(models["npu"])), photos)
    boxes, _, _ = assert_same_detections(reference, json.loads(out.read_text())["predictions"])
    assert boxes >= 50
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(b.folder / "npuyolo_infer.py"), str(photos), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    lines = done.stderr.strip().splitlines()  # without the runtime: one line naming what to install
    assert done.returncode == 2 and len(lines) == 1 and "pip install" in lines[0], done.stderr


# ------------------------------------------------------------------------------------------ with the vendor compilers
@pytest.mark.skipif(installed("rknn") is None, reason="RKNN-Toolkit2 is not installed (`npuyolo compilers install rknn`): "
                    "the .rknn bundle cannot be built or run in its simulator here")
def test_rknn_bundle_in_the_simulator(tmp_path):  # pragma: no cover - needs the compiler
    from npuyolo.deploy.compile import compile_model

    # the committed 320 px L4-relu (trained: a mAP worth comparing on the mini val photos); registry under tmp_path
    weights = REPO / "bench" / "seed_experiment" / "320" / "L4-relu" / "best.pt"
    result = compile_model(Registry(tmp_path / "r.db"), str(weights), "rknn", "rk3588", MINI / "data.yaml", imgsz=320)
    b = build_bundle(result.build.rknn_file, tmp_path / "out", target="rknn-rk3588")
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["runtime"] == "rknnlite" and m["input"]["layout"] == "NHWC" and m["input"]["dtype"] == "uint8"
    # the bundle's runner in the compiler's environment, the simulator as rknnlite (bench/bundle.py --rknn): its
    # CLI boxes are its Bundle's, and on val it scores what deploy eval gives the same .rknn (issue 33: within 0.002)
    spec = importlib.util.spec_from_file_location("bench_bundle", REPO / "bench" / "bundle.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    scores = bench.rknn_scores(Path(result.build.rknn_file), MINI / "data.yaml")
    assert scores["bundle"]["images"] == scores["deploy_eval"]["images"] == 4 and scores["deploy_eval"]["map50"] > 0.3
    assert scores["cli_vs_bundle_max_px"] < 1e-3 and abs(scores["diff_map50"]) <= 0.002, scores


@pytest.mark.skipif(installed("vela") is None, reason="Vela (and ai_edge_litert in its environment) is not installed "
                    "(`npuyolo compilers install vela`): the int8 .tflite bundle cannot be built or run here")
def test_vela_tflite_bundle_runs_in_litert(photos, tmp_path):  # pragma: no cover - needs the compiler
    from npuyolo.deploy.compile import compile_model

    # the committed 320 px L4-relu, as for the .rknn: the int8 .tflite Vela compiles, bundled for ethos-u55
    weights = REPO / "bench" / "seed_experiment" / "320" / "L4-relu" / "best.pt"
    result = compile_model(Registry(tmp_path / "r.db"), str(weights), "vela", "ethos-u55-128", MINI / "data.yaml", imgsz=320)
    b = build_bundle(result.build.tflite, tmp_path / "out", target="ethos-u55")
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["runtime"] == "tflite" and m["input"]["layout"] == "NHWC" and m["input"]["dtype"] == "int8"
    vela = b.folder / f"{Path(result.build.tflite).stem}_vela.tflite"  # what the Ethos-U runs, shipped beside it
    assert vela.is_file() and [v["accelerator"] for v in m["device"]["npu_models"]] == ["ethos-u55-128"]
    env = installed("vela")
    out = tmp_path / "r.json"
    done = subprocess.run([env.python, str(b.folder / "npuyolo_infer.py"), str(photos), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["images"] == 8
    # on LiteRT itself (bench/bundle.py --tflite): its CLI boxes are its Bundle's, and on val it scores what deploy
    # eval (TFLite's reference kernels) gives the same file (issue 33: within 0.002)
    spec = importlib.util.spec_from_file_location("bench_bundle", REPO / "bench" / "bundle.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    scores = bench.tflite_scores(Path(result.build.tflite), MINI / "data.yaml")
    assert scores["bundle"]["images"] == scores["deploy_eval"]["images"] == 4 and scores["deploy_eval"]["map50"] > 0.3
    assert scores["cli_vs_bundle_max_px"] < 1e-3 and abs(scores["diff_map50"]) <= 0.002, scores
    # and on deploy eval's own letterboxed images, the runner's kernels and decode give deploy eval's figure
    assert scores["on_eval_letterbox"]["images"] == 4 and abs(scores["on_eval_letterbox"]["diff_map50"]) <= 0.002, scores


@pytest.mark.parametrize("plan", ["nested", "fifo"])
def test_a_recorded_plan_nested_too_deep_or_a_fifo_is_one_line_never_a_hang(tmp_path, plan):
    """`deploy bundle RUN -t TARGET` read the run's plan.json with read_text and json.loads: a plan nested 100,000 deep
    stopped it with RecursionError's traceback, and a FIFO at the plan's path blocked it for ever."""
    import signal

    reg = Registry(tmp_path / "r.db")
    run = _run(reg, "planned")
    path = tmp_path / "plan" / "plan.json"
    path.parent.mkdir()
    if plan == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        os.mkfifo(path)
    reg.add_artifact(run, "plan", path)

    class Hung(BaseException):  # not an OSError: the bundle's own handlers must not take it for a damaged plan
        pass

    def hung(*_):
        raise Hung("deploy bundle blocked on the plan")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        done = runner.invoke(app, ["deploy", "bundle", "planned", "-t", "relu-only", "--registry", str(tmp_path / "r.db"),
                                   "--out", str(tmp_path / "out")])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1, (done.output, done.exception)
    assert "plan" in done.output and "damaged" in done.output
    assert not (tmp_path / "out").exists()
