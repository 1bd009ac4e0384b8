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
    report = ws.report(run.id, lang="ko")
    assert report.is_file() and report.parent == Path(run.save_dir) / "reports"
    assert [r["id"] for r in ws.runs()] == [run.id]
    with pytest.raises(NpuyoloError):
        ws.run("no-such-run")
