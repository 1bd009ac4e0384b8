"""Second hostile round (new features: predict, annealing, study, MLflow export, API, reports): each reproducer
failed before its fix."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from npuyolo import NpuyoloError, Workspace
from npuyolo.registry.db import Registry

from .test_hostile import RUN_ARGS, cli, new_run, one_line_error


def save_pt(path: Path, imgsz: int = 96) -> Path:
    from npuyolo.variants.build import build_model

    from .conftest import perturbed

    model = perturbed(build_model("L4-relu", nc=6, names=[f"c{i}" for i in range(6)]), scale=0.1, class_bias=-3.0)
    torch.save({"epoch": -1, "model": None, "ema": model, "train_args": {"imgsz": imgsz}}, path)
    return path


@pytest.fixture
def images(tmp_path, synth_data) -> Path:
    folder = tmp_path / "own"
    folder.mkdir()
    for p in sorted((synth_data.parent / "images" / "val").iterdir())[:2]:
        shutil.copy(p, folder / p.name)
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_predict_never_writes_over_the_users_files(tmp_path, images):
    pt = save_pt(tmp_path / "m.pt")
    (images / "predictions.json").write_text("mine")
    before = digest(images)
    assert "where the source images are" in one_line_error(cli("predict", pt, images, "--out", images))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "predictions.csv").write_text("mine")
    assert "did not write" in one_line_error(cli("predict", pt, images, "--out", other))
    assert digest(images) == before and (other / "predictions.csv").read_text() == "mine"
    fresh = tmp_path / "out"
    for _ in range(2):  # a folder predict wrote may be written again
        r = cli("predict", pt, images, "--out", fresh, "--json")
        assert r.exit_code == 0, r.output


def test_workspace_predict_and_a_pt_predicts_at_its_training_size(tmp_path, images):
    result = Workspace(tmp_path / "r.db").predict(str(save_pt(tmp_path / "m.pt", imgsz=96)), images, out=tmp_path / "o")
    assert result.imgsz == 96 and len(result.detections) == 2 and result.json_path.is_file()


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


@pytest.mark.parametrize("key,value", [("names", "not json"), ("imgsz", "[]")])
def test_damaged_onnx_metadata_is_one_error(tmp_path, images, key, value):
    from npuyolo.deploy.export import export_onnx, set_metadata
    from npuyolo.variants.build import build_model

    path = export_onnx(build_model("L4-relu", nc=6), tmp_path / "m.onnx", imgsz=64)
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props} | {key: value}
    set_metadata(proto, meta)
    onnx.save(proto, str(path))
    assert "damaged npuyolo metadata" in one_line_error(cli("predict", path, images, "--out", tmp_path / "o"))


def test_recipe_file_anneal_schedules_get_the_same_checks(tmp_path, synth_data):
    for body, expect in (("act_anneal: {source: leaky, slope: 0.5, start: 1, end: 99, shape: linear}\n", "START < END"),
                         ("act_anneal: {foo: 1}\n", "act_anneal needs exactly")):
        rec = tmp_path / "rec.yaml"
        rec.write_text(body)
        r = cli("train", "--variant", "L4-relu", "--data", synth_data, "--epochs", "2", "--recipe", rec, registry=tmp_path / "r.db")
        assert expect in one_line_error(r)
    assert Registry(tmp_path / "r.db").runs() == []


def test_resume_refuses_flags_it_would_ignore(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    out = one_line_error(cli("train", "--resume", rid, "--epochs", "26", "--act-anneal", "leaky0.3", registry=tmp_path / "r.db"))
    assert "--epochs" in out and "--act-anneal" in out


def test_study_names_are_checked_before_anything_is_written(tmp_path, synth_data):
    reg = Registry(tmp_path / "r.db")
    reg.upsert_series("plain", {"variants": ["L4-relu"], "name": "plain"})
    db = tmp_path / "r.db"
    assert "already an ordinary series" in one_line_error(cli("study", "relu-gap", "--data", synth_data, "--name", "plain", registry=db))
    assert "1 to 60 printable" in one_line_error(cli("study", "relu-gap", "--data", synth_data, "--name", "x" * 300, registry=db))
    one_line_error(cli("study", "relu-gap", "--data", tmp_path / "nope.yaml", "--name", "nodata", registry=db))
    names = [r[0] for r in sqlite3.connect(db).execute("SELECT name FROM series")]
    assert names == ["plain"] and Registry(db).series("plain").spec.get("kind") is None


def test_mlflow_export_needs_a_registry_and_keeps_artefacts_beside_its_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo" / "r.db"
    assert "no registry" in one_line_error(cli("runs", "export", "--mlflow", "sqlite:///x.db", registry=missing))
    assert not missing.exists()
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.record_epoch(rid, 1, map50=0.1)
    yaml_path = Path(reg.get_run(rid).save_dir) / "m.yaml"
    yaml_path.write_text("nc: 2\n")
    reg.add_artifact(rid, "model_yaml", yaml_path)
    assert "names no database file" in one_line_error(cli("runs", "export", "--mlflow", "sqlite:///", registry=reg.path))
    store = tmp_path / "ml" / "store.db"
    store.parent.mkdir()
    r = cli("runs", "export", "--mlflow", f"sqlite:///{store}", "--json", registry=reg.path)
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "mlruns").exists() and (store.parent / "mlruns").is_dir()


def test_markdown_reports_keep_raw_html_and_emphasis_as_text(tmp_path):
    from npuyolo.report.render import render_run

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name="<img src=x onerror=alert(1)> run", class_names=["</td><script>alert(1)</script>", "*em* _u_"])
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    reg.set_status(rid, "finished")
    md = render_run(reg, rid, tmp_path / "md", lang="en").read_text()
    table = md.split("```yaml")[0]
    assert "<img" not in table and "<script>" not in table and "&lt;img src=x" in table and "\\*em\\*" in table
    html = render_run(reg, rid, tmp_path / "html", lang="en", fmt="html").read_text()
    assert "<em>" not in html and "*em* _u_" in html
    meta = html.split("Training metadata")[1]
    assert "model: &lt;img src=x onerror=alert(1)&gt; run_" in meta and "&amp;lt;" not in meta


def test_api_refuses_unknown_options_and_reads_seed_strings(tmp_path, synth_data):
    ws = Workspace(tmp_path / "r.db")
    with pytest.raises(NpuyoloError, match="unknown option"):
        ws.quantize("1", synth_data, calibs=3)
    with pytest.raises(NpuyoloError, match="unknown option"):
        ws.study_relu_gap(synth_data, epoch=2)
    with pytest.raises(NpuyoloError, match="annealing needs at least 2 epochs"):
        ws.study_relu_gap(synth_data, seeds="0,1", epochs=1)  # the string was read; the epochs check speaks


def test_predict_never_runs_a_checkpoints_code(tmp_path, images):
    from .test_hostile import Payload

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "model": Payload(marker), "ema": None}, evil)
    assert "refused to load" in one_line_error(cli("predict", evil, images, "--out", tmp_path / "o"))
    assert not marker.exists() and not (tmp_path / "o").exists()
