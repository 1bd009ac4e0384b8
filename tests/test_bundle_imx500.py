"""`npuyolo deploy bundle` for the Sony IMX500 (issue 33): the bundle ships the converter's packerOut.zip (made into
network.rpk on the Pi), MCT's model_imx.onnx for a host check and labels.txt; its runner turns the sensor's outputs
(the network and its NMS ran on the sensor: boxes, scores, class ids, a count) into boxes in the picture's pixels.

On a bare clone the sensor's outputs are made here as Ultralytics' format='imx' model gives them (its NMSWrapper around
edge-mdt-cl's multiclass NMS, re-done with torchvision below) from the FP32 model's boxes and scores; the build folder
is the layout `npu compile --compiler imx500` writes. With the imx500 compiler installed (and NPUYOLO_SLOW_COMPILERS=1),
a real build is bundled and its model_imx.onnx runs in ONNX Runtime with MCT's and edge-mdt-cl's ops as the sensor's
stand-in, beside `deploy eval`'s scoring of the same build."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from onnx import TensorProto, helper

from npuyolo.compilers.envs import installed
from npuyolo.compilers.manifest import write_manifest
from npuyolo.deploy.bundle import BundleError, build_bundle, inspect_artefact
from npuyolo.deploy.export import export_onnx
from npuyolo.variants.build import build_model

from .conftest import REPO, perturbed
from .test_bundle import NO_TORCH, load_runner, one_line_error, tree

MINI = REPO / "tests" / "fixtures" / "roadsign4_mini"
NAMES = ["trafficlight", "stop", "speedlimit", "crosswalk"]
IMGSZ = 160
MAX_DET, SCORE_THR, IOU = 300, 0.25, 0.7  # the sensor's NMS as a real build (npu compile, Ultralytics 8.4) bakes it in
COORD_TOL = 0.5  # px in the original image (the issue's)


def sensor_outputs(pred: np.ndarray, score_threshold=SCORE_THR, iou=IOU, max_det=MAX_DET) -> list[np.ndarray]:
    """What the IMX500 returns for one image, from the FP32 graph's [1, 4 + nc, A] (xywh px, class scores).

    Ultralytics' imx route ends the model in boxes [1, A, 4] (x1 y1 x2 y2) and scores [1, A, nc], then NMSWrapper calls
    edge-mdt-cl's multiclass_nms_with_indices: every (box, class) over the score threshold is a candidate, NMS per class
    (torchvision's, classes offset apart), best first, the first max_det kept, zero-padded; outputs boxes, scores,
    labels (int32) and n_valid [1, 1]."""
    p = torch.from_numpy(pred[0]).T.double()
    xy, wh, scores = p[:, :2], p[:, 2:4], p[:, 4:]
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1)
    a, c = (scores > score_threshold).nonzero(as_tuple=True)
    keep = torchvision.ops.batched_nms(boxes[a], scores[a, c], c, iou)[:max_det]
    out_b, out_s, out_l = np.zeros((1, max_det, 4), np.float32), np.zeros((1, max_det), np.float32), np.zeros((1, max_det), np.int32)
    n = len(keep)
    out_b[0, :n], out_s[0, :n], out_l[0, :n] = boxes[a][keep].numpy(), scores[a, c][keep].numpy(), c[keep].numpy()
    return [out_b, out_s, out_l, np.array([[n]], np.float32)]


def fake_mct_model(path: Path, imgsz: int, max_det: int = MAX_DET, iou: float = IOU, score: float = SCORE_THR) -> Path:
    """A model_imx.onnx with the interface of MCT's export of Ultralytics' NMSWrapper, as a real build has it
    (imx500-converter 3.19.2, MCT 2.5.1): input [batch_size, 3, S, S]; the EdgeMDT MultiClassNMSWithIndices node with
    its thresholds; outputs output_0..3 (boxes, scores, labels, n_valid; int32 labels and count) with symbolic dims.
    Only read, never run."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, imgsz, imgsz])
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in (
        ("output_0", TensorProto.FLOAT, ["batch_size", "d0_1", "d0_2"]), ("output_1", TensorProto.FLOAT, ["batch_size", "d1_1"]),
        ("output_2", TensorProto.INT32, ["batch_size", "d2_1"]), ("output_3", TensorProto.INT32, ["batch_size", "d3_1"]))]
    nms = helper.make_node("MultiClassNMSWithIndices", ["b", "s"], ["output_0", "output_1", "output_2", "indices", "output_3"],
                           domain="EdgeMDT", score_threshold=score, iou_threshold=iou, max_detections=max_det)
    pre = [helper.make_node("ReduceMean", ["input"], ["b"]), helper.make_node("ReduceMean", ["input"], ["s"])]
    graph = helper.make_graph(pre + [nms], "mct", [x], outs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("EdgeMDT", 1)]), str(path))
    return path


def fake_build(root: Path, fp32_source: Path, names=NAMES, imgsz=IMGSZ, **nms) -> Path:
    """The folder `npu compile --compiler imx500` writes: the FP32 graph, MCT's dense model with its manifest, and the
    converter's output folder (packerOut.zip stands in as bytes: only the camera reads it)."""
    build = root / "imx500-imx500-leaky-ultralytics-160"
    conv = build / "model_imx_model"
    conv.mkdir(parents=True)
    fp32 = build / "model_fp32.onnx"
    shutil.copyfile(fp32_source, fp32)
    dense = build / "model_imx_dense.onnx"
    shutil.copyfile(fp32_source, dense)
    write_manifest(dense, "onnx", fp32, mct=True, outputs="boxes,scores")
    (conv / "packerOut.zip").write_bytes(b"PK\x03\x04 not the converter's bytes, only the camera reads them")
    fake_mct_model(conv / "model_imx.onnx", imgsz, **nms)
    (conv / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    (conv / "dnnParams.xml").write_text("<l2memory totalSize=\"8388480\"/>")
    return build


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    """An L4-leaky model with varied, confident boxes (as test_bundle's), FP32 ONNX with Ultralytics' head."""
    torch.manual_seed(0)
    model = perturbed(build_model("L4-leaky", nc=4, names=NAMES), scale=0.1, seed=0, class_bias=-2.5)
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].weight.mul_(0.01)
    return export_onnx(model, tmp_path_factory.mktemp("imx-models") / "leaky-ultralytics.onnx", imgsz=IMGSZ, head="ultralytics")


@pytest.fixture(scope="module")
def bundle(fp32, tmp_path_factory):
    root = tmp_path_factory.mktemp("imx")
    build = fake_build(root / "builds", fp32)
    return build, build_bundle(build, root / "out")


# ------------------------------------------------------------------------------------------ the bundle
def test_an_imx500_build_bundles_its_package(bundle, fp32, tmp_path):
    build, b = bundle
    assert b.folder.name == "leaky-ultralytics-160-imx500"
    files = sorted(p.name for p in b.folder.iterdir())
    assert files == ["README.md", "labels.txt", "manifest.json", "model_imx.onnx", "npuyolo_infer.py", "packerOut.zip"]
    conv = build / "model_imx_model"
    for name in ("packerOut.zip", "model_imx.onnx", "labels.txt"):
        assert (b.folder / name).read_bytes() == (conv / name).read_bytes()
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["runtime"] == "picamera2" and m["target"] == "imx500" and m["artefact"]["kind"] == "imx500"
    assert m["artefact"]["file"] == "packerOut.zip" and m["imgsz"] == IMGSZ and list(m["names"].values()) == NAMES
    dev = m["device"]
    assert (dev["op"], dev["iou_threshold"], dev["score_threshold"], dev["max_detections"]) == (
        "EdgeMDT::MultiClassNMSWithIndices", IOU, SCORE_THR, MAX_DET)
    assert m["iou"] == IOU and m["conf"] == 0.25 and m["max_det"] == MAX_DET and dev["rpk"] == "network.rpk"
    assert [(o["role"], o["shape"]) for o in m["outputs"]] == [("boxes", [1, 300, 4]), ("scores", [1, 300]),
                                                                ("classes", [1, 300]), ("count", [1, 1])]
    assert m["input"] == {**m["input"], "shape": [1, 3, IMGSZ, IMGSZ], "layout": "NCHW", "channels": "RGB", "scale": "0-1"}
    readme = (b.folder / "README.md").read_text()
    assert "imx500-package -i packerOut.zip -o ." in readme and "sudo apt install imx500-all" in readme
    assert "--camera 100" in readme and "IoU 0.7" in readme and "no accuracy was measured" in readme
    with tarfile.open(b.archive) as tar:
        assert sorted(tar.getnames()) == sorted(f"{b.folder.name}/{f}" for f in files)
    from typer.testing import CliRunner

    from npuyolo.cli import app

    done = CliRunner().invoke(app, ["deploy", "bundle", "--artefact", str(build), "--out", str(tmp_path / "cli")])
    assert done.exit_code == 0 and "imx500-package -i packerOut.zip -o . && python3 npuyolo_infer.py --camera" in done.output
    # every way to name the build is the same build
    for given in (conv, conv / "packerOut.zip", conv / "model_imx.onnx", build / "model_imx_dense.onnx"):
        assert inspect_artefact(given).path == conv / "packerOut.zip"


def test_imx500_outputs_become_the_pictures_boxes(bundle, fp32):
    """The runner's numpy post-processing of the sensor's outputs (as ONNX Runtime gives them: int32 labels; and as
    picamera2 does: everything float32) against an independent computation: the valid rows over conf, boxes through
    Ultralytics' own scale_boxes, on the 8 roadsign4_mini photos letterboxed as the runner does."""
    from ultralytics.utils.ops import scale_boxes

    _, b = bundle
    run = load_runner(b.folder)
    m = run.load_manifest(b.folder)
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    conf, seen, worst, padded = 0.3, 0, 0.0, 0
    for path in sorted((MINI / "images").glob("*/*.jpg")):
        rgb = run.read_image(path)
        canvas, gain, pad = run.letterbox(rgb, IMGSZ)
        pred = sess.run(None, {sess.get_inputs()[0].name: run.prepare(canvas, m["input"], None)})[0]
        for outs in (sensor_outputs(pred, score_threshold=0.001), sensor_outputs(pred)):  # all 300 rows valid, or padded
            n = int(outs[3][0, 0])
            padded += n < MAX_DET
            assert 0 < n <= MAX_DET and (outs[1][0, n:] == 0).all()  # zero-padded past the count
            rows = [i for i in range(n) if outs[1][0, i] > conf]
            want = scale_boxes((IMGSZ, IMGSZ), torch.from_numpy(outs[0][0, rows].copy()), rgb.shape[:2]).numpy()
            for given in (outs, [o.astype(np.float32) for o in outs]):  # ONNX Runtime's dtypes, picamera2's
                got = run.unletterbox(run.imx500_detections(given, m, conf), gain, pad, rgb.shape[1], rgb.shape[0])
                assert len(got) == len(rows) > 0
                assert np.array_equal(got[:, 4], outs[1][0, rows]) and np.array_equal(got[:, 5], outs[2][0, rows])
                worst = max(worst, float(np.abs(got[:, :4] - want).max()))
                seen += len(rows)
            assert len(run.imx500_detections(outs, m, 0.0009)) == n  # every valid row is kept at a lower conf
    assert worst <= COORD_TOL and seen >= 16 and padded >= 4, (worst, seen, padded)


def test_imx500_outputs_that_do_not_fit_are_one_line(bundle):
    _, b = bundle
    run = load_runner(b.folder)
    m = run.load_manifest(b.folder)
    boxes, scores = np.zeros((1, 300, 4), np.float32), np.zeros((1, 300), np.float32)
    scores[0, 0] = 0.9
    with pytest.raises(run.BundleError, match="class id 7, but this model has 4 classes"):
        run.imx500_detections([boxes, scores, np.full((1, 300), 7, np.int32), np.ones((1, 1))], m, 0.25)
    with pytest.raises(run.BundleError, match="do not match"):
        run.imx500_detections([boxes[:, :10], scores, scores, np.ones((1, 1))], m, 0.25)
    with pytest.raises(run.BundleError, match="gave 2 outputs"):
        run.imx500_detections([boxes, scores], m, 0.25)
    # a count of 0 keeps nothing, whatever the padding holds; no count: every row is read
    assert len(run.imx500_detections([boxes, scores, np.zeros((1, 300)), np.zeros((1, 1))], m, 0.25)) == 0
    assert len(run.imx500_detections([boxes, scores, np.zeros((1, 300))], m, 0.25)) == 1


FAKE_PICAMERA2 = '''
"""picamera2's IMX500 API as its imx500_object_detection_demo.py uses it, for a test without the camera: the sensor's
outputs come from outputs.npz (as get_outputs gives them: float32, a batch axis added); the full sensor is 4056x3040,
the main stream 1014x760 (a quarter), the inference ROI the full sensor, so convert_inference_coords is a scale."""
import json, os
import numpy as np
from PIL import Image

STATE = os.environ["FAKE_PICAMERA2_STATE"]

def _log(what):
    with open(STATE, "a") as f:
        f.write(json.dumps(what) + "\\n")

class Picamera2:
    def __init__(self, num):
        _log(["Picamera2", num])
        self.frames = 0
    def create_preview_configuration(self, **kw):
        return {"main": {"size": (1014, 760)}}
    def configure(self, config):
        pass
    def camera_configuration(self):
        return {"main": {"size": (1014, 760)}, "raw": {"size": (4056, 3040)}}
    def start(self):
        _log(["start"])
    def stop(self):
        _log(["stop"])
    def capture_request(self):
        self.frames += 1
        return Request(self.frames)

class Request:
    def __init__(self, n):
        self.n = n
    def get_metadata(self):
        return {"frame": self.n}
    def make_image(self, stream):
        return Image.new("RGBA", (1014, 760), (10, 20, 30, 255))
    def release(self):
        _log(["release", self.n])
'''

FAKE_IMX500 = '''
import os
import numpy as np
from picamera2 import _log

class IMX500:
    def __init__(self, network_file):
        _log(["IMX500", os.path.basename(network_file)])
        self.camera_num = 0
        data = np.load(os.environ["FAKE_PICAMERA2_OUTPUTS"])
        self.outputs = [data[k].astype(np.float32)[0] for k in ("boxes", "scores", "labels", "n_valid")]
    def show_network_fw_progress_bar(self):
        pass
    def set_auto_aspect_ratio(self):
        _log(["aspect"])
    def get_input_size(self):
        return (160, 160)
    def get_outputs(self, metadata, add_batch=False):
        if metadata["frame"] == 1:  # the first frame comes before the network ran
            return None
        return [np.expand_dims(o, 0) if add_batch else o for o in self.outputs]
    def convert_inference_coords(self, coords, metadata, picam2):
        y0, x0, y1, x1 = coords
        x, y = int(x0 * 4056) // 4, int(y0 * 3040) // 4
        return (x, y, int((x1 - x0) * 4056) // 4, int((y1 - y0) * 3040) // 4)
'''


@pytest.fixture
def fake_picamera2(tmp_path):
    lib = tmp_path / "fakelib"
    (lib / "picamera2" / "devices").mkdir(parents=True)
    (lib / "picamera2" / "__init__.py").write_text(FAKE_PICAMERA2)
    (lib / "picamera2" / "devices" / "__init__.py").write_text(FAKE_IMX500)
    return lib


def run_blocked(script: Path, *args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The runner with PyTorch, Ultralytics, OpenCV and npuyolo unimportable (test_bundle's block)."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, **(env or {})})


def test_the_camera_loop_reads_the_sensor_through_picamera2(bundle, fp32, fake_picamera2, tmp_path):
    """`--camera N` on a Pi, with picamera2's IMX500 API stood in for: the frame without outputs is skipped, every
    request released, boxes thresholded and mapped to the main stream by convert_inference_coords ((y0, x0, y1, x1)
    relative to the input tensor), named; annotated frames written; no PyTorch anywhere."""
    _, b = bundle
    folder = tmp_path / "b"
    shutil.copytree(b.folder, folder)
    run = load_runner(folder)
    m = run.load_manifest(folder)
    rgb = run.read_image(sorted((MINI / "images" / "val").glob("*.jpg"))[0])
    canvas, _, _ = run.letterbox(rgb, IMGSZ)
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    outs = sensor_outputs(sess.run(None, {sess.get_inputs()[0].name: run.prepare(canvas, m["input"], None)})[0])
    np.savez(tmp_path / "outputs.npz", boxes=outs[0], scores=outs[1], labels=outs[2], n_valid=outs[3])
    env = {"PYTHONPATH": str(tmp_path / "fakelib"), "FAKE_PICAMERA2_STATE": str(tmp_path / "state.jsonl"),
           "FAKE_PICAMERA2_OUTPUTS": str(tmp_path / "outputs.npz")}
    (folder / "network.rpk").write_bytes(b"made by imx500-package on the Pi")
    before = tree(tmp_path / "b")
    done = run_blocked(folder / "npuyolo_infer.py", "--camera", 3, "--out", tmp_path / "r.json", "--save-annotated",
                       tmp_path / "frames", env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["images"] == 3 and doc["runtime"] == "picamera2"
    keep = [i for i in range(int(outs[3][0, 0])) if outs[1][0, i] > 0.25]
    assert keep
    for frame in doc["predictions"]:
        assert (frame["width"], frame["height"]) == (1014, 760) and len(frame["boxes"]) == len(keep)
        for box, i in zip(frame["boxes"], keep):
            x1, y1, x2, y2 = outs[0][0, i] / IMGSZ
            x, y = int(x1 * 4056) // 4, int(y1 * 3040) // 4
            assert (box["x1"], box["y1"]) == (x, y) and box["x2"] == x + int((x2 - x1) * 4056) // 4
            assert box["cls"] == outs[2][0, i] and box["name"] == NAMES[outs[2][0, i]]
            assert abs(box["conf"] - outs[1][0, i]) < 1e-6
    state = [json.loads(x) for x in (tmp_path / "state.jsonl").read_text().splitlines()]
    assert state[0] == ["IMX500", "network.rpk"] and state[-1] == ["stop"]
    assert [s[1] for s in state if s[0] == "release"] == [1, 2, 3, 4]  # four requests for three frames with outputs
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [".npuyolo-annotated", "frame-00000.jpg",
                                                                        "frame-00001.jpg", "frame-00002.jpg"]
    assert tree(tmp_path / "b") == before  # nothing written into the bundle

    # no network.rpk: one line naming the packaging step, nothing written
    (folder / "network.rpk").unlink()
    done = run_blocked(folder / "npuyolo_infer.py", "--camera", 3, "--out", tmp_path / "r2.json", env=env)
    one_line_error(done, "network.rpk not found", "imx500-package -i packerOut.zip -o .")
    assert not (tmp_path / "r2.json").exists()


def test_bad_imx500_runs_are_one_line_and_write_nothing(bundle, tmp_path):
    _, b = bundle
    folder = tmp_path / "b"
    shutil.copytree(b.folder, folder)
    photo = sorted((MINI / "images" / "val").glob("*.jpg"))[0]
    before = tree(tmp_path)
    script = folder / "npuyolo_infer.py"
    out = tmp_path / "r.json"
    cases = [
        (["--camera", 2, "--out", out], ["picamera2 is not installed", "sudo apt install"]),  # no picamera2 here
        ([photo, "--out", out], ["needs onnxruntime, mct-quantizers and edge-mdt-cl", "--camera"]),  # no MCT here
        ([photo, "--camera", 2, "--out", out], ["not both"]),
        (["--out", out], ["not both"]),
        (["--camera", 0, "--out", out], ["at least 1 frame"]),
        (["--camera", 2, "--out", out, "--iou", 0.5], ["IoU 0.7, fixed when the model was compiled"]),
        (["--camera", 2, "--out", out, "--conf", 0.1], ["below the sensor's NMS score threshold 0.25"]),
    ]
    for args, needles in cases:
        one_line_error(run_blocked(script, *args), *needles)
    assert tree(tmp_path) == before and not out.exists()
    (folder / "model_imx.onnx").write_bytes(b"swapped")
    one_line_error(run_blocked(script, photo, "--out", out), "model_imx.onnx: its sha256 does not match")
    (folder / "model_imx.onnx").unlink()
    one_line_error(run_blocked(script, photo, "--out", out), "model_imx.onnx not found")
    m = json.loads((folder / "manifest.json").read_text())
    m["device"]["iou_threshold"] = 0.3
    (folder / "manifest.json").write_text(json.dumps(m))
    one_line_error(run_blocked(script, "--camera", 1, "--out", out), "edited by hand")
    assert not out.exists()


def test_camera_is_only_for_imx500_bundles(fp32, tmp_path):
    b = build_bundle(fp32, tmp_path / "out")
    one_line_error(run_blocked(b.folder / "npuyolo_infer.py", "--camera", 2, "--out", tmp_path / "r.json"),
                   "--camera is for IMX500 bundles")


def test_builds_that_cannot_ship_are_one_line(fp32, tmp_path):
    def refused(path, *needles, **kw):
        with pytest.raises(BundleError) as e:
            build_bundle(path, tmp_path / "out", **kw)
        assert all(n in str(e.value) for n in needles), str(e.value)
        assert "\n" not in str(e.value)

    build = fake_build(tmp_path / "a", fp32)
    refused(build, "IoU 0.7, fixed when the model was compiled", iou=0.5)
    refused(build, "below the sensor's NMS score threshold 0.25", conf=0.1)
    stray = tmp_path / "stray" / "model_imx_model"
    stray.mkdir(parents=True)
    (stray / "packerOut.zip").write_bytes(b"PK")  # Ultralytics' own export, not npu compile's build
    refused(stray / "packerOut.zip", "not an IMX500 build of `npuyolo npu compile --compiler imx500`")
    refused(tmp_path / "stray", "not an IMX500 build")
    (build / "model_imx_model" / "packerOut.zip").unlink()
    refused(build, "no packerOut.zip", "the converter did not finish", "imx500.log")
    build = fake_build(tmp_path / "b", fp32)
    (build / "model_imx_model" / "labels.txt").write_text("a\nb\nc\nd\n")
    refused(build, "labels.txt: its class names")
    build = fake_build(tmp_path / "c", fp32, imgsz=320)
    refused(build, "not the 160 px detection model")
    build = fake_build(tmp_path / "d", fp32)
    fake_mct_model(build / "model_imx_model" / "model_imx.onnx", IMGSZ, max_det=100)
    g = onnx.load(str(build / "model_imx_model" / "model_imx.onnx"))
    del g.graph.node[-1]
    onnx.save(g, str(build / "model_imx_model" / "model_imx.onnx"))
    refused(build, "no NMS layer")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_runs_imx500_plan_ships_its_build(fp32, tmp_path):
    """`deploy bundle RUN -t imx500`: the plan's compiled file (npu compile's model_imx_dense.onnx) names the build whose
    packerOut.zip ships, with the plan's figures; a plan whose imx500 row built nothing is refused, naming the install
    (it never ships an ONNX file the sensor cannot run)."""
    from npuyolo.deploy.bundle.service import bundle_model
    from npuyolo.deploy.plan import Accuracy, Candidate, Placement, Plan, Row, TargetPlan
    from npuyolo.registry.db import Registry

    reg = Registry(tmp_path / "r.db")
    run = reg.create_run(name="planned", variant="L4-leaky", recipe={"imgsz": IMGSZ}, data_path=str(MINI / "data.yaml"),
                         data_hash="x", class_names=NAMES, weights_source=None, device="cpu", versions={})
    build = fake_build(tmp_path / "builds", fp32)

    def plan(status, compiled, conf=0.3):
        acc = lambda v: Accuracy(0.8, 0.7, v, v * 0.6)  # noqa: E731
        placement = Placement(1.0, 300, 0, 0, 0, {}, {}, compiler="imx500 3.19.2", compiler_status=status,
                              compiler_cpu_ops=0, compiled_file=compiled)
        row = Row("imx500", Candidate("export", None, "int8"), str(fp32), str(fp32), placement, acc(0.62), acc(0.61),
                  acc(0.55), acc(0.54), conf)
        path = tmp_path / f"plan-{len(list(tmp_path.glob('plan-*')))}.json"
        path.write_text(json.dumps(Plan("L4-leaky", run, "d.yaml", conf, "minmax", [TargetPlan("imx500", row, None, None, [row])]).as_dict()))
        reg.add_artifact(run, "plan", path)

    plan("compiled", str(build / "model_imx_dense.onnx"))
    b = bundle_model(tmp_path / "r.db", str(run), "imx500", out=tmp_path / "out")
    m = json.loads((b.folder / "manifest.json").read_text())
    assert m["artefact"]["file"] == "packerOut.zip" and m["conf"] == 0.3 and m["plan"]["int8_map50"] == 0.61
    plan("compiled", str(build / "model_imx_dense.onnx"), conf=0.1)  # under the sensor's cut: the bundle's conf is the cut
    assert json.loads((bundle_model(tmp_path / "r.db", str(run), "imx500", out=tmp_path / "o1").folder
                       / "manifest.json").read_text())["conf"] == SCORE_THR
    assert "0.610" in (b.folder / "README.md").read_text()
    given = bundle_model(tmp_path / "r.db", str(run), "imx500", artefact=build, out=tmp_path / "o2")
    assert given.manifest.plan is not None and given.manifest.plan.int8_map50 == 0.61  # the planned build, named by folder
    plan("compiler not installed", None)
    with pytest.raises(BundleError, match="no imx500 build to ship.*npuyolo compilers install imx500"):
        bundle_model(tmp_path / "r.db", str(run), "imx500", out=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------------ the real converter (slow)
IMX = installed("imx500")
SLOW = os.environ.get("NPUYOLO_SLOW_COMPILERS") == "1"


def runnable_nms_model(path: Path, imgsz: int, boxes: np.ndarray, scores: np.ndarray) -> Path:
    """A model_imx.onnx ONNX Runtime can run with edge-mdt-cl's op: fixed boxes [1, A, 4] and scores [1, A, nc] (the
    input only added as zero) into EdgeMDT's MultiClassNMSWithIndices with a real build's thresholds, outputs as MCT
    names them."""
    from onnx import numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, imgsz, imgsz])
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in (
        ("output_0", TensorProto.FLOAT, ["batch_size", "d0_1", "d0_2"]), ("output_1", TensorProto.FLOAT, ["batch_size", "d1_1"]),
        ("output_2", TensorProto.INT32, ["batch_size", "d2_1"]), ("output_3", TensorProto.INT32, ["batch_size", "d3_1"]))]
    inits = [numpy_helper.from_array(boxes.astype(np.float32), "B"), numpy_helper.from_array(scores.astype(np.float32), "S"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0), helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["S", "z"], ["s"]),
             helper.make_node("MultiClassNMSWithIndices", ["B", "s"], ["output_0", "output_1", "output_2", "indices", "output_3"],
                              domain="EdgeMDT", score_threshold=SCORE_THR, iou_threshold=IOU, max_detections=MAX_DET)]
    graph = helper.make_graph(nodes, "mct", [x], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("EdgeMDT", 1),
                                                    helper.make_opsetid("mct_quantizers", 1)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.skipif(IMX is None, reason="the host check runs model_imx.onnx with MCT's and edge-mdt-cl's ONNX Runtime ops, "
                                        "installed by `npuyolo compilers install imx500` (not installed here)")
def test_the_host_check_runs_in_the_imx500_environment(fp32, tmp_path):  # pragma: no cover - needs the compiler
    """The runner's host path in the imx500 environment, as a user runs it: MCT's session options and edge-mdt-cl's
    NMS op together (registering onnxruntime-extensions' library twice fails the session), the NMS run by edge-mdt-cl
    itself, the boxes mapped back to each photo."""
    from npuyolo.compilers.envs import clean_env

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, IMGSZ - 40, (40, 2))
    boxes = np.concatenate((xy, xy + rng.uniform(8, 40, (40, 2))), 1)[None]
    boxes[0, 20:] = boxes[0, :20] + rng.uniform(-3, 3, (20, 4))  # overlapping pairs: NMS has work
    scores = rng.uniform(0, 1, (1, 40, len(NAMES))) ** 3
    build = fake_build(tmp_path / "builds", fp32)
    runnable_nms_model(build / "model_imx_model" / "model_imx.onnx", IMGSZ, boxes, scores)
    b = build_bundle(build, tmp_path / "out")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((MINI / "images" / "val").glob("*.jpg")):
        shutil.copyfile(p, photos / p.name)
    done = subprocess.run([IMX.python, str(b.folder / "npuyolo_infer.py"), str(photos), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr
    ref = sensor_outputs(np.concatenate(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2],
                                         scores), 2).transpose(0, 2, 1))
    n = int(ref[3][0, 0])
    run = load_runner(b.folder)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["images"] == 4 and 0 < n < (scores > SCORE_THR).sum()  # some candidates suppressed
    for r in doc["predictions"]:
        canvas, gain, pad = run.letterbox(run.read_image(Path(r["source"])), IMGSZ)
        want = run.unletterbox(np.concatenate((ref[0][0, :n], ref[1][0, :n, None], ref[2][0, :n, None]), 1), gain, pad,
                               r["width"], r["height"])
        got = np.array([[x[k] for k in ("x1", "y1", "x2", "y2", "conf", "cls")] for x in r["boxes"]])
        assert got.shape == want.shape and np.array_equal(got[:, 5], want[:, 5])
        assert np.abs(got[:, :5] - want[:, :5]).max() < 1e-3


@pytest.mark.skipif(IMX is None or not SLOW,
                    reason="a real IMX500 build (MCT + the converter, ~15-25 min on 2 cores, ~6 GB RAM): needs `npuyolo compilers "
                           "install imx500` and NPUYOLO_SLOW_COMPILERS=1 (the bundle itself is tested above on npu compile's layout)")
@pytest.mark.timeout(3600)
def test_real_imx500_bundle_runs_like_deploy_eval(tmp_path):  # pragma: no cover - needs the compiler
    """The committed 320 px L4-relu through `npu compile --compiler imx500`, bundled. Its runner runs in the imx500
    environment with model_imx.onnx (MCT's quantizer ops, edge-mdt-cl's NMS) standing in for the sensor: on the 8
    photos as a user runs it, and on the mini val split its detections score what `deploy eval` gives the build's
    model_imx_dense.onnx (the same quantized network, Ultralytics' validation NMS; within 0.002 mAP50)."""
    import importlib.util

    from npuyolo.compilers.envs import clean_env
    from npuyolo.deploy.compile import compile_model
    from npuyolo.registry.db import Registry

    weights = REPO / "bench" / "seed_experiment" / "320" / "L4-relu" / "best.pt"
    result = compile_model(Registry(tmp_path / "r.db"), str(weights), "imx500", "imx500", MINI / "data.yaml", imgsz=320)
    assert result.build.ok and result.build.scored, result.build.error
    build = Path(result.build.scored).parent
    b = build_bundle(build, tmp_path / "out")
    m = json.loads((b.folder / "manifest.json").read_text())
    dev = m["device"]
    assert dev["op"].endswith("MultiClassNMSWithIndices") and dev["iou_threshold"] == 0.7 and dev["max_detections"] == 300
    assert m["conf"] >= dev["score_threshold"] and m["imgsz"] == 320 and [o["role"] for o in m["outputs"]] == list(
        ("boxes", "scores", "classes", "count"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((MINI / "images").glob("*/*.jpg")):
        shutil.copyfile(p, photos / p.name)
    done = subprocess.run([installed("imx500").python, str(b.folder / "npuyolo_infer.py"), str(photos), "--out",
                           str(tmp_path / "r.json")], capture_output=True, text=True, timeout=900, env=clean_env())
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["images"] == 8 and doc["detections"] > 0
    spec = importlib.util.spec_from_file_location("bench_bundle_imx500", REPO / "bench" / "bundle_imx500.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    scores = bench.imx500_scores(build, MINI / "data.yaml")
    assert scores["bundle"]["images"] == scores["deploy_eval"]["images"] == 4 and scores["deploy_eval"]["map50"] > 0.3
    assert scores["cli_vs_bundle_max_px"] < 1e-3 and abs(scores["diff_map50"]) <= 0.002, scores
