"""The Python API mirrors the CLI and returns typed records; importing npuyolo stays light and documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import npuyolo
from npuyolo import NpuyoloError, Workspace
from npuyolo.registry.db import RunRecord


def test_import_is_light_and_changes_only_documented_settings():
    code = ("import os, sys; before = dict(os.environ); import npuyolo; "
            "print(sorted(k for k in os.environ if before.get(k) != os.environ[k])); print('torch' in sys.modules)")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("YOLO_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split("\n")
    assert out[0] == "['YOLO_AUTOINSTALL', 'YOLO_OFFLINE', 'YOLO_VERBOSE']" and out[1] == "False"
    assert set(dir(npuyolo)) == {"NpuyoloError", "Workspace", "__version__"}


@pytest.mark.slow
def test_workspace_train_check_quantize_evaluate_report(synth_data, tmp_path):
    ws = Workspace(tmp_path / "r.db")
    run = ws.train("L4-leaky", synth_data, epochs=1, imgsz=64, batch=8, workers=0, verbose=False)
    assert isinstance(run, RunRecord) and run.status == "finished" and run.artifact_path("weights/best")
    check = ws.check(run.id, ["relu-only"])
    assert check.reports[0].target == "relu-only" and 0 < check.reports[0].share_nodes < 1
    q = ws.quantize(run.id, synth_data, calib=4)
    result = ws.evaluate(q["int8"], synth_data)
    assert result["kind"] == "int8" and "drop_pp" in result
    # best.pt scored through the same square pipeline as the ONNX files, so the two agree like for like
    assert result["pt"]["imgsz"] == result["fp32"]["imgsz"] == 64
    assert abs(result["pt"]["map50"] - result["fp32"]["map50"]) <= 0.005
    assert "The PT row is best.pt" in ws.report(run.id, lang="en").read_text()
    report = ws.report(run.id, lang="ko")
    assert report.is_file() and report.parent == Path(run.save_dir) / "reports"
    assert [r.id for r in ws.runs()] == [run.id]
    with pytest.raises(NpuyoloError):
        ws.run("no-such-run")


def test_no_ultralytics_distribution_is_forced_over_an_existing_one():
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert not [d for d in meta["dependencies"] if d.startswith("ultralytics")]
    assert meta["optional-dependencies"]["ultralytics"][0].startswith("ultralytics>=")
    assert meta["optional-dependencies"]["headless"][0].startswith("ultralytics-opencv-headless>=")


def test_a_missing_ultralytics_is_one_clear_error():
    code = ("import sys; sys.modules['ultralytics'] = None\n"
            "try:\n    import npuyolo.ultra\nexcept Exception as e:\n    print(type(e).__name__, '|', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("MissingUltralyticsError |") and "npuyolo[headless]" in out
