import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from npuyolo.data.calibration import CalibrationError
from npuyolo.cli import app
from npuyolo.deploy.eval.evaluate import DeployError, evaluate_onnx, onnx_predictor, torch_predictor, validate
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.infer.latency import bench_onnx
from npuyolo.deploy.int8.quantize import calibration_images, quantize_onnx
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
    assert deployed.images == reference["images"] == 8 and deployed.head == head and deployed.artefact == str(path)
    for m in ("map50", "map50_95", "precision", "recall"):
        assert abs(getattr(deployed, m) - reference[m]) <= 0.002, m
    assert deployed.per_class and set(deployed.per_class) <= set(model.names.values())


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
    train_variant(Registry(db), "L4-relu", synth_data, tiny_recipe, verbose=False)
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
    # and the INT8 row records it, so a report prints the interval without scoring again (it printed the point alone)
    row = next(e for e in Registry(db).deploy_evals(1) if e.precision_kind == "int8")
    assert row.result["drop_interval"]["map50"]["pp"] == r["drop_interval"]["map50"]["pp"]
    from npuyolo.report.render import render_run

    text = render_run(Registry(db), 1, tmp_path / "report").read_text()
    pp = r["drop_interval"]["map50"]["pp"]
    assert f"{r['drop_pp']['map50']:.2f} points (95% {pp['low']:+.2f} to {pp['high']:+.2f}" in text
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

    from npuyolo.deploy.int8.equalize import equalize
    from npuyolo.deploy.int8.quantize import quantize_onnx

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

    from .helpers import cli, finished_run, one_line_error, refuse_writes

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


# ------------------------------------------------------------------------------------------------ hostile and careless input (the former test_hostile*.py)
import os
import shutil
import threading

from npuyolo import NpuyoloError, Workspace

from .helpers import cli, data_yaml_with, foreign_file_and_link, new_run, one_line_error, save_pt, sha

def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    import npuyolo.deploy.export as export
    from npuyolo.variants.build import build_model

    def boom(*a, **k):
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(export.onnx.checker, "check_model", boom)
    out = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError, match="killed"):
        export.export_onnx(build_model("L4-relu", nc=2, verbose=False), out, imgsz=64)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_exporting_a_variant_creates_no_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["export", "L4-relu", "--imgsz", "64", "--out", str(tmp_path / "x.onnx")],
                           env={"NPUYOLO_REGISTRY": ""})
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def registry_db(tmp_path) -> Path:
    db = tmp_path / "runs" / "npuyolo.db"
    reg = Registry(db)
    new_run(reg, name="precious")
    reg.close()
    return db


def test_export_never_overwrites_the_registry(tmp_path, registry_db):
    before = sha(registry_db)
    for extra in ([], ["--force"]):  # not even forced: nothing useful can come of it
        r = cli("export", "L4-relu", "--imgsz", "64", "--out", registry_db, *extra, registry=registry_db)
        assert "registry" in one_line_error(r)
    journal = registry_db.with_name("npuyolo.db-wal")
    assert "registry" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", journal, registry=registry_db))
    link = tmp_path / "hard.onnx"
    os.link(registry_db, link)  # another name for the same file
    assert "registry" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", link, "--force", registry=registry_db))
    assert sha(registry_db) == before and [r.name for r in Registry(registry_db, readonly=True).runs()] == ["precious"]
    with pytest.raises(NpuyoloError, match="registry"):
        Workspace(registry_db).export("L4-relu", registry_db, imgsz=64, force=True)
    assert sha(registry_db) == before


def test_export_refuses_a_foreign_file_and_a_symlink_unless_forced(tmp_path):
    mine, target, link = foreign_file_and_link(tmp_path, "notes.onnx", "my notes")
    assert "did not write" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", mine))
    assert "symbolic link" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", link))
    assert mine.read_text() == "my notes" and target.read_text() == "keep"
    r = cli("export", "L4-relu", "--imgsz", "64", "--out", link, "--force")
    assert r.exit_code == 0, r.output
    assert target.read_text() == "keep" and not link.is_symlink()  # the link is replaced, never written through
    r = cli("export", "L4-relu", "--imgsz", "64", "--out", link)  # now a file npuyolo wrote: replaced freely
    assert r.exit_code == 0, r.output


def test_upper_case_suffixes_are_the_same_files(tmp_path, synth_data):
    """`npu check X.ONNX` said 'expected a .pt checkpoint'; a .PT checkpoint was refused as well."""
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    onnx_path = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "M.ONNX", imgsz=64)
    r = cli("npu", "check", onnx_path, "-t", "relu-only", "--json", registry=tmp_path / "r.db")
    assert r.exit_code == 0, r.output
    pt = save_pt(tmp_path / "m.pt", imgsz=64).rename(tmp_path / "M.PT")
    r = cli("export", pt, "--out", tmp_path / "e.onnx", registry=tmp_path / "r.db")
    assert r.exit_code == 0, r.output


def test_workspace_export_from_threads(tmp_path):
    from npuyolo import Workspace
    from npuyolo.deploy.export import onnx_metadata

    pt = save_pt(tmp_path / "m.pt")
    ws = Workspace(tmp_path / "r.db")
    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "same.onnx", tmp_path / "same.onnx"]
    barrier, errors = threading.Barrier(len(outs)), []

    def export(out: Path) -> None:
        barrier.wait()
        try:
            ws.export(str(pt), out, imgsz=64)
        except Exception as e:  # collected: the test reports what a thread raised
            errors.append(repr(e))

    threads = [threading.Thread(target=export, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    for out in set(outs):
        assert onnx_metadata(out)["imgsz"] == "[64, 64]"
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_failed_quantize_leaves_no_untagged_int8(tmp_path, monkeypatch, synth_data):
    import npuyolo.deploy.int8.quantize as quantize
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    fp32 = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "m.onnx", imgsz=64)

    def boom(*a, **k):
        raise RuntimeError("killed mid-quantize")

    monkeypatch.setattr(quantize.onnx.checker, "check_model", boom)
    out = tmp_path / "m-int8.onnx"
    with pytest.raises(RuntimeError, match="killed"):
        quantize.quantize_onnx(fp32, out, synth_data, calib=2)
    assert not out.exists() and not list(tmp_path.glob("*partial*"))


def test_quantize_refuses_negative_auto_float(tmp_path, synth_data):
    from npuyolo.deploy.eval.evaluate import DeployError
    from npuyolo.deploy.int8.quantize import quantize_onnx

    with pytest.raises(DeployError, match="auto_float") as e:
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", synth_data, auto_float=-1)
    assert e.value.param == "auto_float" and "--" not in str(e.value)  # the API names its parameter; the CLI, its flag


def test_garbage_and_metadata_less_onnx_in_deploy(tmp_path, synth_data):
    import onnx

    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not onnx" * 50)
    bare = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "bare.onnx", imgsz=64)
    proto = onnx.load(str(bare))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    for f in (garbage, bare):
        one_line_error(cli("deploy", "eval", f, "--data", synth_data, registry=tmp_path / "r.db"))
        one_line_error(cli("deploy", "bench", f, "--runs", "1"))


def test_deploy_eval_runs_the_data_check(tmp_path, synth_data):
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    m = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "m.onnx", imgsz=64)
    broken = data_yaml_with(tmp_path, synth_data, names=["only", "two"], nc=...)
    assert "class id" in one_line_error(cli("deploy", "eval", m, "--data", broken, registry=tmp_path / "r.db"))


def _meta(model: onnx.ModelProto, **changes: str) -> None:
    props = {p.key: p.value for p in model.metadata_props} | changes
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def _external_outside(model: onnx.ModelProto) -> None:
    init = max(model.graph.initializer, key=lambda i: len(i.raw_data))
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../../../../etc/hostname")


def _cyclic(model: onnx.ModelProto) -> None:
    model.graph.node[1].input[0] = model.graph.node[5].output[0]


def _missing_input(model: onnx.ModelProto) -> None:
    model.graph.node[3].input[0] = "nowhere"


def _opset1(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 1


BROKEN = {
    "external-data-outside": (_external_outside, "ONNX Runtime cannot load it"),
    "cyclic": (_cyclic, "ONNX Runtime cannot load it"),
    "missing-input": (_missing_input, "ONNX Runtime cannot load it"),
    "opset1": (_opset1, "ONNX Runtime cannot load it"),
    "size-differs": (lambda m: _meta(m, imgsz="[96, 96]"), "metadata says 1x3x96x96"),
    "strides-text": (lambda m: _meta(m, strides='["a", "b", "c"]'), "damaged npuyolo metadata"),
    "strides-zero": (lambda m: _meta(m, strides="[0, 0, 0]"), "damaged npuyolo metadata"),
    "strides-float": (lambda m: _meta(m, strides="[8.5, 16, 32]"), "damaged npuyolo metadata"),
    "strides-two": (lambda m: _meta(m, strides="[8, 16]"), "outputs do not match its metadata"),
    "reg-max-8": (lambda m: _meta(m, reg_max="8"), "outputs do not match its metadata"),
}


@pytest.fixture(scope="module")
def good_onnx(tmp_path_factory) -> Path:
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    return export_onnx(build_model("L4-relu", nc=6), tmp_path_factory.mktemp("onnx") / "m.onnx", imgsz=64)


def broken_onnx(good: Path, folder: Path, kind: str) -> Path:
    model = onnx.load(str(good))
    BROKEN[kind][0](model)
    path = folder / kind / f"{kind}.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_onnx_is_one_error_in_eval_bench_and_predict(tmp_path, good_onnx, synth_data, kind):
    path = broken_onnx(good_onnx, tmp_path, kind)
    images = synth_data.parent / "images" / "val"
    for args in (("predict", path, images, "--out", tmp_path / "out"), ("deploy", "bench", path, "--runs", "1"),
                 ("deploy", "eval", path, "--data", synth_data)):
        output = one_line_error(cli(*args))
        assert BROKEN[kind][1] in output and "Traceback" not in output, (args[0], output)
    assert not (tmp_path / "out").exists()


def test_the_good_export_still_predicts_and_benches(tmp_path, good_onnx, synth_data):
    from npuyolo.deploy.infer.latency import bench_onnx

    assert bench_onnx(good_onnx, runs=1, warmup=0)["imgsz"] == 64
    r = cli("predict", good_onnx, synth_data.parent / "images" / "val", "--out", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output


def test_a_failed_quantize_leaves_no_working_files(tmp_path, monkeypatch, synth_data, good_onnx):
    import npuyolo.deploy.int8.quantize as quantize

    fp32 = Path(shutil.copy(good_onnx, tmp_path / "m.onnx"))

    def boom(*a, **k):
        raise RuntimeError("killed mid-quantize")

    monkeypatch.setattr(quantize.onnx.checker, "check_model", boom)
    with pytest.raises(RuntimeError, match="killed"):
        quantize.quantize_onnx(fp32, tmp_path / "m-int8.onnx", synth_data, calib=2, bias_correct=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# Two quantizes of one model, interleaved as they are with a full calibration set: the second has prepared its graph
# and waits; the first runs to the end (and, before the fix, deleted the shared '.prep.onnx'); then the second goes on.
QUANTIZE = """
import sys, time
from pathlib import Path
import npuyolo.deploy.int8.quantize as q

fp32, out, data, me, sync = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5])
real = q.quantize_static

def wait_for(name):
    deadline = time.time() + 120
    while not (sync / name).exists():
        assert time.time() < deadline, name
        time.sleep(0.05)

def interleaved(*a, **k):
    if me == "first":
        wait_for("second-prepared")
    elif not (sync / "second-prepared").exists():
        (sync / "second-prepared").touch()
        wait_for("first-done")
    return real(*a, **k)

q.quantize_static = interleaved
q.quantize_onnx(fp32, out, data, calib=4)
(sync / f"{me}-done").touch()
"""


def test_two_quantizes_of_one_model_at_once(tmp_path, synth_data, good_onnx):
    import subprocess
    import sys

    from npuyolo.deploy.export import onnx_metadata

    work, sync = tmp_path / "deploy", tmp_path / "sync"
    work.mkdir()
    sync.mkdir()
    fp32 = Path(shutil.copy(good_onnx, work / "m.onnx"))
    out = work / "m-int8.onnx"
    procs = [subprocess.Popen([sys.executable, "-c", QUANTIZE, str(fp32), str(out), str(synth_data), me, str(sync)],
                              stderr=subprocess.PIPE, text=True) for me in ("first", "second")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[1][-600:]
    assert "npuyolo_quant" in onnx_metadata(out)
    assert sorted(p.name for p in work.iterdir()) == ["m-int8.onnx", "m.onnx"]
