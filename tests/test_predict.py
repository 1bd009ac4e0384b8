import copy
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.infer.predict import Box, PredictError, list_sources, load_predictor, predict_source, run_predict
from npuyolo.deploy.int8.quantize import quantize_onnx
from npuyolo.errors import NpuyoloError
from npuyolo.npu.rewrite import rewrite_file
from npuyolo.registry.db import Registry
from npuyolo.variants.build import build_model
from npuyolo.variants.checkpoint import load_weights

from .conftest import perturbed

runner = CliRunner()
NAMES = ["speed_limit", "warning", "stop", "mandatory", "yield", "no_entry"]
IMGSZ = 64
COORD_TOL, CONF_TOL = 0.5, 1e-3  # px in the original image; confidence


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """An L4-leaky model with varied, confident boxes, as a half-precision .pt and FP32 ONNX files of both heads."""
    root = tmp_path_factory.mktemp("predict-models")
    torch.manual_seed(0)  # the initial weights too, whatever ran before
    model = perturbed(build_model("L4-leaky", nc=6, names=NAMES), scale=0.1, seed=0, class_bias=-3.0)
    pt = root / "leaky.pt"
    torch.save({"model": None, "ema": copy.deepcopy(model).half(), "epoch": -1, "train_args": {}}, pt)
    loaded = load_weights(pt)  # the .pt as npuyolo reads it (half weights back in float32): what is exported
    assert loaded.names == dict(enumerate(NAMES))
    onnx = {head: export_onnx(loaded, root / f"leaky-{head}.onnx", imgsz=IMGSZ, head=head) for head in ("npu", "ultralytics")}
    return {"pt": pt, **onnx}


@pytest.fixture(scope="module")
def images(synth_data, tmp_path_factory) -> Path:
    """Three val images: two square (96 px), one cut to 96 x 72 so the letterbox pads it."""
    src = sorted((synth_data.parent / "images" / "val").glob("*.jpg"))[:3]
    folder = tmp_path_factory.mktemp("predict-images")
    for i, p in enumerate(src):
        im = cv2.imread(str(p))
        if i == 2:
            im = im[12:84]
        cv2.imwrite(str(folder / f"img{i}.png"), im)  # lossless: every model sees the same pixels
    return folder


def boxes_of(dets) -> list[Box]:
    return [b for d in dets for b in d.boxes]


def assert_same_boxes(reference, other) -> float:
    """Same number of boxes per image; each matched one-to-one within the tolerances. Returns the largest px gap."""
    worst = 0.0
    assert [d.source for d in reference] == [d.source for d in other]
    for a, b in zip(reference, other):
        assert (a.width, a.height) == (b.width, b.height)
        assert len(a.boxes) == len(b.boxes), a.source
        left = list(b.boxes)
        for x in a.boxes:
            same_class = [y for y in left if y.cls == x.cls]
            assert same_class, f"{a.source}: no {x.name} box in the other model's output"
            y = min(same_class, key=lambda y: max(abs(x.x1 - y.x1), abs(x.y1 - y.y1), abs(x.x2 - y.x2), abs(x.y2 - y.y2)))
            left.remove(y)
            gap = max(abs(x.x1 - y.x1), abs(x.y1 - y.y1), abs(x.x2 - y.x2), abs(x.y2 - y.y2))
            assert gap <= COORD_TOL, (a.source, x, y)
            assert abs(x.conf - y.conf) <= CONF_TOL, (a.source, x, y)
            assert x.name == y.name
            worst = max(worst, gap)
    return worst


@pytest.mark.parametrize("head", ["npu", "ultralytics"])
def test_onnx_boxes_match_pt(artefacts, images, head, capsys):
    pt = load_predictor(None, str(artefacts["pt"]), imgsz=IMGSZ)
    onnx = load_predictor(None, str(artefacts[head]))
    assert pt.kind == "pt" and onnx.kind == "onnx" and onnx.head == head and onnx.imgsz == IMGSZ
    assert onnx.names == pt.names == dict(enumerate(NAMES))
    ref, dep = predict_source(pt, images), predict_source(onnx, images)
    assert len(ref) == 3 and [(d.width, d.height) for d in ref] == [(96, 96), (96, 96), (96, 72)]
    found = boxes_of(ref)
    assert len(found) >= 20 and len({b.cls for b in found}) >= 3  # a meaningful comparison, not empty outputs
    assert min(b.conf for b in found) >= 0.25 and len({round(b.conf, 2) for b in found}) > 5
    for d in ref:  # boxes are in the original image's pixels
        assert all(0 <= b.x1 <= b.x2 <= d.width and 0 <= b.y1 <= b.y2 <= d.height for b in d.boxes)
    worst = assert_same_boxes(ref, dep)
    with capsys.disabled():
        print(f"\n[{head}] .pt vs FP32 ONNX: {len(found)} boxes, max coordinate gap {worst:.5f} px")


def test_letterbox_padding_is_undone(artefacts, images):
    """A padded image predicts the same boxes as the same pixels pasted into a square canvas, shifted back."""
    pt = load_predictor(None, str(artefacts["pt"]), imgsz=IMGSZ)
    wide = cv2.imread(str(images / "img2.png"))  # 96 x 72: letterboxed with 12 px (at 96 px scale) of grey above and below
    square = np.full((96, 96, 3), 114, np.uint8)
    square[12:84] = wide
    cv2.imwrite(str(images.parent / "square-img2.png"), square)
    a = predict_source(pt, images / "img2.png")[0]
    b = predict_source(pt, images.parent / "square-img2.png")[0]
    assert len(a.boxes) == len(b.boxes) > 0
    shifted = [Box(x.x1, min(max(x.y1 - 12, 0), 72), x.x2, min(max(x.y2 - 12, 0), 72), x.conf, x.cls, x.name) for x in b.boxes]
    for x, y in zip(sorted(a.boxes, key=lambda z: (z.cls, z.x1, z.y1)), sorted(shifted, key=lambda z: (z.cls, z.x1, z.y1))):
        assert max(abs(x.x1 - y.x1), abs(x.y1 - y.y1), abs(x.x2 - y.x2), abs(x.y2 - y.y2)) <= 1e-3


def test_int8_qdq_predicts_and_writes(artefacts, images, synth_data, tmp_path):
    int8 = tmp_path / "leaky-npu-int8.onnx"
    quantize_onnx(artefacts["npu"], int8, synth_data, calib=4)
    r = run_predict(None, str(int8), images, out=tmp_path / "out")
    assert r.kind == "onnx/npu" and r.imgsz == IMGSZ and len(r.detections) == 3
    assert sorted(p.name for p in r.annotated) == ["img0.png", "img1.png", "img2.png"]
    for p in r.annotated:
        assert cv2.imread(str(p)).shape[:2] == cv2.imread(str(images / p.name)).shape[:2]
    doc = json.loads(r.json_path.read_text())
    assert doc["images"] == 3 and doc["detections"] == sum(len(d["boxes"]) for d in doc["predictions"])
    rows = list(csv.DictReader(r.csv_path.open()))
    assert len(rows) == doc["detections"]


def test_leaky_rewrite_gives_fp32_boxes(artefacts, images, tmp_path):
    rewritten, count = rewrite_file(artefacts["npu"], tmp_path / "leaky-npu.relu-decomp.onnx", "relu-decomp")
    assert count > 0
    ref = predict_source(load_predictor(None, str(artefacts["npu"])), images)
    assert len(boxes_of(ref)) >= 20
    assert_same_boxes(ref, predict_source(load_predictor(None, str(rewritten)), images))


def write_video(path: Path, frames: list[np.ndarray], fps: float = 5.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def check_outputs(r, expect_entries: int) -> dict:
    doc = json.loads(r.json_path.read_text())
    assert doc["images"] == len(doc["predictions"]) == len(r.detections) == expect_entries
    total = sum(len(d.boxes) for d in r.detections)
    assert doc["detections"] == total == sum(doc["per_class"].values())
    rows = list(csv.DictReader(r.csv_path.open()))
    assert len(rows) == total
    hidden = {p.name for p in r.out.iterdir() if p.name.startswith(".")}
    assert hidden == {".npuyolo-predict"}  # no temporary files left behind; only the marker that npuyolo wrote here
    return doc


def test_folder_glob_and_video_sources(artefacts, images, synth_data, tmp_path):
    model = str(artefacts["ultralytics"])
    frames = [cv2.imread(str(p)) for p in sorted((synth_data.parent / "images" / "train").glob("*.jpg"))[:5]]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in images.iterdir():
        (mixed / p.name).write_bytes(p.read_bytes())
    write_video(mixed / "clip.mp4", frames)
    (mixed / "notes.txt").write_text("not an image")

    folder = run_predict(None, model, mixed, out=tmp_path / "folder")  # 3 images + a 5-frame video; the .txt is ignored
    doc = check_outputs(folder, 3 + 5)
    assert sorted(p.name for p in folder.annotated) == ["clip.mp4", "img0.png", "img1.png", "img2.png"]
    assert [d["frame"] for d in doc["predictions"] if d["source"].endswith("clip.mp4")] == [0, 1, 2, 3, 4]
    assert all(d["frame"] is None for d in doc["predictions"] if not d["source"].endswith("clip.mp4"))
    annotated = read_frames(folder.out / "clip.mp4")
    assert len(annotated) == 5 and annotated[0].shape == frames[0].shape
    video_rows = [r for r in csv.DictReader(folder.csv_path.open()) if r["source"].endswith("clip.mp4")]
    assert len(video_rows) == sum(len(d.boxes) for d in folder.detections if d.frame is not None) > 0
    assert {r["frame"] for r in video_rows} <= {"0", "1", "2", "3", "4"}

    pattern = str(mixed / "img[01].png")
    globbed = run_predict(None, model, pattern, out=tmp_path / "glob")
    check_outputs(globbed, 2)
    assert sorted(p.name for p in globbed.annotated) == ["img0.png", "img1.png"]
    # the same images predicted through the folder give the same boxes through the glob
    by_source = {Path(d.source).name: d for d in folder.detections if d.frame is None}
    assert_same_boxes([by_source["img0.png"], by_source["img1.png"]], globbed.detections)

    video = run_predict(None, model, mixed / "clip.mp4", out=tmp_path / "video")
    check_outputs(video, 5)
    assert [p.name for p in video.annotated] == ["clip.mp4"] and len(read_frames(video.annotated[0])) == 5
    assert [len(d.boxes) for d in video.detections] == [len(d.boxes) for d in folder.detections if d.frame is not None]


def test_run_model_defaults(artefacts, images, tmp_path):
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    run_id = reg.create_run(name="signs", variant="L4-leaky", recipe={"imgsz": IMGSZ}, data_path="x", data_hash="0",
                            class_names=NAMES, weights_source=None, device="cpu", versions={})
    reg.add_artifact(run_id, "weights/best", artefacts["pt"].resolve())
    reg.set_status(run_id, "finished")
    for ref in (str(run_id), f"#{run_id}", "signs"):
        p = load_predictor(reg, ref)
        assert (p.run_id, p.imgsz, p.kind, p.label) == (run_id, IMGSZ, "pt", "signs")
    r = run_predict(reg.path, "signs", images)
    assert r.out == reg.run_dir(reg.get_run(run_id), "predict") and r.json_path.is_file() and len(r.annotated) == 3
    onnx = run_predict(None, str(artefacts["npu"]), images / "img0.png", out=tmp_path / "o")
    reference = [d for d in r.detections if Path(d.source).name == "img0.png"]
    assert_same_boxes(reference, onnx.detections)


def test_cli_json_and_summary(artefacts, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NPUYOLO_REGISTRY", str(tmp_path / "registry" / "npuyolo.db"))
    result = runner.invoke(app, ["predict", str(artefacts["npu"]), str(images), "--json", "--conf", "0.3", "--max-det", "5"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert doc["kind"] == "onnx/npu" and doc["conf"] == 0.3 and doc["images"] == 3
    assert Path(doc["out"]) == Path("predict") / "leaky-npu"  # default: ./predict/<model label>
    assert all(len(d["boxes"]) <= 5 and all(b["conf"] >= 0.3 for b in d["boxes"]) for d in doc["predictions"])
    assert doc["detections"] == sum(len(d["boxes"]) for d in doc["predictions"]) > 0
    assert Path(doc["files"]["json"]).is_file() and Path(doc["files"]["csv"]).is_file() and len(doc["files"]["annotated"]) == 3
    assert json.loads(Path(doc["files"]["json"]).read_text())["predictions"] == doc["predictions"]

    plain = runner.invoke(app, ["predict", str(artefacts["pt"]), str(images / "img0.png"), "--imgsz", str(IMGSZ), "--out", "pt-out"])
    assert plain.exit_code == 0, plain.output
    assert "1 image(s)" in plain.stdout and "detections per class" in plain.stdout and "pt-out" in plain.stdout


def test_bad_inputs_are_one_line_errors(artefacts, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / "broken.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "taken.pt").write_bytes(b"\x00garbage checkpoint")
    onnx, pt, img = str(artefacts["npu"]), str(artefacts["pt"]), str(images / "img0.png")
    cases = [
        ([onnx, str(tmp_path / "missing.jpg")], "source not found"),
        ([onnx, str(tmp_path / "*.png")], "no images or videos matched"),
        ([onnx, str(empty)], "no images or videos in folder"),
        ([onnx, str(garbage)], "unreadable image"),
        ([onnx, str(a_file)], "not an image or video"),
        (["no-such-run", img], "unknown model"),
        (["L4-leaky", img], "variant name"),
        ([str(tmp_path / "missing.onnx"), img], "model not found"),
        ([str(tmp_path / "missing.pt"), img], "model not found"),
        ([str(tmp_path / "taken.pt"), img], "not a loadable"),
        ([onnx, img, "--conf", "0"], "--conf must be in (0, 1]"),
        ([onnx, img, "--conf", "1.5"], "--conf must be in (0, 1]"),
        ([onnx, img, "--iou", "0"], "--iou must be in (0, 1]"),
        ([pt, img, "--imgsz", "100"], "positive multiple of 32"),
        ([pt, img, "--imgsz", "0"], "positive multiple of 32"),
        ([onnx, img, "--imgsz", "128"], "fixed 64 px input"),
        ([onnx, img, "--out", str(a_file)], "is an existing file"),
        ([onnx, img, "--max-det", "0"], "--max-det must be at least 1"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["predict", *args])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, result.output)
        assert result.stdout == ""
    assert not list(tmp_path.rglob("predictions.*"))  # no results written for refused input


def test_errors_are_npuyolo_errors(artefacts, images):
    assert issubclass(PredictError, NpuyoloError) and issubclass(PredictError, ValueError)
    with pytest.raises(PredictError, match="no images or videos matched"):
        list_sources(str(images / "*.gif"))
    with pytest.raises(PredictError, match="fixed 64 px"):
        load_predictor(None, str(artefacts["ultralytics"]), imgsz=96)
    assert load_predictor(None, str(artefacts["ultralytics"]), imgsz=IMGSZ).imgsz == IMGSZ


# ------------------------------------------------------------------------------------------------ hostile and careless input (the former test_hostile2.py)
import hashlib
import shutil
import struct
import zlib

import onnx

from npuyolo import Workspace

from .helpers import Payload, cli, one_line_error, save_pt


@pytest.fixture
def own_images(tmp_path, synth_data) -> Path:
    """Two of the synthetic set's images in a folder of the user's own (the module's `images` is shared read-only)."""
    folder = tmp_path / "own"
    folder.mkdir()
    for p in sorted((synth_data.parent / "images" / "val").iterdir())[:2]:
        shutil.copy(p, folder / p.name)
    return folder


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_predict_never_writes_over_the_users_files(tmp_path, own_images):
    pt = save_pt(tmp_path / "m.pt")
    (own_images / "predictions.json").write_text("mine")
    before = file_digests(own_images)
    assert "where the source images are" in one_line_error(cli("predict", pt, own_images, "--out", own_images))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "predictions.csv").write_text("mine")
    assert "did not write" in one_line_error(cli("predict", pt, own_images, "--out", other))
    assert file_digests(own_images) == before and (other / "predictions.csv").read_text() == "mine"
    fresh = tmp_path / "out"
    for _ in range(2):  # a folder predict wrote may be written again
        r = cli("predict", pt, own_images, "--out", fresh, "--json")
        assert r.exit_code == 0, r.output


def test_workspace_predict_and_a_pt_predicts_at_its_training_size(tmp_path, own_images):
    result = Workspace(tmp_path / "r.db").predict(str(save_pt(tmp_path / "m.pt", imgsz=96)), own_images, out=tmp_path / "o")
    assert result.imgsz == 96 and len(result.detections) == 2 and result.json_path.is_file()


@pytest.mark.parametrize("key,value", [("names", "not json"), ("imgsz", "[]")])
def test_damaged_onnx_metadata_is_one_error(tmp_path, own_images, key, value):
    from npuyolo.deploy.export import export_onnx, set_metadata
    from npuyolo.variants.build import build_model

    path = export_onnx(build_model("L4-relu", nc=6), tmp_path / "m.onnx", imgsz=64)
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props} | {key: value}
    set_metadata(proto, meta)
    onnx.save(proto, str(path))
    assert "damaged npuyolo metadata" in one_line_error(cli("predict", path, own_images, "--out", tmp_path / "o"))


def test_predict_never_runs_a_checkpoints_code(tmp_path, own_images):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "model": Payload(marker), "ema": None}, evil)
    assert "refused to load" in one_line_error(cli("predict", evil, own_images, "--out", tmp_path / "o"))
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_extreme_images(tmp_path):
    pt = save_pt(tmp_path / "m.pt")
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((2, 3000, 3), np.uint8))
    assert cli("predict", pt, wide, "--out", tmp_path / "o1").exit_code == 0
    huge = tmp_path / "huge.png"  # a valid PNG header that declares 100000 x 100000 pixels
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))
    assert "unreadable image" in one_line_error(cli("predict", pt, huge, "--out", tmp_path / "o2"))
