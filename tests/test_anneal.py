"""Activation annealing (LeakyReLU -> exactly ReLU) and the relu-gap study."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest
from torch import nn

from npuyolo.deploy.export import export_onnx
from npuyolo.registry.db import Registry
from npuyolo.train.anneal import AnnealError, annealed_relus, parse_anneal, set_slope, with_anneal
from npuyolo.variants.build import activation_census, build_model

from .conftest import kill_after_first_epoch


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_slope_reaches_exactly_zero_at_end_and_stays(shape):
    s = parse_anneal("leaky0.1", epochs=10, window="2:6", shape=shape)
    slopes = [s.slope_at(e) for e in range(1, 11)]
    assert slopes[:2] == [0.1, 0.1]  # full slope up to START
    assert all(a > b for a, b in zip(slopes[1:5], slopes[2:6]))  # falls strictly from START to END
    assert slopes[5:] == [0.0] * 5  # exactly 0 from END on, never back
    assert parse_anneal("leaky0.2", epochs=8).as_dict() == {"source": "leaky", "slope": 0.2, "start": 1, "end": 4, "shape": "linear"}


@pytest.mark.parametrize("args,match", [
    (("relu", 10), "LeakyReLU with a slope"), (("leaky0.1", 1), "at least 2 epochs"), (("leaky0.1", 10, "6:3"), "START < END"),
    (("leaky0.1", 10, "1:11"), "START < END"), (("leaky0.1", 10, "x"), "START:END"), (("leaky0.1", 10, None, "step"), "schedule"),
])
def test_bad_schedules(args, match):
    with pytest.raises(AnnealError, match=match):
        parse_anneal(*args)


def test_anneal_options_need_a_source(tiny_recipe):
    with pytest.raises(AnnealError, match="need `act_anneal`"):
        with_anneal(tiny_recipe, None, "1:2")


def test_set_slope_touches_only_relu_positions():
    model = build_model("L4-hybrid:backbone=relu,neck=leaky,head=leaky", nc=2)
    before = activation_census(model)
    assert set_slope(model, 0.1) == before["ReLU"]  # every backbone ReLU, nothing of the LeakyReLU(0.1) stages
    assert activation_census(model) == {"LeakyReLU": before["ReLU"] + before["LeakyReLU"]}
    assert set_slope(model, 0.05) == before["ReLU"]
    assert {m.act.negative_slope for m in annealed_relus(model)} == {0.05}
    set_slope(model, 0.0)
    assert activation_census(model) == before and all(type(m.act) is nn.ReLU for m in annealed_relus(model))


def op_census(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.slow
def test_annealed_run_is_a_relu_network_with_the_plain_export(synth_data, tiny_recipe, tmp_path):
    from npuyolo.train.trainer import train_variant
    from npuyolo.variants.checkpoint import load_weights

    reg = Registry(tmp_path / "r.db")
    recipe = with_anneal(tiny_recipe.model_copy(update={"epochs": 3}), "leaky0.1", "1:2")
    result = train_variant(reg, "L4-relu", synth_data, recipe, verbose=False)
    run = reg.get_run(result.run_id)
    assert [e.extra["act_slope"] for e in run.epochs] == [0.1, 0.0, 0.0]
    assert run.recipe.act_anneal["end"] == 2
    best = load_weights(run.artifact_path("weights/best"))
    assert set(activation_census(best)) == {"ReLU"}
    annealed = op_census(export_onnx(best, tmp_path / "annealed.onnx", imgsz=64))
    plain = op_census(export_onnx(build_model("L4-relu", nc=6), tmp_path / "plain.onnx", imgsz=64))
    assert annealed == plain and "LeakyRelu" not in annealed


@pytest.mark.slow
def test_killed_annealed_run_resumes_with_the_right_slope(synth_data, tmp_path):
    from npuyolo.train.trainer import resume_run

    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "npuyolo.cli", "train", "--variant", "L4-relu", "--data", str(synth_data), "--epochs", "3",
           "--imgsz", "64", "--batch", "8", "--workers", "0", "--act-anneal", "leaky0.1", "--anneal-epochs", "1:3"]
    kill_after_first_epoch(cmd, db, 1)
    reg = Registry(db)
    assert reg.get_run(1).status == "interrupted"
    resume_run(reg, 1, verbose=False)
    run = reg.get_run(1)
    assert run.status == "finished"
    assert [(e.epoch, e.extra["act_slope"]) for e in run.epochs] == [(1, 0.1), (2, 0.05), (3, 0.0)]
    from npuyolo.variants.checkpoint import load_weights

    assert set(activation_census(load_weights(run.artifact_path("weights/best")))) == {"ReLU"}


def test_anneal_refuses_a_variant_without_relu(synth_data, tiny_recipe, tmp_path):
    from npuyolo.train.trainer import TrainError, train_variant

    recipe = with_anneal(tiny_recipe.model_copy(update={"epochs": 2}), "leaky0.1")
    with pytest.raises(TrainError, match="no ReLU"):
        train_variant(Registry(tmp_path / "r.db"), "L4-leaky", synth_data, recipe, verbose=False)


@pytest.mark.slow
def test_relu_gap_study_writes_a_complete_table_for_two_seeds(synth_data, tmp_path):
    from typer.testing import CliRunner

    from npuyolo.cli import app

    db = tmp_path / "r.db"
    rec = tmp_path / "rec.yaml"
    rec.write_text("{batch: 8, workers: 0}\n")
    r = CliRunner().invoke(app, ["study", "relu-gap", "--data", str(synth_data), "--epochs", "2", "--imgsz", "64", "--seeds", "0,1",
                                 "-t", "relu-only", "--recipe", str(rec), "--json"], env={"NPUYOLO_REGISTRY": str(db)})
    assert r.exit_code == 0, r.output
    import json

    out = json.loads(r.stdout[r.stdout.index("{"):])
    rows = {row["route"]: row for row in out["rows"]}
    assert list(rows) == ["leaky", "relu", "distill", "anneal"]
    reg = Registry(db, readonly=True)
    for row in rows.values():
        assert row["seeds"] == [0, 1] and len(row["runs"]) == 2 and len(row["map50"]) == 2 and row["cost_s"] > 0
        assert all(reg.get_run(rid).status == "finished" and reg.get_run(rid).recipe.seed == seed for rid, seed in zip(row["runs"], [0, 1]))
        share = row["npu"]["relu-only"]["share_nodes"]
        assert share == 1.0 if row["variant"] == "L4-relu" else 0.5 < share < 1.0  # LeakyRelu leaves a ReLU-only NPU
    for route in ("relu", "distill", "anneal"):  # each gap carries an interval over images and seeds, and a verdict
        low, high = rows[route]["gap_interval_pp"]["map50"]
        assert low <= rows[route]["gap_pp"]["map50"] <= high or abs(high - low) < 1e-9
        assert rows[route]["gap_verdict"]["map50"] in ("ahead", "tied", "behind")
    assert rows["leaky"]["gap_interval_pp"]["map50"] is None
    for seed, rid in enumerate(rows["distill"]["runs"]):  # each student learned from its own seed's teacher
        assert reg.get_run(rid).recipe.distill["teacher_run"] == rows["leaky"]["runs"][seed]
    assert rows["distill"]["cost_s"] > reg.get_run(rows["distill"]["runs"][0]).duration_s  # teacher time included
    assert reg.series("relu-gap").spec["kind"] == "study:relu-gap" and len(reg.series("relu-gap").spec["table"]) == 4
    for lang in ("en", "ko"):
        text = Path(next(p for p in out["reports"] if p.endswith(f"_{lang}.md"))).read_text()
        assert text.count("| leaky (L4-leaky)") == 1 and "anneal (L4-relu)" in text
        assert ("over images and seeds its 95% interval is" if lang == "en" else "이미지와 시드를 함께 고려한 95% 구간") in text
    # re-running continues: nothing is trained twice
    again = CliRunner().invoke(app, ["study", "relu-gap", "--data", str(synth_data), "--epochs", "2", "--imgsz", "64", "--seeds", "0,1",
                                     "-t", "relu-only", "--recipe", str(rec), "--json"], env={"NPUYOLO_REGISTRY": str(db)})
    assert again.exit_code == 0 and len(Registry(db, readonly=True).runs()) == 8


# ------------------------------------------------------------------------------------------------ hostile input (the former test_hostile2.py)
import sqlite3

from .helpers import cli, one_line_error

def test_recipe_file_anneal_schedules_get_the_same_checks(tmp_path, synth_data):
    for body, expect in (("act_anneal: {source: leaky, slope: 0.5, start: 1, end: 99, shape: linear}\n", "START < END"),
                         ("act_anneal: {foo: 1}\n", "act_anneal needs exactly")):
        rec = tmp_path / "rec.yaml"
        rec.write_text(body)
        r = cli("train", "--variant", "L4-relu", "--data", synth_data, "--epochs", "2", "--recipe", rec, registry=tmp_path / "r.db")
        assert expect in one_line_error(r)
    assert Registry(tmp_path / "r.db").runs() == []


def test_study_names_are_checked_before_anything_is_written(tmp_path, synth_data):
    reg = Registry(tmp_path / "r.db")
    reg.upsert_series("plain", {"variants": ["L4-relu"], "name": "plain"})
    db = tmp_path / "r.db"
    assert "already an ordinary series" in one_line_error(cli("study", "relu-gap", "--data", synth_data, "--name", "plain", registry=db))
    assert "1 to 60 printable" in one_line_error(cli("study", "relu-gap", "--data", synth_data, "--name", "x" * 300, registry=db))
    one_line_error(cli("study", "relu-gap", "--data", tmp_path / "nope.yaml", "--name", "nodata", registry=db))
    names = [r[0] for r in sqlite3.connect(db).execute("SELECT name FROM series")]
    assert names == ["plain"] and Registry(db).series("plain").spec.get("kind") is None


def test_a_study_member_with_a_hand_edited_distill_setting_is_tabled(tmp_path):
    """A run's recorded recipe is read back typed (RunRecipe), its `distill` unchecked: the study table read every
    member's `distill.get("teacher_run")`, so a relu member whose row holds distill as text stopped `study report` with
    AttributeError's traceback (before the typed recipe only distill members read it), and a distill member whose
    teacher_run is a list with TypeError (unhashable). Such a setting names no teacher: the member costs its own time."""
    import json

    from npuyolo.study.relu_gap import KIND, ROUTES, study_table

    from .helpers import new_run

    db = tmp_path / "r.db"
    reg = Registry(db)
    routes = ("leaky", "relu", "distill")
    reg.upsert_series("st", {"kind": KIND, "name": "st", "data": "/d.yaml", "variants": [f"{r}/s0" for r in routes],
                             "routes": list(routes), "seeds": [0], "route_variants": {r: list(ROUTES[r]) for r in routes},
                             "targets": ["relu-only"], "anneal": None, "recipe_resolved": {"epochs": 1, "imgsz": 64,
                                                                                         "lr0": 0.01, "batch": 8}})
    ids = {}
    for route in routes:
        ids[route] = new_run(reg, name=f"st-{route}", variant=ROUTES[route][0], series="st")
        reg.record_epoch(ids[route], 1, map50=0.5, map50_95=0.3, precision=0.6, recall=0.5, epoch_time_s=3.0)
        reg.set_status(ids[route], "finished")
        reg.set_series_member("st", f"{route}/s0", ids[route])
    con = sqlite3.connect(db)
    for route, distill in (("relu", "x"), ("distill", {"teacher_run": [ids["leaky"]]})):
        recipe = json.loads(con.execute("SELECT recipe_json FROM runs WHERE id = ?", (ids[route],)).fetchone()[0])
        con.execute("UPDATE runs SET recipe_json = ? WHERE id = ?", (json.dumps({**recipe, "distill": distill}), ids[route]))
    con.execute("UPDATE runs SET duration_s = 5.0")
    con.commit()
    con.close()
    assert {r.route: r.cost_s for r in study_table(Registry(db, readonly=True), "st")} == {
        "leaky": 5.0, "relu": 5.0, "distill": 5.0}
    r = cli("study", "report", "st", "--out", tmp_path / "out", registry=db)
    assert r.exit_code == 0, r.output
    con = sqlite3.connect(db)  # a teacher recorded as the run id it is: the distilled member costs its teacher's time too
    recipe = json.loads(con.execute("SELECT recipe_json FROM runs WHERE id = ?", (ids["distill"],)).fetchone()[0])
    con.execute("UPDATE runs SET recipe_json = ? WHERE id = ?",
                (json.dumps({**recipe, "distill": {"teacher_run": ids["leaky"]}}), ids["distill"]))
    con.commit()
    con.close()
    assert {r.route: r.cost_s for r in study_table(Registry(db, readonly=True), "st")}["distill"] == 10.0
