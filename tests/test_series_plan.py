"""`series plan` (issue 22): variant x target, each cell the member's verified best artefact by the plan's own ranking.

A tiny series (L4-leaky and L4-relu, 1 epoch at 64 px) is planned once through the CLI for relu-only, amd-dpu and
edgetpu;
each cell is checked against the plan recorded on that member's run, re-ranked with `deploy.plan.rank`.
"""

import json

import pytest
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.plan import Accuracy, Candidate, Placement, Row, dominates, rank, sort_keys
from npuyolo.registry.db import Registry

runner = CliRunner()
TARGETS = ["relu-only", "amd-dpu", "edgetpu"]


@pytest.fixture(scope="module")
def series_planned(synth_data, tmp_path_factory):
    from npuyolo.train.series import SeriesSpec, run_series

    root = tmp_path_factory.mktemp("splan")
    db = root / "r.db"
    spec = root / "series.yaml"
    spec.write_text(f"name: sp\ndata: {synth_data}\nvariants: [L4-leaky, L4-relu]\n"
                    "recipe: {epochs: 1, imgsz: 64, batch: 8, workers: 0, plots: false}\n")
    run_series(Registry(db), SeriesSpec.load(spec), verbose=False)
    args = ["series", "plan", "sp", *[a for t in TARGETS for a in ("-t", t)], "--calib", "8", "--holdout", "8", "--json",
            "--registry", str(db)]
    result = runner.invoke(app, args)  # no --data: the series' own data set
    assert result.exit_code == 0, result.output
    return db, synth_data, json.loads(result.stdout)


def as_row(d: dict) -> Row:
    """A recorded row (`Row.as_dict()`) back into the record the ranking takes."""
    c = {k: v for k, v in d["candidate"].items() if k != "name"}
    p = {k: v for k, v in d["placement"].items() if k not in ("off_npu", "host_partitions")}
    acc = {k: Accuracy(**d[k]) for k in ("fp32", "int8", "fp32_at_conf", "int8_at_conf")}
    return Row(d["target"], Candidate(**c), d["fp32_path"], d["int8_path"], Placement(**p), acc["fp32"], acc["int8"],
               acc["fp32_at_conf"], acc["int8_at_conf"], d["conf"])


def test_every_cell_is_the_best_of_its_candidates_by_the_plans_ranking(series_planned):
    db, _, sp = series_planned
    assert sp["series"] == "sp" and sp["targets"] == TARGETS and sp["skipped"] == {}
    assert set(sp["cells"]) == {"L4-leaky", "L4-relu"}
    reg = Registry(db, readonly=True)
    for variant, row in sp["cells"].items():
        assert list(row) == TARGETS
        recorded = reg.get_run(sp["plans"][variant]["run_id"]).artifact("plan")  # each member's plan is on its run
        assert recorded is not None and recorded.path == sp["plans"][variant]["path"]
        plan = json.loads(open(recorded.path).read())
        for tp in plan["targets"]:
            rows = [as_row(r) for r in tp["rows"]]
            cell = row[tp["target"]]
            best = rank(rows)[0]
            assert cell["artefact"] == best.candidate.name == tp["chosen"]
            keys = sort_keys(rows)
            assert keys[rows.index(best)] == min(keys)
            assert not [r for r in rows if dominates(r, best)]
            assert cell["candidates"] == len(rows)
            assert (cell["off_npu"], cell["int8_map50"]) == (best.placement.off_npu, best.int8.map50)
            assert cell["path"] == best.int8_path and open(cell["path"], "rb").read(4)
    # what the candidates imply for each member: the leaky model is rewritten or re-sloped, the ReLU one ships as is
    leaky, relu = sp["cells"]["L4-leaky"], sp["cells"]["L4-relu"]
    assert relu["relu-only"]["artefact"] == "export+int8" and relu["relu-only"]["off_npu"] == 0
    assert leaky["relu-only"]["artefact"] != "export+int8" and leaky["relu-only"]["off_npu"] == 0
    assert leaky["amd-dpu"]["artefact"] == "export+slope0.1015625+int8"
    # Edge TPU runs no LeakyReLU: at 64 px every tensor maps, so a rewrite (or the twin) puts all of it on the NPU
    assert leaky["edgetpu"]["artefact"] != "export+int8" and leaky["edgetpu"]["share_nodes"] == 1.0
    assert relu["edgetpu"]["artefact"] == "export+int8" and relu["edgetpu"]["share_nodes"] == 1.0


@pytest.mark.parametrize("lang, heading, off", [("en", "## Deployment plan: which variant on which NPU", "off NPU"),
                                                ("ko", "## 배포 계획: 어느 NPU에 어느 변형을", "NPU 밖")])
def test_series_report_shows_the_matrix(series_planned, tmp_path, lang, heading, off):
    """The report rebuilds the matrix from each member's recorded plan: one row per variant, one column per target."""
    from npuyolo.report.render import render_series

    db, _, sp = series_planned
    text = render_series(Registry(db, readonly=True), "sp", tmp_path, lang=lang).read_text(encoding="utf-8")
    assert text.count(heading) == 1
    lines = text[text.index(heading):].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| "))
    assert [c.strip() for c in lines[header].strip("| ").split("|")][1:] == TARGETS
    assert lines[header + 1] == "|---" * (len(TARGETS) + 1) + "|"
    body = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in lines[header + 2:header + 4]}
    recorded = Registry(db, readonly=True)
    assert set(body) == {"L4-leaky", "L4-relu"}
    for variant, cells in body.items():  # each member's latest plan: the series plan above (runs before the API's re-plan)
        assert recorded.get_run(sp["plans"][variant]["run_id"]).artifact("plan").path == sp["plans"][variant]["path"]
        for t, cell in zip(TARGETS, cells):
            c = sp["cells"][variant][t]
            assert cell == f"`{c['artefact']}`: {c['share_nodes'] * 100:.1f}% NPU, {c['off_npu']} {off}, INT8 mAP50 {c['int8_map50']:.3f}"


def test_series_plan_api_and_table(series_planned):
    """The Python API plans the same series (MinMax, one target) and the Rich table shows each cell."""
    from npuyolo import Workspace
    from npuyolo.cli import console, print_series_plan
    from npuyolo.errors import NpuyoloError

    db, data, _ = series_planned
    ws = Workspace(db)
    with pytest.raises(NpuyoloError, match="unknown option"):
        ws.series_plan("sp", ["relu-only"], data, confidence=0.5)
    sp = ws.series_plan("sp", ["relu-only"], data, calib=4, sweep=False)
    assert list(sp.plans) == ["L4-leaky", "L4-relu"] and all(p.calibration == "minmax" for p in sp.plans.values())
    cells = sp.cells()
    for variant, plan in sp.plans.items():
        (tp,) = plan.targets
        assert cells[variant]["relu-only"]["artefact"] == tp.chosen.candidate.name == rank(tp.rows)[0].candidate.name
    with console.capture() as captured:
        print_series_plan(sp)
    text = captured.get()
    assert "L4-leaky" in text and "L4-relu" in text and "relu-only" in text
    assert cells["L4-leaky"]["relu-only"]["artefact"] in text and "100.0% NPU, 0 off" in text


def test_bad_series_plan_input_is_one_line(series_planned):
    db, data, _ = series_planned
    for args, message in ((["sp", "-t", "nope"], "unknown target 'nope'"), (["nosuch", "-t", "relu-only"], "no series 'nosuch'")):
        result = runner.invoke(app, ["series", "plan", *args, "--registry", str(db)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("error:") == 1 and "Traceback" not in result.output

