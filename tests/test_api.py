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
    result = ws.evaluate(q.int8, synth_data)
    assert result.kind == "int8" and result.drop_pp is not None and result.recorded
    # best.pt scored through the same square pipeline as the ONNX files, so the two agree like for like
    assert result.pt["imgsz"] == result.fp32["imgsz"] == 64
    assert abs(result.pt["map50"] - result.fp32["map50"]) <= 0.005
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


PLAN_CALLS = {  # issue 36: Workspace.plan and series_plan skipped the argument checks every other method has
    "plan(targets='relu-only')": lambda ws, d: ws.plan("L4-relu", "relu-only", d),
    "plan(targets=None)": lambda ws, d: ws.plan("L4-relu", None, d),
    "plan(targets=[1])": lambda ws, d: ws.plan("L4-relu", [1], d),
    "plan(data=None)": lambda ws, d: ws.plan("L4-relu", ["relu-only"], None),
    "plan(model=None)": lambda ws, d: ws.plan(None, ["relu-only"], d),
    "plan(conf='0.3')": lambda ws, d: ws.plan("L4-relu", ["relu-only"], d, conf="0.3"),
    "plan(calib='4')": lambda ws, d: ws.plan("L4-relu", ["relu-only"], d, calib="4"),
    "plan(holdout=8.0)": lambda ws, d: ws.plan("L4-relu", ["relu-only"], d, holdout=8.0),
    "plan(imgsz='64')": lambda ws, d: ws.plan("L4-relu", ["relu-only"], d, imgsz="64"),
    "plan(sweep='no')": lambda ws, d: ws.plan("L4-relu", ["relu-only"], d, sweep="no"),
    "plan(vendor_int8=1)": lambda ws, d: ws.plan("L4-relu", ["relu-only"], d, vendor_int8=1),
    "series_plan(targets='relu-only')": lambda ws, d: ws.series_plan("s", "relu-only"),
    "series_plan(targets=None)": lambda ws, d: ws.series_plan("s", None),
    "series_plan(name=None)": lambda ws, d: ws.series_plan(None, ["relu-only"]),
    "series_plan(data=5)": lambda ws, d: ws.series_plan("s", ["relu-only"], 5),
    "series_plan(conf='0.3')": lambda ws, d: ws.series_plan("s", ["relu-only"], conf="0.3"),
    "series_plan(calib='4')": lambda ws, d: ws.series_plan("s", ["relu-only"], calib="4"),
}


# ------------------------------------------------------------------------------------------------ arguments of the wrong type (the former test_hostile*.py)


def test_api_refuses_unknown_options_and_reads_seed_strings(tmp_path, synth_data):
    ws = Workspace(tmp_path / "r.db")
    with pytest.raises(NpuyoloError, match="unknown option"):
        ws.quantize("1", synth_data, calibs=3)
    with pytest.raises(NpuyoloError, match="unknown option"):
        ws.study_relu_gap(synth_data, epoch=2)
    with pytest.raises(NpuyoloError, match="annealing needs at least 2 epochs"):
        ws.study_relu_gap(synth_data, seeds="0,1", epochs=1)  # the string was read; the epochs check speaks


API_CALLS = {
    "Workspace(bytes)": lambda ws, d: type(ws)(b"/tmp/x.db"),
    "train(data=None)": lambda ws, d: ws.train("L4-relu", None, epochs=1),
    "train(data=bytes)": lambda ws, d: ws.train("L4-relu", b"d.yaml", epochs=1),
    "train(variant=None)": lambda ws, d: ws.train(None, d, epochs=1),
    "series(None)": lambda ws, d: ws.series(None),
    "study_relu_gap(None)": lambda ws, d: ws.study_relu_gap(None),
    "check(targets=None)": lambda ws, d: ws.check("L4-relu", None, imgsz=64),
    "check(targets=str)": lambda ws, d: ws.check("L4-relu", "relu-only", imgsz=64),
    "export(out=None)": lambda ws, d: ws.export("L4-relu", None, imgsz=64),
    "export(out=bytes)": lambda ws, d: ws.export("L4-relu", b"x.onnx", imgsz=64),
    "export(imgsz='64')": lambda ws, d: ws.export("L4-relu", "x.onnx", imgsz="64"),
    "evaluate(None)": lambda ws, d: ws.evaluate(None, d),
    "evaluate(bytes)": lambda ws, d: ws.evaluate(b"x.onnx", d),
    "bench(None)": lambda ws, d: ws.bench(None),
    "predict(source=bytes)": lambda ws, d: ws.predict("x.pt", b"img.jpg"),
    "predict(conf='0.5')": lambda ws, d: ws.predict("x.pt", "img.jpg", conf="0.5"),
    "report(out=bytes)": lambda ws, d: ws.report("1", out=b"o"),
}


@pytest.mark.parametrize("call", [*PLAN_CALLS, *API_CALLS])
def test_api_arguments_of_the_wrong_type_are_one_npuyolo_error(tmp_path, synth_data, call):
    """None, bytes or a str number raised a raw TypeError/AttributeError, or were shown as if right ('got 64');
    `plan(targets="relu-only")` planned the unknown target 'r' (issue 36). Nothing is planned."""
    with pytest.raises(NpuyoloError) as e:
        {**PLAN_CALLS, **API_CALLS}[call](Workspace(tmp_path / "r.db"), synth_data)
    said = str(e.value)
    assert "must be" in said and "\n" not in said, said
    assert not (tmp_path / "plan").exists()
