"""`series run --executor ray`: members as Ray tasks on a local runtime (2 CPUs), the driver alone writing the registry.

Skipped where Ray is not installed (`make test-ray` installs the `ray` extra and runs this file).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'npuyolo[ray]' (or `make test-ray`)")

from npuyolo.registry.db import Registry  # noqa: E402
from npuyolo.train.executors import FAULT_ENV, RayExecutor, RayOptions, worker_env  # noqa: E402
from npuyolo.train.series import SeriesSpec, run_series  # noqa: E402

from .helpers import registry_content as content  # noqa: E402
from .helpers import EXECUTOR_RECIPE, interrupted_series, retried_after_a_lost_worker, series_file  # noqa: E402


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for the module; executors find it initialised and leave it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env=worker_env())
    yield
    ray.shutdown()


def test_ray_series_records_what_the_serial_executor_records(ray_runtime, synth_data, tmp_path):
    spec = SeriesSpec.load(series_file(tmp_path, synth_data, "par", ["L4-relu", "L4-leaky"], epochs=1))
    serial = Registry(tmp_path / "serial" / "npuyolo.db")
    run_series(serial, spec, verbose=False)
    parallel = Registry(tmp_path / "ray" / "npuyolo.db")
    seen = []
    rows = run_series(parallel, spec, verbose=False,
                      executor=RayExecutor(RayOptions(max_parallel=2), on_progress=lambda s: seen.append([m.status for m in s])))
    assert content(parallel) == content(serial)
    assert content(parallel)["L4-relu"]["status"] == "finished" and content(parallel)["L4-relu"]["epochs"] == [1]
    assert {r["variant"] for r in rows} == {"L4-relu", "L4-leaky"} and all(r["status"] == "finished" for r in rows)
    assert ["running", "running"] in seen and seen[-1] == ["finished", "finished"]  # both dispatched together
    for run in (parallel.get_run(1), parallel.get_run(2)):  # weights in each member's own folder, claimed by the driver
        assert Path(run.artifact("weights/best").path).parent.parent == Path(run.save_dir) == parallel.root / "train" / f"{run.id}-{run.name}"


def test_killed_worker_is_retried_from_its_checkpoint_without_duplicate_epochs(ray_runtime, synth_data, tmp_path, monkeypatch):
    retried_after_a_lost_worker(monkeypatch, tmp_path, synth_data, lambda progress: RayExecutor(RayOptions(max_retries=1), on_progress=progress))


def test_retries_exhausted_leave_the_member_interrupted_and_a_rerun_continues(ray_runtime, synth_data, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1")
    spec = SeriesSpec.load(series_file(tmp_path, synth_data, "noretry", ["L4-relu"], epochs=2))
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    from npuyolo.train.executors import ExecutorError

    with pytest.raises(ExecutorError, match="left interrupted"):  # before: returned normally, the CLI exited 0
        run_series(reg, spec, verbose=False, executor=RayExecutor(RayOptions(max_retries=0)))
    run = reg.get_run(1)
    assert run.status == "interrupted" and "worker lost" in run.error and [e.epoch for e in run.epochs] == [1]
    monkeypatch.delenv(FAULT_ENV)
    rows = run_series(reg, spec, verbose=False, executor=RayExecutor(RayOptions()))
    assert rows[0]["status"] == "finished" and [e.epoch for e in reg.get_run(1).epochs] == [1, 2] and len(reg.runs()) == 1


def test_ctrl_c_on_the_driver_interrupts_all_members_and_a_rerun_continues(ray_runtime, synth_data, tmp_path):
    # enough epochs that a Ctrl-C after the first lands well before the end: a worker that has already finished
    # training and is stripping its checkpoint when it is stopped is a different case (close_if_trained)
    epochs = 8
    spec_file = series_file(tmp_path, synth_data, "stop", ["L4-relu", "L4-leaky"], epochs=epochs)
    reg = interrupted_series(spec_file, tmp_path / "reg" / "npuyolo.db", "ray", wait_for_all=False)
    before = {r.id: r for r in reg.runs()}
    rows = run_series(reg, SeriesSpec.load(spec_file), verbose=False, executor=RayExecutor(RayOptions()))
    assert {r["status"] for r in rows} == {"finished"} and {r["run_id"] for r in rows} == set(before)  # same runs
    for run_id in before:
        assert [e.epoch for e in reg.get_run(run_id).epochs] == list(range(1, epochs + 1))


def test_an_error_inside_a_member_marks_it_failed_with_its_message(ray_runtime, synth_data, tmp_path):
    from npuyolo.train.executors import ExecutorError

    path = series_file(tmp_path, synth_data, "bad", ["L4-relu"], epochs=1)
    spec = yaml.safe_load(path.read_text())
    spec["recipe"]["optimizer"] = "NoSuchOptimizer"  # passes the driver's checks, fails when the worker builds the optimizer
    path.write_text(yaml.safe_dump(spec))
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    with pytest.raises(ExecutorError, match=r"1 member\(s\) failed: L4-relu \(run 1\): .*NoSuchOptimizer"):
        run_series(reg, SeriesSpec.load(path), verbose=False, executor=RayExecutor(RayOptions(max_retries=1)))
    run = reg.get_run(1)
    assert run.status == "failed" and "NoSuchOptimizer" in run.error and "\n" not in run.error and run.epochs == []


def test_cli_json_carries_the_ranking_alone(ray_runtime, synth_data, tmp_path):
    import json

    from typer.testing import CliRunner

    from npuyolo.cli import app

    spec_file = series_file(tmp_path, synth_data, "cli", ["L4-relu"], epochs=1)
    result = CliRunner().invoke(app, ["series", "run", str(spec_file), "--registry", str(tmp_path / "r.db"),
                                      "--executor", "ray", "--cpus-per-member", "2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["series"] == "cli" and out["members"][0]["status"] == "finished"
    too_many = CliRunner().invoke(app, ["series", "run", str(spec_file), "--registry", str(tmp_path / "r2.db"),
                                        "--executor", "ray", "--cpus-per-member", "64"])
    assert too_many.exit_code == 2 and "the Ray cluster has 2 CPUs" in too_many.output


def test_core_imports_leave_ray_out():
    """Ray is imported by the executor when used, never by `import npuyolo...` (the core install stays light)."""
    code = ("import sys, npuyolo.cli, npuyolo.api, npuyolo.train.series, npuyolo.train.executors, npuyolo.train.trainer; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_asha_stops_a_hopeless_candidate_before_its_budget(ray_runtime, synth_data, tmp_path):
    """Two candidates, 4 epochs each; one cannot learn (lr0 1e-12, no warm-up). One trial at a time, the good one
    first, so the rung comparison is deterministic: the hopeless one is stopped at the first rung (epoch 1)."""
    from npuyolo.train.executors import AshaExecutor, MemberJob
    from npuyolo.train.recipe import Recipe
    from npuyolo.train.trainer import prepare_variant

    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    steps = {"warmup_epochs": 0, "ultralytics": {"nbs": 8}}  # an optimizer step every batch from the first (no accumulation)
    good = Recipe.load(epochs=4, lr0=0.02, **steps, **EXECUTOR_RECIPE)
    hopeless = Recipe.load(epochs=4, lr0=1e-12, lr_final=1e-12, **steps, **EXECUTOR_RECIPE)
    jobs = [MemberJob(label, "train", lambda r=recipe, n=label: prepare_variant(reg, "L4-relu", synth_data, r, name=n, verbose=False), 4)
            for label, recipe in (("good", good), ("hopeless", hopeless))]
    states = AshaExecutor(RayOptions(max_parallel=1), grace_epochs=1, metric="val_loss").run(reg, jobs)
    first, second = reg.get_run("good"), reg.get_run("hopeless")
    assert first.status == "finished" and [e.epoch for e in first.epochs] == [1, 2, 3, 4]
    assert second.status == "stopped" and [e.epoch for e in second.epochs] == [1], second.error
    assert "after epoch 1 of 4" in second.error and second.artifact("weights/last")  # its checkpoint stays usable
    assert [s.status for s in states] == ["finished", "stopped"]
    assert reg.get_run("good").artifact("weights/best") and not list((reg.root / "train").glob("*/*.partial"))
