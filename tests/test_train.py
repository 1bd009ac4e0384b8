import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from npuyolo.cli import app

from .conftest import epochs_in, kill_after_first_epoch
from npuyolo.registry.db import Registry
from npuyolo.train.recipe import Recipe
from npuyolo.train.series import SeriesSpec, rank_rows, run_series
from npuyolo.train.trainer import TrainError, resume_run, train_variant

runner = CliRunner()


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to reach the network or pip is recorded and refused."""
    attempts: list[str] = []

    def refuse(what):
        def _refuse(*args, **kwargs):
            attempts.append(f"{what} {args[:2]}")
            raise OSError(f"network disabled in tests ({what})")
        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads

    for name in ("safe_download", "download"):
        monkeypatch.setattr(downloads, name, refuse(f"ultralytics.{name}"))
    original_asset = downloads.attempt_download_asset

    def local_asset_only(file, *a, **k):  # Ultralytics routes local paths through it too; only misses download
        if Path(str(file)).is_file():
            return original_asset(file, *a, **k)
        return refuse("ultralytics.attempt_download_asset")(file)

    monkeypatch.setattr(downloads, "attempt_download_asset", local_asset_only)

    original_popen = subprocess.Popen

    def guarded_popen(cmd, *a, **k):
        if "pip" in str(cmd):
            attempts.append(f"pip {cmd}")
            raise OSError("pip disabled in tests")
        return original_popen(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", guarded_popen)
    monkeypatch.setattr(checks, "AUTOINSTALL", checks.AUTOINSTALL)  # restored after the test
    return attempts


def test_one_epoch_train_records_one_finished_run_offline(synth_data, tiny_recipe, tmp_path, no_network):
    from ultralytics.utils import ONLINE
    from ultralytics.utils.checks import AUTOINSTALL

    assert not ONLINE and not AUTOINSTALL
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    result = train_variant(reg, "L4-leaky", synth_data, tiny_recipe, verbose=False)
    assert no_network == []
    runs = reg.runs()
    assert len(runs) == 1 and runs[0].status == "finished" and runs[0].epochs == 1
    run = reg.get_run(result.run_id)
    epoch = run.epochs[0]
    assert epoch.epoch == 1 and all(epoch.value(k) is not None and epoch.value(k) >= 0 for k in ("box_loss", "cls_loss", "dfl_loss", "lr", "map50"))
    assert run.recipe.lr0 == 0.003 and run.recipe.epochs == 1
    assert run.class_names[0] == "speed_limit" and len(run.data_hash) == 16
    assert run.versions["torch"] and run.device == "cpu" and run.duration_s > 0
    kinds = {a.kind: a.path for a in run.artifacts}
    assert Path(kinds["weights/best"]).is_file() and Path(kinds["weights/last"]).is_file()
    # the run's own folder holds its weights; checkpoints were renamed into place, the spare previous one removed
    wdir = Path(kinds["weights/best"]).parent
    assert wdir.parent == Path(run.save_dir) == reg.root / "train" / f"{run.id}-L4-leaky-1"
    assert not list(wdir.glob("*partial*")) and not (wdir / "last.prev.pt").exists()
    built = yaml.safe_load(Path(kinds["model_yaml"]).read_text())
    assert built["npuyolo"]["variant"] == "L4-leaky" and built["nc"] == 6
    assert run.best is not None and "map50" in run.best
    # the final validation's per-image statistics are kept with the run, and give back its recorded figures
    from npuyolo.stats.bootstrap import detection_metrics
    from npuyolo.stats.matched import load_stats

    stats = load_stats(kinds["stats/val"])
    assert Path(kinds["stats/val"]).parent.parent == Path(run.save_dir) and stats.pipeline == "rect"
    assert stats.n_images == 8 and sorted(stats.images) == sorted(p.name for p in (synth_data.parent / "images" / "val").iterdir())
    recomputed = detection_metrics(stats)
    for k, metric in enumerate(("map50", "map50_95", "precision", "recall")):
        assert abs(recomputed[k] - run.best[metric]) < 1e-6, (metric, recomputed, run.best)
    # the trained checkpoint is the variant: LeakyReLU everywhere, cascaded pools, no attention
    from npuyolo.deploy.export import load_weights
    from npuyolo.variants.build import activation_census

    model = load_weights(kinds["weights/best"])
    assert set(activation_census(model)) == {"LeakyReLU"}


def test_train_cli_checks_data_first(data_copy):
    label = sorted((data_copy.parent / "labels/train").glob("*.txt"))[0]
    label.write_text("9 0.5 0.5 0.1 0.1\n")
    result = runner.invoke(app, ["train", "--variant", "L4-relu", "--data", str(data_copy), "--epochs", "1", "--imgsz", "64"])
    assert result.exit_code == 2 and "class id 9 out of range" in result.output
    assert runner.invoke(app, ["runs", "--json"]).stdout.strip() == "[]"  # nothing registered


def test_weights_transfer_is_counted(synth_data, tiny_recipe, tmp_path):
    reg = Registry(tmp_path / "r.db")
    first = train_variant(reg, "L4-relu", synth_data, tiny_recipe, verbose=False)
    best = next(a.path for a in reg.get_run(first.run_id).artifacts if a.kind == "weights/best")
    second = train_variant(reg, "L4-leaky", synth_data, tiny_recipe, weights=best, verbose=False)
    run = reg.get_run(second.run_id)
    moved, total = map(int, run.weights_transferred.split("/"))
    assert moved == total > 400 and run.weights_source == str(Path(best).resolve())
    with pytest.raises(TrainError, match="never downloads"):
        train_variant(reg, "L4-relu", synth_data, tiny_recipe, weights="yolo11n.pt", verbose=False)


def test_sigkill_mid_run_then_resume_finishes(synth_data, tmp_path):
    db = tmp_path / "kill" / "npuyolo.db"
    kill_after_first_epoch([sys.executable, "-m", "npuyolo.cli", "train", "--variant", "L4-relu", "--data", str(synth_data),
                            "--epochs", "5", "--imgsz", "64", "--batch", "8", "--workers", "0"], db, run_id=1)
    reg = Registry(db)  # opening the registry notices the dead process
    run = reg.get_run(1)
    assert run.status == "interrupted" and 1 <= len(run.epochs) < 5
    result = runner.invoke(app, ["train", "--resume", "1", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    run = Registry(db).get_run(1)
    assert run.status == "finished"
    assert [e.epoch for e in run.epochs] == [1, 2, 3, 4, 5]
    with pytest.raises(TrainError, match="already finished"):
        resume_run(Registry(db), 1)


def test_ctrl_c_marks_run_interrupted(synth_data, tmp_path):
    db = tmp_path / "int" / "npuyolo.db"
    env = {**os.environ, "NPUYOLO_REGISTRY": str(db)}
    cmd = [sys.executable, "-m", "npuyolo.cli", "train", "--variant", "L4-relu", "--data", str(synth_data),
           "--epochs", "50", "--imgsz", "64", "--batch", "8", "--workers", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while epochs_in(db, 1) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr
    assert Registry(db).get_run(1).status == "interrupted"


def test_series_runs_members_skips_finished_and_ranks(synth_data, tmp_path):
    spec_file = tmp_path / "series.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "v3", "data": str(synth_data), "variants": ["L4-relu", "L4-leaky"],
                                         "recipe": {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0}}))
    db = tmp_path / "s.db"
    result = runner.invoke(app, ["series", "run", str(spec_file), "--registry", str(db)])
    assert result.exit_code == 0, result.output
    reg = Registry(db)
    assert [r.name for r in reg.runs()] == ["v3-L4-relu", "v3-L4-leaky"]
    actions = []
    run_series(reg, SeriesSpec.load(spec_file), on_member=lambda v, a: actions.append((v, a)), verbose=False)
    assert actions == [("L4-relu", "skip"), ("L4-leaky", "skip")] and len(reg.runs()) == 2
    ranked = json.loads(runner.invoke(app, ["series", "rank", "v3", "--json", "--registry", str(db)]).stdout)
    assert {r["variant"] for r in ranked} == {"L4-relu", "L4-leaky"} and all(r["rank_map50"] >= 1 for r in ranked)
    # every member kept its best.pt's statistics: ranks come from paired intervals, each metric with its interval
    assert all(r["rank_basis"] == "intervals" and len(r["map50_interval"]) == 2 for r in ranked)
    missing = runner.invoke(app, ["series", "rank", "nope", "--registry", str(db)])
    assert missing.exit_code == 2 and "no series 'nope'" in missing.output


def test_rank_rows_ranks_each_metric():
    rows = [
        {"variant": "a", "map50": 0.9, "map50_95": 0.5, "precision": 0.7, "recall": 0.8},
        {"variant": "b", "map50": 0.8, "map50_95": 0.6, "precision": 0.7, "recall": 0.9},
        {"variant": "c", "map50": None, "map50_95": None, "precision": None, "recall": None},
    ]
    ranked = rank_rows(rows)
    assert [r["variant"] for r in ranked] == ["a", "b", "c"]
    assert (ranked[0]["rank_map50"], ranked[0]["rank_map50_95"], ranked[0]["rank_recall"]) == (1, 2, 2)
    assert ranked[0]["rank_precision"] == ranked[1]["rank_precision"] == 1  # a tie shares the rank
    assert ranked[2]["rank_map50"] is None


def test_runs_cli(synth_data, tiny_recipe, tmp_path):
    db = tmp_path / "c.db"
    train_variant(Registry(db), "L2-relu6", synth_data, tiny_recipe, verbose=False)
    listed = json.loads(runner.invoke(app, ["runs", "--json", "--registry", str(db)]).stdout)
    assert listed[0]["variant"] == "L2-relu6"
    shown = runner.invoke(app, ["runs", "--registry", str(db), "show", "1"])
    assert shown.exit_code == 0 and "L2-relu6" in shown.stdout and "recipe:" in shown.stdout
    missing = runner.invoke(app, ["runs", "--registry", str(db), "show", "99"])
    assert missing.exit_code == 2 and "no run '99'" in missing.output
    out = tmp_path / "m.onnx"
    exported = runner.invoke(app, ["export", "1", "--imgsz", "64", "--out", str(out), "--registry", str(db)])
    assert exported.exit_code == 0, exported.output and out.is_file()
    assert any(a.kind.startswith("onnx/") for a in Registry(db).get_run(1).artifacts)


def test_trackers_stay_off_unless_the_recipe_names_them(synth_data, tiny_recipe, monkeypatch):
    """Ultralytics would add W&B/MLflow/... callbacks whenever their package is installed; npuyolo keeps only those named."""
    import npuyolo.train.trainer as trainer

    def fake_wandb(t):
        pass

    def fake_tensorboard(t):
        pass

    fake_wandb.__module__, fake_tensorboard.__module__ = "ultralytics.utils.callbacks.wb", "ultralytics.utils.callbacks.tensorboard"
    seen = {}

    def fake_integrations(instance):  # what Ultralytics does when wandb and tensorboard are installed and enabled
        instance.callbacks["on_pretrain_routine_start"] += [fake_wandb, fake_tensorboard]
        seen[id(instance)] = True

    import npuyolo.train.glue as glue

    glue.install_tracker_filter()  # as the first npuyolo trainer does; then Ultralytics' own function is swapped for the fake
    monkeypatch.setattr(glue, "_ultralytics_add_integration_callbacks", fake_integrations)
    overrides = {**tiny_recipe.ultralytics_args(), "model": "yolo11n.yaml", "data": str(synth_data)}
    default = trainer.trainer_for(tiny_recipe)(overrides=overrides)
    chosen = trainer.trainer_for(tiny_recipe.model_copy(update={"trackers": ["tensorboard"]}))(overrides=overrides)
    assert len(seen) == 2  # the filter ran where Ultralytics adds integrations, before on_pretrain_routine_start fired
    assert fake_wandb not in default.callbacks["on_pretrain_routine_start"] and fake_tensorboard not in default.callbacks["on_pretrain_routine_start"]
    assert fake_tensorboard in chosen.callbacks["on_pretrain_routine_start"] and fake_wandb not in chosen.callbacks["on_pretrain_routine_start"]


def test_the_registry_records_where_named_trackers_logged(tmp_path, monkeypatch):
    import mlflow

    from npuyolo.train.trainer import record_trackers

    reg = Registry(tmp_path / "r.db")
    rid = reg.create_run(name="t-run", variant="L4-relu", recipe={}, data_path="d", data_hash="h", class_names=["a"],
                         weights_source=None, device="cpu", versions={})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as active:  # what Ultralytics' MLflow callback leaves behind after training
        pass

    class Finished:
        trackers = ("tensorboard", "mlflow")
        save_dir = tmp_path / "train" / "1-t-run"

    record_trackers(reg, rid, Finished())
    run = reg.get_run(rid)
    assert run.artifact("tracker/tensorboard").meta["logdir"] == str(Finished.save_dir)
    assert run.artifact("tracker/mlflow").meta == {"uri": uri, "run_id": active.info.run_id}


def test_amp_requested_on_cpu_is_recorded_off_and_nothing_downloads(synth_data, tiny_recipe, tmp_path, no_network):
    """AMP is no longer forced off: the recipe's setting reaches Ultralytics, whose self-check (which would download
    yolo26n.pt) is replaced by an offline one; on CPU it says no, and the run records what was used."""
    import ultralytics.engine.trainer as engine

    from npuyolo.offline import offline_check_amp

    assert engine.check_amp is offline_check_amp
    checked = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(engine, "check_amp", lambda model: checked.append(model) or offline_check_amp(model))
    try:
        recipe = tiny_recipe.model_copy(update={"ultralytics": {"amp": True}})
        reg = Registry(tmp_path / "reg" / "npuyolo.db")
        run = reg.get_run(train_variant(reg, "L4-relu", synth_data, recipe, verbose=False).run_id)
    finally:
        monkeypatch.undo()
    assert no_network == [] and len(checked) == 1  # the check ran (AMP was asked for) and reached nothing
    assert run.status == "finished" and run.amp is False and run.device == "cpu"
    shown = runner.invoke(app, ["runs", "--registry", str(reg.path), "show", str(run.id)])
    assert "AMP off" in shown.stdout and json.loads(runner.invoke(app, ["runs", "--registry", str(reg.path), "show", str(run.id), "--json"]).stdout)["amp"] is False
    off = tiny_recipe.model_copy(update={"ultralytics": {"amp": False}})
    assert reg.get_run(train_variant(reg, "L4-relu", synth_data, off, verbose=False).run_id).amp is False


def test_offline_amp_check_follows_the_device_and_ultralytics_bad_gpu_list(monkeypatch):
    from types import SimpleNamespace

    import torch

    from npuyolo.offline import offline_check_amp

    model = torch.nn.Conv2d(3, 4, 1)
    assert offline_check_amp(model) is False  # CPU: AMP is for accelerators

    class OnCuda:  # offline_check_amp looks only at where the first parameter lives
        def parameters(self):
            yield SimpleNamespace(device=torch.device("cuda", 0))

    fake = OnCuda()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert offline_check_amp(fake) is True
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce GTX 1660 Ti")
    assert offline_check_amp(fake) is False


def test_ray_executor_without_ray_is_one_line(monkeypatch, synth_data, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "s", "data": str(synth_data), "variants": ["L4-relu"], "recipe": {"epochs": 1}}))
    result = runner.invoke(app, ["series", "run", str(spec_file), "--executor", "ray", "--registry", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and "pip install 'npuyolo[ray]'" in result.output
    assert not (tmp_path / "r.db").exists()  # refused before anything was registered
    wrong = runner.invoke(app, ["series", "run", str(spec_file), "--max-parallel", "2", "--registry", str(tmp_path / "r.db")])
    assert wrong.exit_code == 2 and "need --executor process or ray" in wrong.output
    remote = runner.invoke(app, ["series", "run", str(spec_file), "--executor", "process", "--address", "auto",
                                 "--registry", str(tmp_path / "r.db")])
    assert remote.exit_code == 2 and "--address need --executor ray" in remote.output
    from npuyolo import Workspace
    from npuyolo.train.executors import ExecutorError

    with pytest.raises(ExecutorError, match=r"pip install 'npuyolo\[ray\]'"):
        Workspace(tmp_path / "api.db").series(spec_file, executor="ray")
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "api.db").exists()


def test_a_run_trained_on_disk_but_recorded_interrupted_is_closed_not_retrained(synth_data, tiny_recipe, tmp_path):
    """A stop between Ultralytics' final strip of last.pt and the final record (seen: Ctrl-C on a Ray driver) left the
    run interrupted; resuming it failed with Ultralytics' 'nothing to resume' and a series re-run marked it failed."""
    import sqlite3

    db = tmp_path / "r.db"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "raced", "data": str(synth_data), "variants": ["L4-relu"],
                                         "recipe": tiny_recipe.model_dump(exclude_defaults=True)}))
    spec = SeriesSpec.load(spec_file)
    run_series(Registry(db), spec, verbose=False)
    con = sqlite3.connect(db)
    with con:  # what the race leaves: the weights artefacts and the final status never recorded
        con.execute("UPDATE runs SET status = 'interrupted', error = 'stopped by the user (Ctrl-C)' WHERE id = 1")
        con.execute("DELETE FROM artifacts WHERE run_id = 1 AND kind LIKE 'weights/%'")
    con.close()
    epochs = [e.epoch for e in Registry(db).get_run(1).epochs]
    rows = run_series(Registry(db), spec, verbose=False)
    run = Registry(db).get_run(1)
    assert rows[0]["status"] == "finished" and run.status == "finished" and run.artifact_path("weights/best") is not None
    assert [e.epoch for e in run.epochs] == epochs and len(Registry(db).runs()) == 1  # nothing trained again
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE runs SET status = 'interrupted' WHERE id = 1")
    con.close()
    assert resume_run(Registry(db), 1, verbose=False).status == "finished"


def test_a_driver_error_is_recorded_as_what_it_was_not_as_ctrl_c():
    """A bug on the series driver used to be written into every running member as the user's Ctrl-C."""
    from npuyolo.train.executors import stop_reason

    assert stop_reason(KeyboardInterrupt()) == "stopped by the user (Ctrl-C)"
    assert stop_reason(RuntimeError("boom\nsecond line")) == "stopped because the series driver failed (RuntimeError: boom)"
    assert stop_reason(MemoryError()) == "stopped because the series driver failed (MemoryError)"


def test_the_same_seed_and_threads_repeat_bit_for_bit_and_the_run_records_its_numerics(synth_data, tiny_recipe, tmp_path,
                                                                                         monkeypatch):
    """Two 1-epoch runs with the same seed, data and torch thread count give identical losses; each run records what
    its numbers depend on (threads, determinism flags, versions, machine), since another thread count does not repeat."""
    import os

    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    one_thread = tiny_recipe.model_copy(update={"threads": 1})
    runs = [reg.get_run(train_variant(reg, "L4-relu", synth_data, one_thread, verbose=False).run_id) for _ in range(2)]
    a, b = (r.epochs[0] for r in runs)
    for key in ("box_loss", "cls_loss", "dfl_loss", "map50", "precision", "recall"):
        assert a.value(key) == b.value(key), key
    n = runs[0].versions["numerics"]
    assert n["torch_threads"] == 1 and n["seed"] == 0 and n["deterministic"] is True and n["device"] == "cpu"
    assert n["cpus"] >= 1 and n["cpu"] and "platform" in n and runs[0].versions["torch"]
    # without `threads`, a CPU run takes every core it may use, at most 8 (Ultralytics alone would take cores - 1),
    # or OMP_NUM_THREADS where set (Ray sets it per task)
    from npuyolo.train.trainer import default_cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_cpu_threads() == min(8, len(os.sched_getaffinity(0)))
    default = reg.get_run(train_variant(reg, "L4-relu", synth_data, tiny_recipe, verbose=False).run_id)
    assert default.versions["numerics"]["torch_threads"] == default_cpu_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_cpu_threads() == 3


@pytest.mark.parametrize("omp", [None, "1", "3"])
def test_cpu_threads_default_survives_ultralytics_own_omp_setting(omp):
    """`import ultralytics` sets OMP_NUM_THREADS=1 where it is unset; read after that import, the default took it for
    the user's setting and every CPU run trained on one thread (seen: L4-relu seed 1 recorded torch_threads 1 while
    `seed_experiment.py` asked for 2). A fresh process, as a user's: unset -> every core up to 8; set -> that value."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    code = ("import npuyolo.ultra, os; from npuyolo.train.trainer import default_cpu_threads; "
            "print(os.environ.get('OMP_NUM_THREADS'), default_cpu_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == (omp or "1")  # Ultralytics' own default is still in place for its loaders
    assert int(out[1]) == (int(omp) if omp else min(8, len(os.sched_getaffinity(0))))


def test_members_the_data_cannot_tell_apart_share_a_rank():
    """rank = 1 + the members significantly ahead: a near-twin of the best shares rank 1, one that misses every other
    image's objects is behind both (rank 3), instead of an order made of noise."""
    from npuyolo.train.series import rank_with_intervals

    from .test_stats import as_stats, confident_model, missing_half

    per = confident_model(seed=13, images=80)
    twin = {k: list(v) for k, v in per.items()}
    for k in ("tp", "conf", "pred_cls"):
        twin[k][5] = twin[k][5][:0]
    rows = [{"variant": v, "run_id": i} for i, v in enumerate(("best", "twin", "half"), start=1)]
    ranked = rank_with_intervals(rows, [as_stats(per), as_stats(twin), as_stats(missing_half(per))])
    assert [r["rank_map50"] for r in ranked] == [1, 1, 3]
    assert ranked[1]["map50"] < ranked[0]["map50"]  # a lower point estimate, yet not ranked below
    assert all(r["map50_interval"][0] <= r["map50"] <= r["map50_interval"][1] for r in ranked)


def test_a_series_with_seed_replicates_trains_each_and_ranks_variants_over_seeds(synth_data, tmp_path):
    """`seeds: [0, 1]` trains every variant once per seed (its own run, its own seed) and `series rank` gives one row
    per variant: mean ± sd over seeds, each seed's value, ranks from intervals over images and seeds; both doors."""
    from npuyolo.api import Workspace

    spec_file = tmp_path / "series.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "rep", "data": str(synth_data), "variants": ["L4-relu", "L4-leaky"],
                                         "seeds": [0, 1], "recipe": {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0}}))
    db = tmp_path / "s.db"
    result = runner.invoke(app, ["series", "run", str(spec_file), "--registry", str(db)])
    assert result.exit_code == 0, result.output
    reg = Registry(db, readonly=True)
    runs = {r.name: reg.get_run(r.id) for r in reg.runs()}
    assert sorted(runs) == ["rep-L4-leaky-s0", "rep-L4-leaky-s1", "rep-L4-relu-s0", "rep-L4-relu-s1"]
    assert all(run.recipe.seed == int(name[-1]) for name, run in runs.items())
    assert sorted(m.variant for m in reg.series("rep").members) == ["L4-leaky/s0", "L4-leaky/s1", "L4-relu/s0", "L4-relu/s1"]
    cli = json.loads(runner.invoke(app, ["series", "rank", "rep", "--json", "--registry", str(db)]).stdout)
    api = Workspace(db).rank("rep")
    assert [r["variant"] for r in cli] == [r["variant"] for r in api] and {r["variant"] for r in cli} == {"L4-relu", "L4-leaky"}
    for r in cli:
        assert r["seeds"] == [0, 1] and len(r["map50_values"]) == 2 and r["rank_basis"] == "intervals (images + seeds)"
        assert r["map50"] == pytest.approx(sum(r["map50_values"]) / 2) and r["map50_sd"] is not None
    table = runner.invoke(app, ["series", "rank", "rep", "--registry", str(db)])
    assert table.exit_code == 0 and "mean ± sd" in table.stdout
    # a re-run trains nothing twice
    again = runner.invoke(app, ["series", "run", str(spec_file), "--registry", str(db)])
    assert again.exit_code == 0 and len(Registry(db, readonly=True).runs()) == 4
    # the series report gives the replicates' table (ko/en)
    from npuyolo.report.render import render_series

    for lang, heading in (("en", "## Seed replicates"), ("ko", "## 시드 반복")):
        text = render_series(Registry(db), "rep", tmp_path / f"rep-{lang}", lang=lang).read_text(encoding="utf-8")
        assert heading in text and text.count("| L4-relu | 0, 1 |") == 1, text


# ------------------------------------------------------------------------------------------------ hostile and careless input (the former test_hostile*.py)
from .helpers import cli, new_run, one_line_error, save_ultralytics_checkpoint

@pytest.mark.parametrize("extra", [["--device", "cuda:7"], ["--recipe", "{bad_key}"], ["--name", "x" * 300]])
def test_errors_before_training_leave_no_phantom_run(tmp_path, synth_data, extra):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ultralytics: {no_such_key: 1}\n")
    db = tmp_path / "r.db"
    r = cli("train", "--variant", "L4-relu", "--data", synth_data, "--epochs", "1", "--imgsz", "64",
            *(e.format(bad_key=bad) for e in extra), registry=db)
    one_line_error(r)
    assert Registry(db).runs() == []


def test_a_failure_while_the_trainer_is_built_is_recorded_failed(tmp_path, synth_data, tiny_recipe, monkeypatch):
    import errno

    import npuyolo.train.trainer as trainer
    from npuyolo.train.trainer import TrainError, train_variant

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "trainer_for", lambda recipe: disk_full)
    reg = Registry(tmp_path / "r.db")
    with pytest.raises(TrainError, match="No space left"):
        train_variant(reg, "L4-relu", synth_data, tiny_recipe, verbose=False)
    run = reg.get_run(1)
    assert run.status == "failed" and "No space left on device" in run.error


def test_save_model_keeps_the_previous_checkpoint(tmp_path):
    from npuyolo.train.trainer import PREVIOUS, keep_previous

    last = tmp_path / "last.pt"
    last.write_bytes(b"epoch 3")
    keep_previous(last)
    assert last.read_bytes() == b"epoch 3" and (tmp_path / PREVIOUS).read_bytes() == b"epoch 3"


def test_a_failed_resume_does_not_stay_running(tmp_path, monkeypatch):
    import npuyolo.train.trainer as trainer

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    yaml_path = Path(reg.get_run(rid).save_dir) / "model.yaml"
    yaml_path.write_text("nc: 2\n")
    reg.add_artifact(rid, "model_yaml", yaml_path)

    class Broken:
        def __init__(self, **kw):
            raise RuntimeError("device vanished")

    monkeypatch.setattr(trainer, "trainer_for", lambda recipe: Broken)
    with pytest.raises(RuntimeError, match="vanished"):
        trainer.resume_run(reg, rid)
    assert reg.get_run(rid).status == "failed" and "device vanished" in reg.get_run(rid).error


def test_resume_refuses_a_planted_last_pt(tmp_path, evil_pt):
    from npuyolo.train.trainer import TrainError, resume_run

    path, marker = evil_pt
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    planted = Path(reg.get_run(rid).save_dir) / "weights" / "last.pt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(path.read_bytes())
    with pytest.raises(TrainError, match="refused to load"):
        resume_run(reg, rid)
    assert not marker.exists()
    assert reg.get_run(rid).status == "interrupted"  # not claimed, not left running


def test_resume_refuses_a_planted_best_pt_that_ultralytics_would_open_at_the_end(tmp_path, evil_pt):
    from npuyolo.train.trainer import TrainError, resume_run

    path, marker = evil_pt
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    wdir = Path(reg.get_run(rid).save_dir) / "weights"
    save_ultralytics_checkpoint(wdir / "last.pt", epoch=0)
    (wdir / "best.pt").write_bytes(path.read_bytes())
    with pytest.raises(TrainError, match="best.pt: refused to load"):
        resume_run(reg, rid)
    assert not marker.exists() and reg.get_run(rid).status == "interrupted"


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_corrupt_last_pt_is_explained_and_offers_good_checkpoints(tmp_path, damage):
    from npuyolo.train.trainer import PREVIOUS, TrainError, _resume_checkpoint

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    wdir = Path(reg.get_run(rid).save_dir) / "weights"
    last = save_ultralytics_checkpoint(wdir / "last.pt", epoch=4)
    save_ultralytics_checkpoint(wdir / PREVIOUS, epoch=3)
    save_ultralytics_checkpoint(wdir / "best.pt", epoch=2)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    run = reg.get_run(rid)
    with pytest.raises(TrainError) as e:
        _resume_checkpoint(run, wdir.parent, "last")
    msg = str(e.value)
    assert ("truncated" in msg if damage == "truncate" else "empty" in msg)
    assert "--from previous` (epoch 4)" in msg and "--from best` (epoch 3)" in msg
    assert _resume_checkpoint(run, wdir.parent, "best") == (wdir / "best.pt", 2)
    r = cli("train", "--resume", rid, registry=tmp_path / "r.db")
    assert "--from best" in one_line_error(r)


def test_resume_refuses_flags_it_would_ignore(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    out = one_line_error(cli("train", "--resume", rid, "--epochs", "26", "--act-anneal", "leaky0.3", registry=tmp_path / "r.db"))
    assert "--epochs" in out and "--act-anneal" in out


def test_deleting_the_registry_folder_during_a_train_fails_the_train(tmp_path, synth_data, monkeypatch):
    """It ended with exit 0 and status 'finished', with nothing on disk."""
    import shutil

    import npuyolo.train.trainer as trainer

    folder = tmp_path / "reg"
    real = trainer.trainer_for

    def deleting(recipe):
        class Deleting(real(recipe)):
            def train(self):
                shutil.rmtree(folder)  # what `rm -rf runs/` does while the run trains

        return Deleting

    monkeypatch.setattr(trainer, "trainer_for", deleting)
    out = one_line_error(cli("train", "--variant", "L4-relu", "--data", synth_data, "--epochs", "1", "--imgsz", "64",
                             "--workers", "0", registry=folder / "r.db"))
    assert "deleted" in out, out


def test_a_second_series_run_at_once_does_not_talk_about_name(tmp_path, synth_data):
    """The parallel `series run` that lost the race said "choose another --name"; series has no --name."""
    db = tmp_path / "r.db"
    reg = Registry(db)
    new_run(reg, name="s-L4-relu")  # what the other `series run` registered a moment before this one
    reg.close()
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\ndata: {synth_data}\nvariants: [L4-relu]\nrecipe: {{epochs: 1, imgsz: 64, workers: 0}}\n")
    r = cli("series", "run", spec, registry=db)  # a member banner comes first, then the one error line
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert "--name" not in errors[0] and "another run of this series" in errors[0], r.output


def test_a_resume_records_the_epochs_its_checkpoint_holds_but_the_registry_lost(tmp_path):
    """Ultralytics saves last.pt before the epoch is recorded: a Ctrl-C between the two resumed after an epoch the
    registry never saw (a Ray series showed epochs 1, 2, 4, 5...). The figures come back from results.csv."""
    from npuyolo.train.trainer import backfill_epochs

    from .helpers import new_run

    reg = Registry(tmp_path / "npuyolo.db")
    run_id = new_run(reg)
    reg.record_epoch(run_id, 1, box_loss=6.1, map50=0.0)
    folder = tmp_path / "run"
    folder.mkdir()
    assert backfill_epochs(reg, run_id, folder, 3) == []  # no results.csv: nothing to take
    header = "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B)," \
             "metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0,lr/pg1,lr/pg2"
    rows = ["1,4.5,6.1,5.3,4.3,0,0,0,0,6.2,5.1,4.1,0.0094,0.0094,0.0147",
            "2,9.0,5.6,4.9,4.0,0.1,0.2,0.05,0.02,6.2,5.1,4.1,0.0091,0.0091,0.0091",
            "3,13.25,5.2,4.5,3.8,0.3,0.25,0.12,0.06,6.0,5.0,4.0,0.0088,0.0088,0.0088",
            "4,17.5,5.0,4.4,3.7,0.3,0.3,0.15,0.07,5.9,4.9,3.9,0.0085,0.0085,0.0085"]
    (folder / "results.csv").write_text("\n".join([header, *rows]) + "\n")
    assert backfill_epochs(reg, run_id, folder, 3) == [2, 3]
    epochs = reg.get_run(run_id).epochs
    assert [e.epoch for e in epochs] == [1, 2, 3]  # epoch 4 is not in the checkpoint: the resume redoes it
    third = epochs[2]
    assert (third.box_loss, third.map50, third.map50_95, third.lr) == (5.2, 0.12, 0.06, 0.0088)
    assert third.epoch_time_s == pytest.approx(4.25) and third.extra == {"from_results_csv": 1.0}
    assert epochs[0].box_loss == 6.1 and epochs[0].extra is None  # a recorded epoch is never replaced


@pytest.mark.parametrize("command", [("train", "--resume", "base"), ("deploy", "qat", "base", "--data", "{data}"),
                                     ("prune", "base", "--data", "{data}")])
def test_a_recorded_recipe_this_npuyolo_refuses_is_one_line_naming_the_run(tmp_path, synth_data, command):
    """A run row keeps a setting npuyolo no longer has (RunRecipe.unknown()); resume, QAT and prune rebuild a training
    recipe from it, and pydantic's ValidationError came out as a traceback. Now one line naming the run and the setting,
    before anything trains."""
    import sqlite3

    from .helpers import cli, finished_run, one_line_error

    db = tmp_path / "r.db"
    reg, rid = finished_run(db)
    con = sqlite3.connect(db)
    recipe = json.loads(con.execute("SELECT recipe_json FROM runs WHERE id = ?", (rid,)).fetchone()[0])
    status = "interrupted" if command[0] == "train" else "finished"
    con.execute("UPDATE runs SET recipe_json = ?, status = ? WHERE id = ?",
                (json.dumps({**recipe, "retired_setting": 1}), status, rid))
    con.commit()
    con.close()
    out = one_line_error(cli(*(a.format(data=synth_data) for a in command), registry=db))
    assert "run base's recorded recipe" in out and "retired_setting" in out
    assert [r.id for r in Registry(db).runs()] == [rid]  # nothing trained, no new run
