"""`series run --executor process`: members side by side in child processes on this machine, without Ray; the parent
alone writes the registry, as with Ray (tests/test_ray_executor.py holds the same cases there)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from npuyolo.registry.db import Registry
from npuyolo.train.executors import FAULT_ENV, ExecutorError, ProcessExecutor, ProcessOptions, make_executor
from npuyolo.train.series import SeriesSpec, run_series
from npuyolo.train.trainer import default_cpu_threads

from .conftest import epochs_in

RECIPE = {"imgsz": 64, "batch": 8, "workers": 0, "plots": False}


def series_file(tmp_path: Path, data: Path, name: str, variants: list[str], epochs: int, **recipe) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "data": str(data), "variants": variants,
                                    "recipe": {**RECIPE, "epochs": epochs, **recipe}}))
    return path


def content(reg: Registry) -> dict:
    """What must not depend on the executor: per member its status, epoch numbers, artefact kinds, device, AMP."""
    out = {}
    for r in reg.runs():
        run = reg.get_run(r.id)
        out[run.variant] = {"name": run.name, "status": run.status, "epochs": [e.epoch for e in run.epochs],
                            "artifacts": sorted(a.kind for a in run.artifacts), "device": run.device, "amp": run.amp,
                            "best": sorted(run.best or {}), "metrics_recorded": all(e.map50 is not None for e in run.epochs)}
    return out


def test_process_series_records_what_the_serial_executor_records(synth_data, tmp_path):
    spec = SeriesSpec.load(series_file(tmp_path, synth_data, "par", ["L4-relu", "L4-leaky"], epochs=1))
    serial = Registry(tmp_path / "serial" / "npuyolo.db")
    run_series(serial, spec, verbose=False)
    parallel = Registry(tmp_path / "proc" / "npuyolo.db")
    seen = []
    rows = run_series(parallel, spec, verbose=False, executor=ProcessExecutor(
        ProcessOptions(max_parallel=2), on_progress=lambda s: seen.append([m.status for m in s])))
    assert content(parallel) == content(serial)
    assert {r["variant"] for r in rows} == {"L4-relu", "L4-leaky"} and all(r["status"] == "finished" for r in rows)
    assert ["running", "running"] in seen and seen[-1] == ["finished", "finished"]  # both started together
    for run in (parallel.get_run(1), parallel.get_run(2)):  # weights in each member's own folder, claimed by the parent
        folder = Path(run.save_dir)
        assert Path(run.artifact("weights/best").path).parent.parent == folder == parallel.root / "train" / f"{run.id}-{run.name}"
        assert run.versions["numerics"]["torch_threads"] == 1  # cpus_per_member: one torch thread each, recorded
        assert "Epoch" in (folder / "train.log").read_text()  # the child's output, off the parent's table


def test_a_killed_member_process_is_retried_from_its_checkpoint_without_duplicate_epochs(synth_data, tmp_path, monkeypatch):
    calls = []
    original = Registry.record_epoch

    def counted(self, run_id, epoch, *a, **k):  # the parent is the only writer: every epoch record passes here
        calls.append((run_id, epoch))
        return original(self, run_id, epoch, *a, **k)

    monkeypatch.setattr(Registry, "record_epoch", counted)
    monkeypatch.setenv(FAULT_ENV, "1")  # first attempt: the child exits (os._exit) right after sending epoch 1
    spec = SeriesSpec.load(series_file(tmp_path, synth_data, "fault", ["L4-relu"], epochs=2))
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    states = []
    run_series(reg, spec, verbose=False, executor=ProcessExecutor(ProcessOptions(max_retries=1), on_progress=lambda s: states.append(
        [(m.status, m.attempt) for m in s])))
    run = reg.get_run(1)
    assert run.status == "finished" and [e.epoch for e in run.epochs] == [1, 2]
    assert calls == [(1, 1), (1, 2)]  # epoch 1 came from the checkpoint, never trained or recorded again
    assert ("interrupted", 0) in [s[0] for s in states] and states[-1] == [("finished", 1)]
    assert len(reg.runs()) == 1  # the same run continued, no second one

    monkeypatch.setenv(FAULT_ENV, "1")  # no retries left: interrupted, the series says so, a re-run continues
    spec = SeriesSpec.load(series_file(tmp_path, synth_data, "noretry", ["L4-leaky"], epochs=2))
    with pytest.raises(ExecutorError, match="lost 1 time.*left interrupted, run the series again"):
        run_series(reg, spec, verbose=False, executor=ProcessExecutor(ProcessOptions(max_retries=0)))
    run = reg.get_run(2)
    assert run.status == "interrupted" and "worker process lost (exit code 1)" in run.error
    monkeypatch.delenv(FAULT_ENV)
    rows = run_series(reg, spec, verbose=False, executor=ProcessExecutor())
    assert rows[0]["status"] == "finished" and [e.epoch for e in reg.get_run(2).epochs] == [1, 2] and len(reg.runs()) == 2


def test_an_error_inside_a_member_marks_it_failed_with_its_message(synth_data, tmp_path):
    path = series_file(tmp_path, synth_data, "bad", ["L4-relu"], epochs=1, optimizer="NoSuchOptimizer")
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    with pytest.raises(ExecutorError, match=r"1 member\(s\) failed: L4-relu \(run 1\): failed: .*NoSuchOptimizer"):
        run_series(reg, SeriesSpec.load(path), verbose=False, executor=ProcessExecutor(ProcessOptions(max_retries=1)))
    run = reg.get_run(1)
    assert run.status == "failed" and "NoSuchOptimizer" in run.error and "\n" not in run.error and run.epochs == []
    assert "Traceback" in (Path(run.save_dir) / "train.log").read_text()  # the whole story is in the member's log


def test_ctrl_c_on_the_parent_interrupts_all_members_and_a_rerun_continues(synth_data, tmp_path):
    epochs = 8  # a Ctrl-C after the first epoch lands well before the end
    spec_file = series_file(tmp_path, synth_data, "stop", ["L4-relu", "L4-leaky"], epochs=epochs)
    db = tmp_path / "reg" / "npuyolo.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "npuyolo.cli", "series", "run", str(spec_file), "--registry", str(db),
           "--executor", "process", "--max-parallel", "2", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 150
    while not (epochs_in(db, 1) >= 1 and epochs_in(db, 2) >= 1) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the series ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # the parent only; it stops its children itself
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr[-2000:]
    assert "again to continue" in stderr and stdout == ""
    reg = Registry(db)
    before = {r.id: reg.get_run(r.id) for r in reg.runs()}
    assert {r.status for r in before.values()} == {"interrupted"} and len(before) == 2
    assert {r.error for r in before.values()} == {"stopped by the user (Ctrl-C)"}
    rows = run_series(reg, SeriesSpec.load(spec_file), verbose=False, executor=ProcessExecutor())
    assert {r["status"] for r in rows} == {"finished"} and {r["run_id"] for r in rows} == set(before)  # same runs
    for run_id in before:
        assert [e.epoch for e in reg.get_run(run_id).epochs] == list(range(1, epochs + 1))


def test_process_options_are_checked_before_anything_is_registered():
    with pytest.raises(ExecutorError, match="^`address` need `executor` ray$"):
        make_executor("process", address="auto")
    with pytest.raises(ExecutorError, match="cpus_per_member must be at least 1 with executor process"):
        make_executor("process", cpus_per_member=0.5)
    assert make_executor("process", max_parallel=3).options.parallel(5) == 3
    assert ProcessOptions(cpus_per_member=2).threads == 2
    cores = default_cpu_threads()
    assert ProcessOptions().parallel(3) == min(3, 2 * cores)  # every member at once, up to twice the cores
    assert ProcessOptions().parallel(50) == 2 * cores and ProcessOptions(cpus_per_member=2).parallel(50) == max(1, cores // 2) * 2


def test_cli_series_run_with_the_process_executor(synth_data, tmp_path):
    from typer.testing import CliRunner

    from npuyolo.cli import app

    spec_file = series_file(tmp_path, synth_data, "cli", ["L4-relu"], epochs=1)
    result = CliRunner().invoke(app, ["series", "run", str(spec_file), "--executor", "process", "--json",
                                      "--registry", str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    assert [m["status"] for m in json.loads(result.stdout)["members"]] == ["finished"]
