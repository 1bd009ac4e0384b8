import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from npuyolo.data.calibration import CalibrationError
from npuyolo.cli import app
from npuyolo.deploy.evaluate import DeployError, evaluate_onnx, onnx_predictor, torch_predictor, validate
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.latency import bench_onnx
from npuyolo.deploy.quantize import calibration_images, quantize_onnx
from npuyolo.registry.db import Registry
from npuyolo.train.trainer import train_variant
from npuyolo.variants.build import build_model

from .conftest import perturbed

runner = CliRunner()


def randomised(variant: str, nc: int = 6):
    """Untrained weights predict nothing; perturbed weights with neutral class priors give real detections."""
    model = build_model(variant, nc=nc, names=["speed_limit", "warning", "stop", "mandatory", "yield", "no_entry"][:nc])
    return perturbed(model, scale=0.03, class_bias=-1.0)


@pytest.mark.parametrize("head", ["npu", "ultralytics"])
def test_fp32_onnx_eval_equals_pytorch_val(synth_data, tmp_path, head):
    model = randomised("L4-leaky")
    path = export_onnx(model, tmp_path / "m.onnx", imgsz=96, head=head)
    onnx_predict, _ = onnx_predictor(path)
    x = torch.rand(2, 3, 96, 96)
    torch_out, onnx_out = torch_predictor(model)(x), onnx_predict(x)
    assert torch_out.shape == onnx_out.shape
    torch.testing.assert_close(onnx_out, torch_out, rtol=1e-3, atol=1e-2)  # fused-BN export vs unfused module
    deployed = evaluate_onnx(path, synth_data)
    reference = validate(torch_predictor(model), synth_data, 96, model.names)
    assert deployed["images"] == reference["images"] == 8
    for m in ("map50", "map50_95", "precision", "recall"):
        assert abs(deployed[m] - reference[m]) <= 0.002, m
    assert deployed["per_class"] and set(deployed["per_class"]) <= set(model.names.values())


def test_calibration_reads_train_images_only(synth_data, tmp_path, monkeypatch):
    import cv2

    picked = calibration_images(synth_data, 10)
    assert len(picked) == 10 and all("/images/train/" in str(p) for p in picked)
    assert picked == calibration_images(synth_data, 10)  # deterministic
    opened: list[str] = []
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda p, *a: (opened.append(str(p)), real_imread(p, *a))[1])
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "int8.onnx", synth_data, calib=12, method="minmax")
    assert opened and all("/images/train/" in p for p in opened) and not any("/images/val/" in p for p in opened)
    assert len(info["calibration_images"]) == 12
    onnx.checker.check_model(onnx.load(str(tmp_path / "int8.onnx")))  # valid, no duplicate metadata
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_quantize_eval_and_drop_recorded(synth_data, tiny_recipe, tmp_path):
    db = tmp_path / "r.db"
    train_variant("L4-relu", synth_data, tiny_recipe, Registry(db), verbose=False)
    result = runner.invoke(app, ["deploy", "quantize", "1", "--data", str(synth_data), "--calib", "8", "--per-channel",
                                 "--auto-float", "2", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    run = Registry(db).get_run(1)
    arts = {a.kind: a for a in run.artifacts}
    assert arts["onnx/int8"].meta["calibration_count"] == 8 and len(arts["onnx/int8"].meta["auto_float"]) == 2
    kept = arts["onnx/int8"].meta["keep_float"]
    int8 = onnx.load(arts["onnx/int8"].path)
    float_convs = {n.name for n in int8.graph.node if n.op_type == "Conv"} & set(kept)
    assert len(float_convs) == 2  # the chosen sensitive convs stayed float
    evaluated = runner.invoke(app, ["deploy", "eval", arts["onnx/int8"].path, "--data", str(synth_data), "--json", "--registry", str(db)])
    assert evaluated.exit_code == 0, evaluated.output
    r = json.loads(evaluated.stdout)
    assert r["kind"] == "int8" and "drop_pp" in r and "fp32" in r and set(r["drop_pp_per_class"]) == set(r["per_class"])
    kinds = [e.precision_kind for e in Registry(db).deploy_evals(1)]
    assert sorted(kinds) == ["fp32", "int8", "pt"]  # pt: best.pt through the same square pipeline as the ONNX files
    assert abs(r["pt"]["map50"] - r["fp32"]["map50"]) <= 0.005
    # the drop carries its paired interval over the same val images, agreeing with the point drop
    for metric in ("map50", "map50_95"):
        d = r["drop_interval"][metric]
        assert abs(d["pp"]["value"] - r["drop_pp"][metric]) < 1e-9 and d["pp"]["low"] <= d["pp"]["value"] <= d["pp"]["high"]
        assert d["verdict"] in ("ahead", "tied", "behind") and "95%" in d["text"]
    table = runner.invoke(app, ["deploy", "eval", arts["onnx/int8"].path, "--data", str(synth_data), "--registry", str(db)])
    assert table.exit_code == 0 and "paired 95% interval" in table.stdout, table.output
    # on another data set the FP32 baseline is scored there too (it was taken from the first data set's eval)
    import shutil

    other = tmp_path / "fewer"
    shutil.copytree(synth_data.parent, other)
    (other / "data.yaml").write_text((other / "data.yaml").read_text().replace(str(synth_data.parent.resolve()), str(other.resolve())))
    for img in sorted((other / "images" / "val").iterdir())[5:]:
        img.unlink()
    again = json.loads(runner.invoke(app, ["deploy", "eval", arts["onnx/int8"].path, "--data", str(other / "data.yaml"),
                                           "--json", "--registry", str(db)]).stdout)
    assert again["images"] == again["fp32"]["images"] == again["pt"]["images"] == 5
    assert abs(again["drop_interval"]["map50"]["pp"]["value"] - again["drop_pp"]["map50"]) < 1e-9


def test_keep_float_by_name(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    first_conv = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=4, keep_float=[first_conv])
    assert info["keep_float"] == [first_conv]
    with pytest.raises(DeployError, match="no node named 'nope'"):
        quantize_onnx(fp32, tmp_path / "q2.onnx", synth_data, calib=4, keep_float=["nope"])


def test_bad_deploy_input(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    with pytest.raises(CalibrationError, match="at least 1"):  # the data stage's error (a NpuyoloError) since it moved there
        quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=0)
    with pytest.raises(DeployError, match="data yaml not found"):
        evaluate_onnx(fp32, tmp_path / "missing.yaml")
    empty = tmp_path / "empty"
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "data.yaml").write_text("train: images/train\nval: images/val\nnames: {0: a}\n")
    with pytest.raises(CalibrationError, match="no training images"):
        calibration_images(empty / "data.yaml", 5)
    foreign = tmp_path / "foreign.onnx"  # an ONNX model without the outputs/metadata npuyolo expects
    proto = onnx.load(str(fp32))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(DeployError, match="no npuyolo metadata"):
        evaluate_onnx(foreign, synth_data)
    result = runner.invoke(app, ["deploy", "eval", str(foreign), "--data", str(synth_data)])
    assert result.exit_code == 2 and "no npuyolo metadata" in result.output
    wrong = onnx.load(str(fp32))
    del wrong.graph.output[1:]
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    with pytest.raises(DeployError, match="box/score output pairs"):
        evaluate_onnx(tmp_path / "wrong.onnx", synth_data)


def test_latency_bench_reports_percentiles(tmp_path):
    path = export_onnx(randomised("L4-relu"), tmp_path / "m.onnx", imgsz=64, head="npu")
    r = bench_onnx(path, runs=5, warmup=1, threads=1)
    for part in ("model", "pipeline"):
        s = r[part]
        assert s["runs"] == 5 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["throughput_fps"] > 0
    assert r["pipeline"]["p50_ms"] >= r["model"]["p50_ms"] * 0.5 and r["macs"] > 1e6
    out = runner.invoke(app, ["deploy", "bench", str(path), "--runs", "3", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["model"]["runs"] == 3


def test_cross_layer_equalization_is_exact_in_fp32_and_recorded(synth_data, tmp_path):
    import onnxruntime as ort

    from npuyolo.deploy.equalize import equalize
    from npuyolo.deploy.quantize import quantize_onnx

    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    model = onnx.load(str(fp32))
    pairs = equalize(model)
    assert pairs == 30  # Conv -> LeakyReLU -> Conv chains with single consumers
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    before = ort.InferenceSession(str(fp32)).run(None, {"images": x})
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"images": x})
    assert all(np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max()) for a, b in zip(before, after))
    silu = onnx.load(str(export_onnx(randomised("L0-silu"), tmp_path / "silu.onnx", imgsz=64)))
    assert equalize(silu) == 0  # SiLU is not positively homogeneous: nothing may be rescaled
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=4, cle=True)
    assert info["cle_pairs"] == 30
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert json.loads(meta["npuyolo_quant"])["cle_pairs"] == 30


def test_int8_of_the_ultralytics_head_keeps_its_decode_float(synth_data, tmp_path):
    """Stock YOLO11n (L0) exports Ultralytics' head: one output joining pixel boxes and 0..1 scores. Quantized whole,
    one INT8 scale (about imgsz/255) rounded every score to 0 and L0-silu scored mAP50 0.0 at 320 px; the decode is
    the host's part on an NPU and stays float."""
    import onnxruntime as ort

    fp32 = export_onnx(randomised("L0-silu", nc=4), tmp_path / "fp32.onnx", imgsz=64, head="ultralytics")
    info = quantize_onnx(fp32, tmp_path / "int8.onnx", synth_data, calib=4)
    assert "/model.23/dfl/conv/Conv" in info["float_tail"] and info["keep_float"] == []
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    ref, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
                for p in (fp32, tmp_path / "int8.onnx"))
    scores_ref, scores_got = ref[:, 4:], got[:, 4:]
    assert scores_ref.max() > 0.05  # randomised weights predict real scores
    assert np.abs(scores_got - scores_ref).max() < 0.05  # per-tensor rounding at the boxes' scale errs ~0.125
    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    made_by = {o: n for n in int8.graph.node for o in n.output}
    assert made_by[int8.graph.output[0].name].op_type == "Concat"  # the output is computed in float, not dequantized


def test_an_input_size_past_4096_is_one_line_in_every_command(synth_data, tmp_path):
    """Issue 36, severe 1: `--imgsz 100000` (and 16384, many GB) was a traceback after trying to allocate it everywhere
    but `npu compile`; the one size check every command and the API use refuses it before anything is built."""
    from npuyolo import NpuyoloError, Workspace
    from npuyolo.deploy.export import MAX_IMGSZ, check_imgsz

    assert check_imgsz(MAX_IMGSZ) == 4096
    for size in (16384, 100000):
        with pytest.raises(NpuyoloError, match=f"imgsz must be at most 4096 px, got {size}"):
            check_imgsz(size)
    ws = Workspace(tmp_path / "r.db")
    with pytest.raises(NpuyoloError, match="at most 4096"):
        ws.check("L4-relu", ["relu-only"], imgsz=16384)
    with pytest.raises(NpuyoloError, match="at most 4096"):
        ws.export("L4-relu", tmp_path / "x.onnx", imgsz=16384)
    image = next((synth_data.parent / "images" / "val").iterdir())
    db = tmp_path / "r.db"
    train_runless = ["--registry", str(db)]
    for argv in (["deploy", "plan", "L4-relu", "-t", "relu-only", "--data", str(synth_data), "--imgsz", "100000"],
                 ["export", "L4-relu", "--imgsz", "100000", "--out", str(tmp_path / "m.onnx")],
                 ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", "16384"],
                 ["deploy", "quantize", "1", "--data", str(synth_data), "--imgsz", "100000"],
                 ["predict", "L4-relu", str(image), "--imgsz", "100000", "--out", str(tmp_path / "p")]):
        result = runner.invoke(app, [*argv, *train_runless])
        assert result.exit_code == 2, (argv, result.output, result.exception)
        assert result.output.count("error:") == 1 and "--imgsz must be at most 4096 px" in result.output, result.output
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p").exists()


def test_quantize_removes_the_work_folders_of_killed_quantizes(synth_data, tmp_path):
    """Issue 36: `kill -9` during quantization left a hidden `.<stem>-int8.quantize-XXXXXXXX/` folder (11-21 MB at 64 px)
    that no later run removed. The next quantize into that folder removes those whose process is gone, and only them."""
    import os
    import subprocess
    import sys
    import time

    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folders = {"dead": tmp_path / f".m-int8.quantize-{dead}-abcd1234", "alive": tmp_path / f".m-int8.quantize-{alive.pid}-efgh5678",
                   "old, before pids": tmp_path / ".m-int8.quantize-k2j3h4g5", "new, before pids": tmp_path / ".x-int8.quantize-zzzz1111",
                   "not ours": tmp_path / ".m-int8.quantized-notes"}
        for folder in folders.values():
            folder.mkdir()
            (folder / "prepared.onnx").write_bytes(b"x" * 1000)
        day_ago = time.time() - 2 * 86400
        os.utime(folders["old, before pids"], (day_ago, day_ago))
        quantize_onnx(fp32, tmp_path / "q-int8.onnx", synth_data, calib=4, method="minmax")
        left = {k for k, folder in folders.items() if folder.exists()}
        assert left == {"alive", "new, before pids", "not ours"}, left
        assert [p.name for p in tmp_path.iterdir() if ".quantize-" in p.name and p not in folders.values()] == []
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("command", [
    ["npu", "check", "base", "-t", "relu-only", "--imgsz", "64"],
    ["deploy", "quantize", "base", "--data", "{data}", "--calib", "2"],
    ["deploy", "plan", "base", "-t", "relu-only", "--data", "{data}", "--calib", "2", "--no-sweep"],
    ["predict", "1", "{images}"],
])
def test_a_full_disk_names_the_real_place(tmp_path, synth_data, monkeypatch, command):
    """Issue 36: on a full disk `deploy plan`, `deploy quantize` and `npu check`, which have no --out, said
    "--out ...: cannot write"; `predict 1` said "unknown model '1': not a file and not a run". The folders exist (a
    disk fills up after them) and the data check is cached, so the first write to fail is the model's own file."""
    import errno
    import functools
    import sqlite3

    from npuyolo.data.check import check_dataset

    from .test_hostile import cli, one_line_error
    from .test_hostile3_env import finished_run, refuse_writes

    db = tmp_path / "reg" / "r.db"
    reg, rid = finished_run(db, data=synth_data)
    for stage in ("npu", "deploy", "plan", "predict"):
        reg.run_dir(reg.get_run(rid), stage)
    check_dataset(synth_data, cache_dir=db.parent / "cache")
    reg.close()
    if command[0] == "predict":  # SQLite cannot make its -shm on a full disk: "disk I/O error"
        class FullDisk(sqlite3.Connection):
            def execute(self, *a, **k):
                raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=FullDisk))
    refuse_writes(monkeypatch, tmp_path, errno.ENOSPC)
    images = synth_data.parent / "images" / "val"
    out = one_line_error(cli(*(a.format(data=synth_data, images=images) for a in command), registry=db))
    assert "disk full" in out and str(tmp_path) in out, out
    assert "--out" not in out and "unknown model" not in out, out


def test_eval_plan_and_predict_leave_the_working_folder_unchanged(synth_data, tmp_path, monkeypatch):
    """Issue 36: every validation made an empty ./runs/detect/val-N in the working folder (one eval and one
    single-target plan left 18); Ultralytics' validator now works in a temporary folder of its own."""
    import copy

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    model = perturbed(build_model("L4-relu", nc=6), scale=0.05, seed=0, class_bias=-3.0)
    pt = tmp_path / "m.pt"
    torch.save({"model": None, "ema": copy.deepcopy(model).half(), "epoch": -1, "train_args": {"imgsz": 64}}, pt)
    onnx_file = export_onnx(model, tmp_path / "m.onnx", imgsz=64, head="npu")
    import os
    import subprocess
    import sys

    from ultralytics.utils import SETTINGS

    runs_dir = Path(SETTINGS["runs_dir"])  # where Ultralytics puts a validator's folder unless told (cwd-relative for some)
    listed = lambda: sorted(str(p) for p in runs_dir.rglob("*")) if runs_dir.is_dir() else []  # noqa: E731
    before = listed()
    db = tmp_path / "reg" / "npuyolo.db"
    # as a user runs it: a process of its own, not under pytest (Ultralytics sends a validator's folder elsewhere then)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    for args in (["deploy", "eval", str(onnx_file), "--data", str(synth_data)],
                 ["deploy", "plan", str(pt), "-t", "relu-only", "--data", str(synth_data), "--calib", "4", "--no-sweep",
                  "--imgsz", "64"],
                 ["predict", str(pt), str(synth_data.parent / "images" / "val"), "--imgsz", "64", "--out", str(tmp_path / "pred")]):
        result = subprocess.run([sys.executable, "-m", "npuyolo.cli", *args, "--registry", str(db)], cwd=work, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in work.iterdir()) == [] and listed() == before
