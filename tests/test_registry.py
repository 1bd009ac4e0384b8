from pathlib import Path

import sqlite3
import subprocess
import sys

import pytest

from npuyolo.registry.db import Registry, RegistryError
from npuyolo.registry.schema import SCHEMA_VERSION


def new_run(reg: Registry, **kw) -> int:
    args = dict(name=None, variant="L4-leaky", recipe={"epochs": 2}, data_path="/d/data.yaml", data_hash="abc",
                class_names=["a", "b"], weights_source=None, device="cpu", versions={"torch": "x"})
    return reg.create_run(**{**args, **kw})


def test_schema_is_migrated_and_versioned(tmp_path):
    reg = Registry(tmp_path / "r.db")
    assert reg.schema_version == SCHEMA_VERSION
    reg.close()
    reg = Registry(tmp_path / "r.db")  # re-open: no migration re-run
    assert reg.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    Registry(tmp_path / "r.db").close()
    con = sqlite3.connect(tmp_path / "r.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(RegistryError, match="Upgrade npuyolo"):
        Registry(tmp_path / "r.db")


def test_run_lifecycle(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    assert reg.get_run(rid).name == f"L4-leaky-{rid}" and reg.get_run(rid).status == "running"
    reg.record_epoch(rid, 1, box_loss=1.0, map50=0.1, epoch_time_s=2.0)
    reg.record_epoch(rid, 2, box_loss=0.5, map50=0.3, epoch_time_s=3.0)
    reg.add_artifact(rid, "weights/best", "/x/best.pt")
    reg.set_status(rid, "finished")
    run = reg.get_run(f"L4-leaky-{rid}")
    assert run.status == "finished" and run.duration_s == 5.0 and run.ended_at
    assert [e.epoch for e in run.epochs] == [1, 2] and run.epochs[1].map50 == 0.3
    assert run.artifacts[0].path == "/x/best.pt"
    assert reg.runs()[0].map50 == 0.3


def test_unknown_run_and_bad_epoch_field(tmp_path):
    reg = Registry(tmp_path / "r.db")
    with pytest.raises(RegistryError, match="no run '42'"):
        reg.get_run(42)
    rid = new_run(reg)
    with pytest.raises(ValueError):
        reg.record_epoch(rid, 1, bogus=1.0)


def test_failed_write_rolls_back(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    with pytest.raises(RuntimeError):
        with reg.tx() as c:
            c.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (rid,))
            raise RuntimeError("boom")
    assert reg.get_run(rid).status == "running"


def test_dead_process_runs_are_marked_interrupted_on_open(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    reg.update_run(rid, pid=proc.pid, pid_started="1")  # a process that has exited
    alive = new_run(reg)  # owned by this (live) test process
    reg.close()
    reg = Registry(tmp_path / "r.db")
    assert reg.get_run(rid).status == "interrupted"
    assert reg.get_run(alive).status == "running"


def test_truncate_epochs(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    for e in range(1, 5):
        reg.record_epoch(rid, e, box_loss=float(e))
    assert reg.truncate_epochs(rid, 2) == 2
    assert [e.epoch for e in reg.epochs(rid)] == [1, 2]


def test_names_are_unique_and_derived_names_get_a_suffix(tmp_path):
    reg = Registry(tmp_path / "r.db")
    new_run(reg, name="a-pruned0.3")
    with pytest.raises(RegistryError, match="already exists"):
        new_run(reg, name="a-pruned0.3")
    assert reg.unique_name("a-pruned0.3") == "a-pruned0.3-2"
    new_run(reg, name="a-pruned0.3-2")
    assert reg.unique_name("a-pruned0.3") == "a-pruned0.3-3" and reg.unique_name("fresh") == "fresh"


def test_runs_export_to_mlflow(tmp_path, monkeypatch):
    """Registry runs land in an MLflow store with params, per-epoch metrics and artefacts; a second export skips them."""
    import json

    import mlflow
    from typer.testing import CliRunner

    from npuyolo.cli import app
    from npuyolo.train.recipe import Recipe

    reg = Registry(tmp_path / "r.db")
    rid = reg.create_run(name="leaky", variant="L4-leaky", recipe=Recipe.load(epochs=2).model_dump(), data_path="d.yaml",
                         data_hash="h", class_names=["a"], weights_source=None, device="cpu", versions={})
    for e in (1, 2):
        reg.record_epoch(rid, e, map50=0.1 * e, map50_95=0.05 * e, precision=0.3, recall=0.2, extra={"act_slope": 0.1 / e})
    reports = Path(reg.get_run(rid).save_dir) / "reports"
    reports.mkdir()
    (reports / "report_1_en.md").write_text("# report\n")
    reg.set_status(rid, "finished")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner()
    r = runner.invoke(app, ["runs", "export", "--mlflow", uri, "--json"], env={"NPUYOLO_REGISTRY": str(reg.path)})
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["action"] == "exported"
    client = mlflow.MlflowClient(uri)
    got = client.get_run(rows[0]["mlflow_run_id"])
    assert got.data.params["recipe.lr0"] == "0.003" and got.data.tags["npuyolo.variant"] == "L4-leaky"
    assert [m.value for m in client.get_metric_history(got.info.run_id, "map50")] == [0.1, 0.2]
    assert [m.step for m in client.get_metric_history(got.info.run_id, "extra/act_slope")] == [1, 2]
    assert [a.path for a in client.list_artifacts(got.info.run_id, "reports")] == ["reports/report_1_en.md"]
    assert Registry(reg.path).get_run(rid).artifact("tracker/mlflow").meta["run_id"] == got.info.run_id
    again = json.loads(runner.invoke(app, ["runs", "export", "--mlflow", uri, "--json"], env={"NPUYOLO_REGISTRY": str(reg.path)}).stdout)
    assert again[0]["action"] == "already exported"


def test_registry_from_before_amp_and_stopped_is_upgraded_in_place(tmp_path):
    """Schema 4 (no `amp` column, no `stopped` status) -> current: rows and epochs kept, `stopped` allowed, the
    status check still refusing anything else; a read-only open of the old file upgrades only its in-memory copy."""
    from npuyolo.registry.schema import MIGRATIONS

    db = tmp_path / "old.db"
    con = sqlite3.connect(db, isolation_level=None)
    for v in range(4):
        con.executescript(MIGRATIONS[v])
    con.execute("PRAGMA user_version = 4")
    con.execute("INSERT INTO runs (name, variant, status, recipe_json, data_path, data_hash, class_names, versions_json,"
                " started_at) VALUES ('old', 'L4-relu', 'finished', '{}', '/d', 'h', '[]', '{}', 'then')")
    con.execute("INSERT INTO epochs (run_id, epoch, map50, recorded_at) VALUES (1, 1, 0.5, 'then')")
    con.close()
    assert Registry(db, readonly=True).get_run("old").amp is None and sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 4
    reg = Registry(db)
    assert reg.schema_version == SCHEMA_VERSION and reg.get_run("old").epochs[0].map50 == 0.5 and reg.get_run("old").amp is None
    rid = new_run(reg)
    reg.set_status(rid, "stopped", error="stopped early")
    reg.update_run(rid, amp=1)
    assert reg.get_run(rid).status == "stopped" and reg.get_run(rid).amp is True
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # the table itself (set_status refuses it earlier)
        reg.update_run(rid, status="bogus")
    assert reg.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reg.close()
    assert Registry(db).schema_version == SCHEMA_VERSION  # re-open: nothing re-run


@pytest.mark.parametrize("column", ["status = 'finished', name", "name = 'x' WHERE 1; --", "nope"])
def test_update_run_writes_only_real_columns(tmp_path, column):
    """Column names were pasted into the SQL: a hostile one rewrote other columns (or every run)."""
    reg = Registry(tmp_path / "r.db")
    rid, other = new_run(reg), new_run(reg, name="other")
    with pytest.raises(RegistryError) as e:
        reg.update_run(rid, **{column: "x"})
    assert "\n" not in str(e.value)
    rows = {r["id"]: (r["name"], r["status"]) for r in reg.conn.execute("SELECT id, name, status FROM runs")}
    assert rows[rid][1] == "running" and rows[other] == ("other", "running") and rows[rid][0] != "x"


def test_the_update_allow_list_is_every_runs_column_but_the_id(tmp_path):
    from npuyolo.registry.schema import RUN_COLUMNS, RunStatus

    reg = Registry(tmp_path / "r.db")
    assert RUN_COLUMNS == {r[1] for r in reg.conn.execute("PRAGMA table_info(runs)")} - {"id"}
    assert {s.value for s in RunStatus} | {"x"} >= {"running", "finished", "failed", "interrupted", "stopped"}
    sql = reg.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    assert all(f"'{s.value}'" in sql for s in RunStatus)  # every status the code has, the table accepts
    rid = new_run(reg)
    reg.set_status(rid, RunStatus.FINISHED)
    assert reg.conn.execute("SELECT status FROM runs WHERE id = ?", (rid,)).fetchone()[0] == "finished" == RunStatus.FINISHED
    with pytest.raises(ValueError):
        reg.set_status(rid, "done")


def test_every_table_reads_back_as_a_typed_row(tmp_path):
    """runs(), npu_checks(), compiler_runs(), deploy_evals() and series() returned dicts with string keys (and a
    RunRecord answered run["status"] through a shim): now each is a dataclass, and a misspelt field fails loudly."""
    from npuyolo.registry.db import CompilerRunRow, DeployEvalRow, NpuCheckRow, RunSummary, SeriesMember, SeriesRecord

    reg = Registry(tmp_path / "r.db")
    rid = reg.create_run(name="typed", variant="L4-relu", recipe={"epochs": 1}, data_path="d", data_hash="h",
                         class_names=["a"], weights_source=None, device="cpu", versions={})
    reg.record_epoch(rid, 1, map50=0.4)
    reg.upsert_series("s", {"data": "d", "variants": ["L4-relu"]})
    reg.set_series_member("s", "L4-relu", rid)
    report = {"target": "relu-only", "share_nodes": 1.0, "share_nodes_fused": 1.0, "share_macs": 1.0, "partitions_npu": 1,
              "partitions_host": 0, "transitions": 0}
    reg.add_npu_check(run_id=rid, model_ref="typed", onnx_path="m.onnx", head="npu", report=report)
    reg.add_compiler_run(run_id=rid, model_ref="typed", onnx_path="m.onnx", compiler="rknn", version="2", target="rknn-rk3588",
                         log_path="l", result={"ok": True})
    reg.add_deploy_eval(run_id=rid, artefact="m.onnx", precision_kind="fp32",
                        result={"map50": 0.4, "map50_95": 0.2, "precision": 0.5, "recall": 0.5})
    [summary] = reg.runs()
    assert isinstance(summary, RunSummary) and (summary.name, summary.epochs, summary.map50) == ("typed", 1, 0.4)
    [check] = reg.npu_checks(run_id=rid)
    assert isinstance(check, NpuCheckRow) and check.target == "relu-only" and check.report == report
    [compiled] = reg.compiler_runs(run_id=rid)
    assert isinstance(compiled, CompilerRunRow) and compiled.result == {"ok": True}
    [scored] = reg.deploy_evals(rid)
    assert isinstance(scored, DeployEvalRow) and (scored.precision_kind, scored.map50) == ("fp32", 0.4)
    series = reg.series("s")
    assert isinstance(series, SeriesRecord) and series.members == [SeriesMember("L4-relu", rid, "running")]
    with pytest.raises(TypeError):
        reg.get_run(rid)["status"]  # noqa: B018  (the shim is gone: attributes only)


def test_epoch_rows_are_typed_and_keep_their_json_form(tmp_path):
    from npuyolo.registry.db import EpochRow

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.record_epoch(rid, 1, box_loss=1.0, map50=0.25)
    reg.record_epoch(rid, 2, extra={"kd_cls": 0.5}, box_loss=0.5, map50=0.5)
    first, second = reg.get_run(rid).epochs
    assert isinstance(first, EpochRow) and first.value("map50") == 0.25 and first.extra is None
    assert "extra" not in first.as_dict() and second.as_dict()["extra"] == {"kd_cls": 0.5}  # runs show --json as before
    assert EpochRow.from_dict(second.as_dict()) == second
    with pytest.raises(KeyError, match="no epoch column 'mAP50'"):
        first.value("mAP50")


def v6_registry(path: Path, check: str) -> Path:
    """A schema-6 registry (before the `stopped` status) whose runs CHECK reads `check`, with one finished run."""
    from npuyolo.registry.schema import MIGRATIONS

    con = sqlite3.connect(path, isolation_level=None)
    for v in range(6):
        con.executescript(MIGRATIONS[v].replace("CHECK (status IN ('running', 'finished', 'failed', 'interrupted'))", check))
    con.execute("PRAGMA user_version = 6")
    con.execute("INSERT INTO runs (name, variant, status, recipe_json, data_path, data_hash, class_names, versions_json,"
                " started_at) VALUES ('old', 'L4-relu', 'finished', '{}', '/d', 'h', '[]', '{}', 'then')")
    con.close()
    return path


def test_a_v6_registry_whose_check_differs_in_spacing_is_upgraded(tmp_path):
    """Issue 36: a CHECK text one space off made every command, `npuyolo runs` too, end in a ValueError traceback."""
    db = v6_registry(tmp_path / "spaced.db", "CHECK (status IN ('running', 'finished',  'failed', 'interrupted' ))")
    assert [r.name for r in Registry(db, readonly=True).runs()] == ["old"]
    reg = Registry(db)
    rid = new_run(reg)
    reg.set_status(rid, "stopped")
    assert reg.get_run(rid).status == "stopped"
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        reg.update_run(rid, status="bogus")


def test_a_v6_registry_with_a_foreign_check_is_one_line_and_still_lists(tmp_path):
    db = v6_registry(tmp_path / "odd.db", "CHECK (length(status) > 0)")
    assert [r.name for r in Registry(db, readonly=True).runs()] == ["old"]  # read commands still list
    with pytest.raises(RegistryError, match="CHECK") as e:
        Registry(db)
    assert "\n" not in str(e.value)
    from typer.testing import CliRunner

    from npuyolo.cli import app

    result = CliRunner().invoke(app, ["runs", "--registry", str(db)])
    assert result.exit_code == 0 and "old" in result.output, result.output


DAMAGE = {  # one column edited by hand: (SQL, the column the error must name)
    "recipe not JSON": ("UPDATE runs SET recipe_json = '{nope' WHERE id = 1", "recipe_json"),
    "recipe a list": ("UPDATE runs SET recipe_json = '[1]' WHERE id = 1", "recipe_json"),
    "recipe without its keys": ("UPDATE runs SET recipe_json = '{}' WHERE id = 1", "recipe_json"),
    "recipe epochs text": ("UPDATE runs SET recipe_json = '{\"epochs\": \"x\", \"imgsz\": 64}' WHERE id = 1", "recipe_json"),
    "best without precision": ("UPDATE runs SET best_json = '{\"map50\": 0.1}' WHERE id = 1", "best_json"),
    "best a list": ("UPDATE runs SET best_json = '[1]' WHERE id = 1", "best_json"),
    "epochs.map50 text": ("UPDATE epochs SET map50 = 'abc' WHERE run_id = 1", "epochs.map50"),
    "duration_s text": ("UPDATE runs SET duration_s = 'long' WHERE id = 1", "duration_s"),
    "pid text": ("UPDATE runs SET pid = 'x', status = 'running', host = (SELECT host FROM runs WHERE id = 2) WHERE id = 1", "pid"),
    "meta_json broken": ("UPDATE artifacts SET meta_json = '{' WHERE run_id = 1", "artifacts.meta_json"),
    "extra_json broken": ("UPDATE epochs SET extra_json = '[' WHERE run_id = 1", "epochs.extra_json"),
    "class_names broken": ("UPDATE runs SET class_names = 'x' WHERE id = 1", "class_names"),
    # JSON that json.loads reads (600 levels) but the typed recipe's copy of it (two frames a level) could not: a traceback
    "recipe nested deep": ("UPDATE runs SET recipe_json = '{\"epochs\": 1, \"imgsz\": 64, \"x\": " + "[" * 600 + "]" * 600
                           + "}' WHERE id = 1", "recipe_json"),
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A series of two finished runs, as training records them."""
    import json

    from npuyolo.train.recipe import Recipe

    db = tmp_path_factory.mktemp("damage") / "base.db"
    reg = Registry(db)
    reg.upsert_series("s", {"name": "s", "data": "/d.yaml", "variants": ["L4-relu", "L4-leaky"]})
    for v in ("L4-relu", "L4-leaky"):
        rid = new_run(reg, name=f"s-{v}", variant=v, series="s", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump())
        reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, extra={"kd": 0.5})
        reg.update_run(rid, best_json=json.dumps({"map50": 0.1, "map50_95": 0.05, "precision": 0.2, "recall": 0.1}),
                       duration_s=12.0)
        reg.add_artifact(rid, "weights/best", db.parent / "best.pt", {"k": 1})
        reg.set_status(rid, "finished")
        reg.set_series_member("s", v, rid)
    reg.close()
    return db


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_row_is_one_line_naming_run_and_column_and_the_others_still_list(two_runs, tmp_path, case):
    """Issue 36: a hand-edited registry row gave tracebacks in runs, runs show, report and series rank."""
    import shutil

    from typer.testing import CliRunner

    from npuyolo.cli import app
    from npuyolo.registry.db import DamagedRowError

    sql, column = DAMAGE[case]
    db = Path(shutil.copyfile(two_runs, tmp_path / "r.db"))
    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()
    reg = Registry(db, readonly=True)
    if case != "recipe without its keys":  # the registry holds partial recipes (tests, old runs): the report needs them all
        with pytest.raises(DamagedRowError) as e:
            reg.get_run(1)
        assert "run 1" in str(e.value) and column in str(e.value) and "\n" not in str(e.value)
    rows, damaged = reg.runs_checked()
    assert [r.id for r in rows] == [2] or ([r.id for r in rows] == [1, 2] and not damaged)
    assert reg.get_run(2).name == "s-L4-leaky"
    listed = CliRunner().invoke(app, ["runs", "--registry", str(db)])
    assert listed.exit_code == 0 and "s-L4-leaky" in listed.output, listed.output
    for argv in (["runs", "--registry", str(db), "show", "1"], ["report", "1", "--out", str(tmp_path / "rep"), "--registry", str(db)],
                 ["series", "rank", "s", "--registry", str(db)]):
        result = CliRunner().invoke(app, argv)
        assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.exception)
        assert result.exit_code in (0, 2), (argv, result.output)
        if result.exit_code == 2:
            assert "run 1" in result.output and column in result.output, (argv, result.output)


def test_a_variant_holding_rich_markup_is_printed_as_text(two_runs, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from npuyolo.cli import app

    db = Path(shutil.copyfile(two_runs, tmp_path / "r.db"))
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET variant = '[/]' WHERE id = 1")
    con.commit()
    con.close()
    result = CliRunner().invoke(app, ["runs", "--registry", str(db), "show", "1"])
    assert result.exit_code == 0 and "variant [/]" in result.output, result.output


# ------------------------------------------------------------------------------------------------ hostile and careless input (the former test_hostile*.py)
"""Run folders and names, read commands that write nothing, broken or odd registry files, a full disk, registries
opened at once, MLflow stores: each reproducer failed before its fix. Runs here are L4-relu rows made without training."""
import errno
import functools
import hashlib
import json
import multiprocessing
import os
import socket
import threading
import time

from .helpers import cli, finished_run, one_error_line, one_line_error, refuse_writes, run_cli
from .helpers import new_run as new_relu_run

@pytest.mark.parametrize("first,second", [("한국어 런", "테스트"), ("a/b", "a_b"), ("..", "x")])
def test_every_run_owns_its_folder(tmp_path, first, second):
    reg = Registry(tmp_path / "r.db")
    a, b = reg.get_run(new_relu_run(reg, name=first)), reg.get_run(new_relu_run(reg, name=second))
    train = (tmp_path / "train").resolve()
    assert a.save_dir != b.save_dir
    for run in (a, b):
        folder = Path(run.save_dir)
        assert folder.is_dir() and folder.parent == train  # inside train/, never above it
    if first == "한국어 런":
        assert "한국어" in Path(a.save_dir).name and "테스트" in Path(b.save_dir).name  # Unicode stays readable


def test_two_registries_in_one_folder_never_share_a_run_folder(tmp_path):
    one, two = Registry(tmp_path / "a.db"), Registry(tmp_path / "b.db")
    r1, r2 = one.get_run(new_relu_run(one)), two.get_run(new_relu_run(two))
    assert r1.name == r2.name == "L4-relu-1"
    assert r1.save_dir != r2.save_dir


def test_traversal_names_cannot_leave_the_registry_folder(tmp_path):
    reg = Registry(tmp_path / "r.db")
    run = reg.get_run(new_relu_run(reg, name="../../etc/x"))
    deploy = reg.run_dir(run, "deploy")
    assert tmp_path.resolve() in deploy.parents
    assert not (tmp_path.parent / "etc").exists()


def test_auto_names_skip_taken_names(tmp_path):
    reg = Registry(tmp_path / "r.db")
    new_relu_run(reg, name="L4-relu-2")
    rid = new_relu_run(reg)  # would be L4-relu-2
    assert reg.get_run(rid).name == "L4-relu-2-2"


def test_ids_and_names_cannot_be_confused(tmp_path):
    reg = Registry(tmp_path / "r.db")
    for bad in ("1", "#1", "", "x\ny"):
        with pytest.raises(RegistryError):
            new_relu_run(reg, name=bad)
    rid = new_relu_run(reg, name="first")
    assert reg.resolve(f"#{rid}") == reg.resolve(str(rid)) == reg.resolve("first") == rid


def test_a_run_cannot_be_named_like_a_variant(tmp_path):
    reg = Registry(tmp_path / "r.db")
    with pytest.raises(RegistryError, match="reads as a variant"):
        new_relu_run(reg, name="L4-leaky")


def test_listing_runs_writes_nothing(tmp_path):
    db = tmp_path / "r.db"
    reg = Registry(db)
    rid = new_relu_run(reg)
    reg.update_run(rid, pid=2 ** 22 + 12345)  # a process that does not exist: reaping would write
    reg.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = cli("runs", "--json", registry=db)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["status"] == "interrupted"  # shown as it is...
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # ...without writing it
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "running"


def test_read_commands_never_create_a_registry(tmp_path):
    db = tmp_path / "typo" / "r.db"
    for args in (["runs"], ["runs", "show", "1"], ["series", "rank", "v3"], ["report", "1"]):
        one_line_error(cli(*args, registry=db))
    assert not db.exists() and not db.parent.exists()


def test_read_commands_leave_no_wal_or_shm_behind(tmp_path):
    db = tmp_path / "r.db"
    reg = Registry(db)
    new_relu_run(reg)
    reg.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    for args in (["runs"], ["runs", "show", "1"], ["series", "rank", "nope"]):
        cli(*args, registry=db)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.db")) == ["r.db"]


@pytest.mark.parametrize("kind", ["garbage", "directory", "negative_version", "foreign"])
def test_broken_registry_files_are_one_line_errors(tmp_path, kind):
    db = tmp_path / "r.db"
    if kind == "garbage":
        db.write_bytes(b"this is not sqlite" * 100)
    elif kind == "directory":
        db.mkdir()
    elif kind == "negative_version":
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = -1")
        con.close()
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (x)")
        con.close()
    for args in (["runs"], ["train", "--resume", "1"]):
        one_line_error(cli(*args, registry=db))
    if kind == "negative_version":  # no migration was run over it
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


@pytest.mark.parametrize("message", ["database or disk is full", "disk I/O error"])
@pytest.mark.parametrize("command", [["runs"], ["train", "--variant", "L4-relu", "--data", "{data}", "--epochs", "1"]])
def test_a_registry_on_a_full_disk_says_disk_full(tmp_path, synth_data, monkeypatch, message, command):
    """Seen on a full tmpfs: SQLite cannot grow the -shm ('disk I/O error', SQLITE_IOERR_SHMSIZE) and npuyolo said
    'not an npuyolo registry', although the file is fine and works again once space is freed."""
    db = tmp_path / "reg" / "r.db"
    finished_run(db)[0].close()

    class FullDisk(sqlite3.Connection):
        def execute(self, *a, **k):
            raise sqlite3.OperationalError(message)

    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=FullDisk))
    refuse_writes(monkeypatch, db.parent, errno.ENOSPC)
    out = one_line_error(cli(*(a.format(data=synth_data) for a in command), registry=db))
    assert "disk full" in out and "not an npuyolo registry" not in out, out
    monkeypatch.undo()
    assert cli("runs", registry=db).exit_code == 0


def test_a_registry_that_is_not_a_regular_file_is_refused(tmp_path):
    """--registry /dev/null made SQLite create /dev/null-journal."""
    journal = Path("/dev/null-journal")
    existed = journal.exists()
    try:
        for command in (["runs"], ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", "64"]):
            assert "not a regular file" in one_line_error(cli(*command, registry=Path("/dev/null")))
        assert journal.exists() == existed
    finally:
        if journal.exists() and not existed:
            journal.unlink()


def _open_registry(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        reg = Registry(path)
        results.put(("ok", reg.schema_version))
        reg.close()
    except Exception as e:  # what a crashing opener raised, reported to the test
        results.put(("error", repr(e)))


def test_processes_opening_one_new_registry_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for trial in range(3):
        path = str(tmp_path / f"r{trial}.db")
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_registry, args=(path, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == [("ok", Registry(path).schema_version)] * 6, got


def test_threads_opening_one_new_registry_at_once(tmp_path):
    class Results(list):
        put = list.append

    for trial in range(3):
        path = str(tmp_path / f"r{trial}.db")
        barrier, results = threading.Barrier(6), Results()
        threads = [threading.Thread(target=_open_registry, args=(path, barrier, results)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert [r[0] for r in results] == ["ok"] * 6, results
    reg = Registry(tmp_path / "r0.db")  # one transaction made every table, the newest status allowed included
    run = new_relu_run(reg)
    reg.set_status(run, "stopped")
    assert reg.get_run(run).status == "stopped"


def test_schema_version_and_tables_are_read_in_one_snapshot(tmp_path):
    """Another opener committing the schema between the version read and the table read made a registry being created
    look like a foreign SQLite file ('not an npuyolo registry'); seen once in six threads opening one new registry."""
    import sqlite3

    from npuyolo.registry.db import Registry

    path = tmp_path / "r.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")

    class Rows:
        def __init__(self, rows):
            self.rows = rows

        def fetchone(self):
            return self.rows[0] if self.rows else None

        def fetchall(self):
            return self.rows

        def __iter__(self):
            return iter(self.rows)

    class Racing:
        """A connection after whose first statement another process creates the registry."""

        first = True

        def execute(self, *args):
            rows = conn.execute(*args).fetchall()
            if self.first:
                self.first = False
                Registry(path).close()
            return Rows(rows)

    probe = object.__new__(Registry)
    probe.path = path
    assert probe._check_version(Racing()) == 0  # what the snapshot saw: an empty file, then the lock sorts it out
    assert Registry(path).schema_version > 0


def test_a_name_typed_in_decomposed_unicode_finds_its_run(tmp_path):
    import unicodedata

    reg = Registry(tmp_path / "r.db")
    for name in ("한국어 런", "café"):
        run_id = new_relu_run(reg, name=name)
        typed = unicodedata.normalize("NFD", name)
        assert typed != name and reg.resolve(typed) == run_id
        r = cli("runs", "show", typed, "--json", registry=tmp_path / "r.db")
        assert r.exit_code == 0 and json.loads(r.output)["id"] == run_id, r.output


def test_mlflow_export_needs_a_registry_and_keeps_artefacts_beside_its_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo" / "r.db"
    assert "no registry" in one_line_error(cli("runs", "export", "--mlflow", "sqlite:///x.db", registry=missing))
    assert not missing.exists()
    reg = Registry(tmp_path / "r.db")
    rid = new_relu_run(reg)
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


def test_mlflow_export_to_a_dead_server_fails_fast(tmp_path):
    reg = Registry(tmp_path / "r" / "npuyolo.db")
    new_relu_run(reg, name="one")
    reg.close()
    rc, said, took = run_cli("runs", "export", "--mlflow", "http://127.0.0.1:9", "--registry", tmp_path / "r" / "npuyolo.db",
                             cwd=tmp_path, timeout=60)
    assert "cannot be reached" in one_error_line(rc, said)
    assert took < 30


def test_mlflow_export_to_a_stalled_server_times_out(tmp_path, monkeypatch):
    """A server that accepts the connection but never answers: MLflow's own timeout, shortened, ends it."""
    from npuyolo.registry import mlflow_export
    from npuyolo.registry.mlflow_export import MlflowExportError, export_runs

    for k in mlflow_export.HTTP_DEFAULTS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setitem(mlflow_export.HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    reg = Registry(tmp_path / "npuyolo.db")
    new_relu_run(reg, name="one")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        t0 = time.monotonic()
        with pytest.raises(MlflowExportError) as e:
            export_runs(reg, f"http://127.0.0.1:{server.getsockname()[1]}")
        assert time.monotonic() - t0 < 15
    assert "\n" not in str(e.value)
    assert not any(k in os.environ for k in mlflow_export.HTTP_DEFAULTS)  # the defaults were only lent


def test_mlflow_export_into_the_registry_itself_is_refused(tmp_path):
    db = tmp_path / "r" / "npuyolo.db"
    reg = Registry(db)
    new_relu_run(reg, name="one")
    reg.close()
    (tmp_path / "r" / "alias.db").symlink_to("npuyolo.db")
    tables = lambda: sorted(r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'"))  # noqa: E731
    before = tables()
    for uri in (f"sqlite:///{db}", f"sqlite:///{tmp_path / 'r' / 'alias.db'}"):
        result = cli("runs", "export", "--mlflow", uri, registry=db)
        assert result.exit_code == 2 and "registry itself" in result.output, result.output
    assert tables() == before
