"""`series run --executor process`: members side by side in child processes on this machine, without Ray; the parent
alone writes the registry, as with Ray (tests/test_ray_executor.py holds the same cases there)."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from npuyolo.registry.db import Registry
from npuyolo.train.executors import FAULT_ENV, ExecutorError, ProcessExecutor, ProcessOptions, make_executor
from npuyolo.train.series import SeriesSpec, run_series

from .helpers import registry_content as content
from .helpers import interrupted_series, retried_after_a_lost_worker, series_file


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
    reg = retried_after_a_lost_worker(monkeypatch, tmp_path, synth_data, lambda progress: ProcessExecutor(ProcessOptions(max_retries=1), on_progress=progress))

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
    reg = interrupted_series(spec_file, tmp_path / "reg" / "npuyolo.db", "process", wait_for_all=True)
    before = {r.id: reg.get_run(r.id) for r in reg.runs()}
    assert {r.error for r in before.values()} == {"stopped by the user (Ctrl-C)"}  # the parent stopped its children
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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
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


def _refuse_to_load():
    raise RuntimeError("this object cannot be loaded in a child")


class _LoadsNowhere:
    """Pickles in the parent, fails when the child loads it: a child that dies before it trains."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def _claimed_job(reg: Registry, synth_data, overrides: dict):
    """A member whose `prepare()` claims a run (running) as a series does, with `overrides` for its trainer."""
    from npuyolo.train.executors import MemberJob
    from npuyolo.train.recipe import Recipe
    from npuyolo.train.trainer import PreparedRun

    from .helpers import RUN_ARGS

    def prepare():
        run_id = reg.create_run(**{**RUN_ARGS, "name": None, "data_path": str(synth_data)})
        return PreparedRun(run_id, Recipe.load(epochs=1, imgsz=64, batch=8, workers=0), overrides)

    return MemberJob("L4-relu", "train", prepare, epochs=1)


def test_a_member_that_cannot_start_is_failed_not_retried_and_never_left_running(synth_data, tmp_path):
    """A child that dies before it trains (here: its run cannot be loaded there) is a failed start with its reason,
    not a lost worker to retry; a start that fails in the parent (nothing picklable to send) leaves the claimed run
    interrupted, never `running` (a re-run in the same process would be refused as still running)."""
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    with pytest.raises(ExecutorError, match=r"could not start \(exit code 1\)"):
        ProcessExecutor(ProcessOptions(max_retries=3)).run(reg, [_claimed_job(reg, synth_data, {"x": _LoadsNowhere()})],
                                                           prepare_retry=lambda run_id: pytest.fail("retried"))
    run = reg.get_run(1)
    assert run.status == "failed" and "could not start" in run.error
    with pytest.raises(Exception, match="pickle"):
        ProcessExecutor().run(reg, [_claimed_job(reg, synth_data, {"x": lambda: 0})], prepare_retry=lambda run_id: None)
    run = reg.get_run(2)
    assert run.status == "interrupted" and "pickle" in run.error


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _a_long_epoch(marker: str) -> None:
    """A child's body that takes its signals as a member does, then trains one endless epoch."""
    from npuyolo.train.process_executor import become_member

    become_member()
    try:
        time.sleep(600)
    except KeyboardInterrupt:  # what Ultralytics' loop would see: the run is closed as interrupted
        Path(marker).write_text("stopped")


def test_a_member_stops_when_its_parent_is_killed(tmp_path):
    """`kill -9` of the command (the OOM killer, a CI cancel) runs none of its clean-up: a child in the middle of an
    epoch notices its parent is gone and stops, instead of training on into a folder a re-run would resume."""
    import subprocess
    import sys

    marker = tmp_path / "stopped"
    parent = ("import multiprocessing as mp, sys, time\n"
              "from tests.test_process_executor import _a_long_epoch\n"
              "if __name__ == '__main__':\n"
              f"    child = mp.get_context('spawn').Process(target=_a_long_epoch, args=({str(marker)!r},))\n"
              "    child.start()\n"
              "    print(child.pid, flush=True)\n"
              "    time.sleep(600)\n")
    script = tmp_path / "parent.py"
    script.write_text(parent)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    child = int(proc.stdout.readline())
    time.sleep(3)  # the child is in its epoch
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{child}").exists() and not marker.exists():
        os.kill(child, signal.SIGKILL)  # never leave it behind
    assert marker.read_text() == "stopped"
