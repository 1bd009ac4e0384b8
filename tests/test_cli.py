"""One consistent CLI: --version, help that shows defaults, --json results scripts can read, run-sized checks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from npuyolo import __version__
from npuyolo.cli import app
from npuyolo.registry.db import Registry
from npuyolo.train.recipe import Recipe
from npuyolo.variants.build import build_model

runner = CliRunner()


def invoke(*args, registry: Path | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"NPUYOLO_REGISTRY": str(registry)} if registry else {})


def finished_run(tmp_path: Path, imgsz: int = 64) -> tuple[Path, int]:
    """A finished run with best weights on disk (an untrained L4-relu), without training."""
    db = tmp_path / "r.db"
    reg = Registry(db)
    rid = reg.create_run(name="trained", variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=imgsz, workers=0).model_dump(),
                         data_path="d.yaml", data_hash="h", class_names=[f"c{i}" for i in range(6)], weights_source=None,
                         device="cpu", versions={})
    best = Path(reg.get_run(rid).save_dir) / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    torch.save({"epoch": -1, "model": None, "ema": build_model("L4-relu", nc=6, names=[f"c{i}" for i in range(6)]).half(),
                "train_args": {"imgsz": imgsz}}, best)
    reg.add_artifact(rid, "weights/best", best)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
    reg.set_status(rid, "finished")
    return db, rid


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"npuyolo {__version__}"


def test_help_shows_defaults_and_required_options():
    text = " ".join(invoke("train", "--help").stdout.split())
    assert "[default: <variant>-<id>]" in text and "[default: runs/npuyolo.db]" in text and "[default: 100, the recipe's]" in text
    assert "Required (unless --resume)" in text
    assert "-t" in invoke("hybrid", "search", "--help").stdout and "--epochs" in invoke("hybrid", "search", "--help").stdout
    assert "--epochs" in invoke("prune", "--help").stdout


def test_command_annotations_are_objects_typer_need_not_evaluate():
    """`npuyolo --help` builds every command, and Typer resolves each parameter's annotation with `get_type_hints`:
    written as text (`from __future__ import annotations` in a cli module) that is an eval and a compile per
    annotation, 14% of the start-up (bench/startup_time.py, issue 32). The commands' annotations stay objects."""
    from typer.main import get_command

    group = get_command(app)
    stack, checked = [group], 0
    while stack:
        cmd = stack.pop()
        stack.extend(getattr(cmd, "commands", {}).values())
        callback = getattr(cmd, "callback", None)
        wrapped = getattr(callback, "__wrapped__", callback)
        for name, annotation in getattr(wrapped, "__annotations__", {}).items():
            assert not isinstance(annotation, str), (cmd.name, name, annotation)
            checked += 1
    assert checked > 100


def test_json_results_for_scripts(tmp_path):
    db, rid = finished_run(tmp_path)
    synth = json.loads(invoke("data", "synth", tmp_path / "d", "--train", "4", "--val", "2", "--imgsz", "64", "--json").stdout)
    assert Path(synth["data"]).is_file()
    exported = json.loads(invoke("export", rid, "--json", registry=db).stdout)
    assert Path(exported["onnx"]).is_file() and exported["run_id"] == rid and exported["imgsz"] == 64  # the run's size
    assert Path(exported["onnx"]).parent == Path(Registry(db, readonly=True).get_run(rid).save_dir) / "export"
    leaky = json.loads(invoke("export", "L4-leaky", "--imgsz", "64", "--out", tmp_path / "l.onnx", "--json").stdout)
    rewritten = json.loads(invoke("npu", "rewrite", leaky["onnx"], "--json").stdout)
    assert rewritten["rewritten"] == 83 and Path(rewritten["onnx"]).is_file()
    report = json.loads(invoke("report", rid, "--json", registry=db).stdout)
    assert Path(report["report"]).is_file() and Path(report["folder"]).parent == Path(Registry(db, readonly=True).get_run(rid).save_dir)


def test_npu_check_of_a_run_uses_its_training_size(tmp_path):
    db, rid = finished_run(tmp_path, imgsz=96)
    rows = json.loads(invoke("npu", "check", rid, "-t", "relu-only", "--json", registry=db).stdout)
    assert "-npu-96" in Path(rows[0]["onnx"]).name
    import onnx

    dims = onnx.load(rows[0]["onnx"]).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 96, 96]


def test_json_stdout_is_json_alone_even_with_ultralytics_logging(synth_data, tmp_path):
    """Ultralytics' logger holds its own stdout stream; `--json` must move it too (a real process, not CliRunner)."""
    import os
    import subprocess
    import sys

    from npuyolo.deploy.export import export_onnx

    onnx_path = export_onnx(build_model("L4-relu", nc=6), tmp_path / "m.onnx", imgsz=64)
    env = {**os.environ, "NPUYOLO_REGISTRY": str(tmp_path / "r.db")}
    out = subprocess.run([sys.executable, "-m", "npuyolo.cli", "deploy", "eval", str(onnx_path), "--data", str(synth_data), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["kind"] == "fp32"  # the whole of stdout is the JSON document


def test_nested_stdout_redirects_leave_ultralytics_logger_working():
    """A --json command whose work also redirects stdout (e.g. loading a QAT checkpoint) left the logger's stream as None."""
    import io
    import logging
    import sys

    from npuyolo.ultra import stdout_to_stderr
    from ultralytics.utils import LOGGER

    handlers = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    assert handlers
    original = [h.setStream(sys.stdout) or h.stream for h in handlers]  # as in a real process: the logger writes to stdout
    before = [h.stream for h in handlers]
    err = io.StringIO()
    real_err, sys.stderr = sys.stderr, err
    try:
        with stdout_to_stderr():
            with stdout_to_stderr():
                LOGGER.info("inner")
            between = [h.stream for h in handlers]
            LOGGER.info("between")
        after = [h.stream for h in handlers]
    finally:
        sys.stderr = real_err
        for h, stream in zip(handlers, original):
            h.setStream(stream)
    assert after == before and all(s is not None for s in between)
    assert "inner" in err.getvalue() and "between" in err.getvalue() and "Logging error" not in err.getvalue()



def test_an_absent_device_is_one_line_from_a_fresh_process(tmp_path, synth_data):
    """Ultralytics logs its banner before it rejects a device; the user saw that line above the one error line."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "npuyolo.cli", "train", "--variant", "L4-relu", "--data", str(synth_data),
                        "--epochs", "1", "--imgsz", "64", "--device", "cuda:7", "--registry", str(tmp_path / "r.db")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    said = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert p.returncode == 2 and len(said) == 1 and said[0].startswith("error:"), said


def test_deploy_eval_layers_top_below_one_is_refused_first(tmp_path):
    """Issue 36: `--layers --top -3` printed every layer but the last three."""
    for top in ("-3", "0"):
        result = CliRunner().invoke(app, ["deploy", "eval", str(tmp_path / "m.rknn"), "--data", str(tmp_path / "d.yaml"),
                                          "--layers", "--top", top, "--registry", str(tmp_path / "r.db")])
        assert result.exit_code == 2 and "--top must be at least 1" in result.output, result.output


# ------------------------------------------------------------------------------------------------ hostile input across commands (the former test_hostile*.py)
import errno

import pytest

from npuyolo.errors import CheckpointError, NpuyoloError
from npuyolo.registry.db import RegistryError

from .helpers import cli, new_run, one_line_error, refuse_writes
from .helpers import finished_run as finished_base_run

@pytest.mark.parametrize("command", [
    ["export", "{pt}", "--imgsz", "64"],
    ["npu", "check", "{pt}", "-t", "relu-only", "--imgsz", "64"],
    ["train", "--variant", "L4-relu", "--data", "{data}", "--weights", "{pt}", "--epochs", "1", "--imgsz", "64"],
    ["distill", "--teacher", "{pt}", "--student-variant", "L4-relu", "--data", "{data}", "--epochs", "1", "--imgsz", "64"],
])
def test_cli_never_runs_a_checkpoints_code(tmp_path, evil_pt, synth_data, command):
    path, marker = evil_pt
    r = cli(*(c.format(pt=path, data=synth_data) for c in command), registry=tmp_path / "reg" / "r.db")
    out = one_line_error(r)
    assert "refused to load" in out and not marker.exists()
    if (tmp_path / "reg" / "r.db").exists():
        assert Registry(tmp_path / "reg" / "r.db").runs() == []  # refused before a run was created


def test_real_bugs_keep_their_traceback(monkeypatch):
    import npuyolo.variants.spec as spec

    def bug(name):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(spec, "parse_variant", bug)
    r = cli("variants", "show", "L4-relu")
    assert r.exit_code != 2 and isinstance(r.exception, ValueError)


def test_every_error_class_is_an_npuyolo_error():
    from npuyolo.data.check import DataError
    from npuyolo.deploy.eval.evaluate import DeployError
    from npuyolo.distill.run import DistillError
    from npuyolo.npu.graph import GraphError
    from npuyolo.npu.profiles import TargetError
    from npuyolo.npu.rewrite import RewriteError
    from npuyolo.prune.prune import PruneError
    from npuyolo.report.facts import ReportError
    from npuyolo.train.recipe import RecipeError
    from npuyolo.train.trainer import TrainError
    from npuyolo.variants.spec import VariantError

    for cls in (DataError, DeployError, DistillError, GraphError, TargetError, RewriteError, PruneError, ReportError,
                RecipeError, TrainError, VariantError, RegistryError, CheckpointError):
        assert issubclass(cls, NpuyoloError)


def test_names_that_look_like_markup_stay_text_in_tables(tmp_path):
    reg = Registry(tmp_path / "r.db")
    new_run(reg, name="[/bold] oops [link=https://evil.example]x[/link]")
    r = cli("runs", registry=tmp_path / "r.db")
    assert r.exit_code == 0 and "[/bold] oops" in " ".join(r.output.split())


@pytest.mark.parametrize("command,made", [
    (["report", "base"], "reports"),  # the write fails, then the cleanup's unlink failed too and hid it
    (["report", "base", "--format", "html"], "reports"),
    (["predict", "base", "{images}"], "predict"),
    (["npu", "check", "base", "-t", "relu-only", "--imgsz", "64"], None),
    (["prune", "base", "--epochs", "1"], "prune"),
])
def test_a_read_only_run_folder_is_one_line_naming_it(tmp_path, synth_data, monkeypatch, command, made):
    db = tmp_path / "r.db"
    reg, rid = finished_base_run(db, data=synth_data)
    folder = Path(reg.get_run(rid).save_dir)
    if made:
        (folder / made).mkdir()
    before = sorted(p.name for p in folder.rglob("*"))
    refuse_writes(monkeypatch, folder, errno.EROFS)
    images = synth_data.parent / "images" / "val"
    out = one_line_error(cli(*(a.format(images=images) for a in command), registry=db))
    assert str(folder) in out and "read-only" in out, out
    monkeypatch.undo()
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_predict_report_and_synth_on_a_full_disk_are_one_line(tmp_path, synth_data, monkeypatch):
    db = tmp_path / "r.db"
    reg, rid = finished_base_run(db)
    folder = Path(reg.get_run(rid).save_dir)
    (folder / "reports").mkdir()
    refuse_writes(monkeypatch, tmp_path, errno.ENOSPC)
    assert "disk full" in one_line_error(cli("report", "base", registry=db))
    assert "disk full" in one_line_error(cli("predict", "base", synth_data.parent / "images" / "val", "--out",
                                             tmp_path / "pred", registry=db))
    out = one_line_error(cli("data", "synth", tmp_path / "set", "--train", "2", "--val", "1", "--imgsz", "64"))
    assert "disk full" in out and str(tmp_path / "set") in out
    monkeypatch.undo()
    assert not (tmp_path / "pred").exists()  # a failed predict leaves no (empty) output folder behind
