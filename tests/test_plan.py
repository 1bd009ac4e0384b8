"""`deploy plan` (issue 22): candidates per target, verified placement and accuracy, a choice that is never dominated.

One tiny series (L4-leaky and its ReLU twin, 1 epoch at 64 px) is planned once for relu-only and amd-dpu through the
CLI; the ranking rules are tested on hand-made rows (the pure core), so they hold for numbers a 1-epoch model
cannot produce.
"""

import json
import random
from pathlib import Path

import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.export import onnx_metadata
from npuyolo.deploy.plan import (Accuracy, Candidate, Placement, Row, TargetPlan, candidates, dominates, rank,
                                 retrain_advised, target_notes)
from npuyolo.npu.profiles import target
from npuyolo.registry.db import Registry

runner = CliRunner()
DPU_SLOPE = 26 / 256


@pytest.fixture(scope="module")
def planned(synth_data, tmp_path_factory):
    """The series, trained, and its L4-leaky run planned for two targets (calibration sweep included)."""
    from npuyolo.train.series import SeriesSpec, run_series

    root = tmp_path_factory.mktemp("plan")
    db = root / "r.db"
    spec = root / "series.yaml"
    spec.write_text(f"name: dp\ndata: {synth_data}\nvariants: [L4-leaky, L4-relu]\n"
                    "recipe: {epochs: 1, imgsz: 64, batch: 8, workers: 0, plots: false}\n")
    run_series(Registry(db), SeriesSpec.load(spec), verbose=False)
    result = runner.invoke(app, ["deploy", "plan", "dp-L4-leaky", "-t", "relu-only", "-t", "amd-dpu", "--data", str(synth_data),
                                 "--calib", "8", "--holdout", "8", "--json", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    return db, synth_data, json.loads(result.stdout)


def axes(row: dict) -> tuple:
    p = row["placement"]
    return p["off_npu"], p["host_partitions"], -row["int8"]["map50"]


def test_every_candidate_is_built_and_the_choice_is_the_best_verified_one(planned):
    db, data, plan = planned
    assert plan["calibration"] in ("minmax", "percentile99.99", "percentile99.999", "entropy")  # the sweep's choice
    by_target = {t["target"]: t for t in plan["targets"]}
    assert list(by_target) == ["relu-only", "amd-dpu"]
    names = {t: [r["candidate"]["name"] for r in by_target[t]["rows"]] for t in by_target}
    exact = ["export+int8", "export+relu-decomp+int8", "export+relu-exact+int8", "export+max+int8"]
    assert names["relu-only"] == [*exact, "relu-twin+int8"]  # int8 only: no --ends route on either profile
    assert names["amd-dpu"] == [*exact, "export+slope0.1015625+int8", "relu-twin+int8"]
    for t in by_target.values():
        rows = t["rows"]
        chosen = next(r for r in rows if r["candidate"]["name"] == t["chosen"])
        assert not [r for r in rows if dominates_dict(r, chosen)]  # never worse on every axis than another
        assert chosen["placement"]["off_npu"] == min(r["placement"]["off_npu"] for r in rows)
        assert axes(chosen) == min(axes(r) for r in rows)
        assert t["runner_up"] and t["runner_up"] != t["chosen"] and t["why_runner_up_lost"]
        for r in rows:
            assert "npuyolo_quant" in onnx_metadata(r["int8_path"]) and "npuyolo_quant" not in onnx_metadata(r["fp32_path"])
            assert r["conf"] == 0.25 and set(r["retention"]) == {"precision", "recall", "map50"}
    # relu-only: an exact rewrite puts everything on the NPU; the export leaves every LeakyReLU on the CPU
    relu = {r["candidate"]["name"]: r for r in by_target["relu-only"]["rows"]}
    assert relu["export+int8"]["placement"]["fallback_ops"] == {"LeakyRelu": 83}
    assert by_target["relu-only"]["chosen"] in ("export+relu-decomp+int8", "export+relu-exact+int8", "relu-twin+int8")
    assert relu[by_target["relu-only"]["chosen"]]["placement"]["share_nodes"] == 1.0
    # amd-dpu: the rewrite's Mul ops are unknown there; the model re-sloped to 26/256 fits, with its measured change
    dpu = by_target["amd-dpu"]
    assert dpu["chosen"] == "export+slope0.1015625+int8"
    rows = {r["candidate"]["name"]: r for r in dpu["rows"]}
    assert rows["export+relu-decomp+int8"]["placement"]["unknown_ops"].get("Mul")
    assert rows["export+slope0.1015625+int8"]["placement"]["off_npu"] < rows["export+int8"]["placement"]["off_npu"]
    change = (rows["export+slope0.1015625+int8"]["fp32"]["map50"] - rows["export+int8"]["fp32"]["map50"]) * 100
    assert any(n.startswith(f"re-sloped to 0.1015625 without retraining: FP32 mAP50 {change:+.1f} points (measured on val)")
               for n in dpu["notes"])
    resloped = onnx.load(rows["export+slope0.1015625+int8"]["fp32_path"])
    alphas = {helper.get_attribute_value(a) for n in resloped.graph.node if n.op_type == "LeakyRelu" for a in n.attribute}
    assert alphas == {DPU_SLOPE}  # 26/256 is exact in float32


def dominates_dict(a: dict, b: dict) -> bool:
    pa, pb = axes(a), axes(b)
    return all(x <= y for x, y in zip(pa, pb)) and any(x < y for x, y in zip(pa, pb))


def test_the_plan_numbers_are_what_an_independent_check_measures(planned):
    """The chosen artefact placed by `npu check` and scored by `deploy eval`'s evaluator gives the plan's numbers."""
    from npuyolo.deploy.eval.evaluate import evaluate_onnx, onnx_predictor, validate
    from npuyolo.deploy.check import check_model

    db, data, plan = planned
    t = plan["targets"][1]
    chosen = next(r for r in t["rows"] if r["candidate"]["name"] == t["chosen"])
    report = check_model(None, chosen["int8_path"], [t["target"]]).reports[0]
    assert (report.share_nodes, report.partitions_host) == (chosen["placement"]["share_nodes"], chosen["placement"]["partitions_host"])
    scored = evaluate_onnx(chosen["int8_path"], data)
    assert scored.map50 == pytest.approx(chosen["int8"]["map50"]) and scored.recall == pytest.approx(chosen["int8"]["recall"])
    predict, meta = onnx_predictor(chosen["fp32_path"])
    at_conf = validate(predict, data, 64, {int(k): v for k, v in json.loads(meta["names"]).items()}, conf=0.25)
    assert at_conf["precision"] == pytest.approx(chosen["fp32_at_conf"]["precision"])
    assert at_conf["map50"] == pytest.approx(chosen["fp32_at_conf"]["map50"])
    # written under the run's folder and recorded
    run = Registry(db, readonly=True).get_run("dp-L4-leaky")
    recorded = run.artifact("plan")
    assert recorded is not None and recorded.path == plan["path"] and json.loads(open(plan["path"]).read())["targets"]
    assert "/plan/" in chosen["int8_path"] and chosen["int8_path"].startswith(str(db.parent))
    # each candidate's per-image statistics are kept beside the plan, and give back its figures
    from npuyolo.stats.bootstrap import detection_metrics
    from npuyolo.stats.matched import load_stats

    kept = load_stats(Path(plan["path"]).parent / "stats" / f"{Path(chosen['int8_path']).stem}.npz")
    assert detection_metrics(kept)[0] == pytest.approx(chosen["int8"]["map50"], abs=1e-9)
    # every row's INT8 drop carries its paired interval, agreeing with the point figures
    for r in t["rows"]:
        value, low, high = r["int8_drop_pp"]
        assert value == pytest.approx((r["fp32"]["map50"] - r["int8"]["map50"]) * 100, abs=2e-3) and low <= value + 1e-9 <= high + 2e-9


def test_bad_plan_input_is_one_line(planned):
    db, data, _ = planned
    for args, message in ((["-t", "nope"], "unknown target 'nope'"), (["-t", "relu-only", "--conf", "1.5"], "between 0 and 1")):
        result = runner.invoke(app, ["deploy", "plan", "dp-L4-leaky", *args, "--data", str(data), "--registry", str(db)])
        assert result.exit_code == 2 and message in result.output
        assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_hostile_model_and_series_names_are_one_line_and_run_nothing(tmp_path, synth_data):
    """A code-carrying .pt is refused before anything is built; a `../` series name reads no folder outside."""
    import os

    import torch

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    db = tmp_path / "reg" / "r.db"
    Registry(db).close()
    for args in (["deploy", "plan", str(evil), "-t", "relu-only", "--data", str(synth_data)],
                 ["series", "plan", "../../etc", "-t", "relu-only", "--data", str(synth_data)]):
        result = runner.invoke(app, [*args, "--registry", str(db)])
        assert result.exit_code == 2 and result.output.count("error:") == 1 and "Traceback" not in result.output, result.output
    assert not marker.exists()
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("r.db")) in ([], ["cache"])


# -- the pure core on hand-made rows -----------------------------------------------------------------------------------
def row(graph=None, off=0, parts=0, ms=None, map50=0.5, fp32=0.5, route="int8", target_name="t") -> Row:
    acc = lambda m: Accuracy(0.5, 0.5, m, m / 2)  # noqa: E731
    placement = Placement(1.0, 100, off, 0, parts, {}, {}, npu_ms=ms)
    return Row(target_name, Candidate("export", graph, route), "f.onnx", "q.onnx", placement, acc(fp32), acc(map50), acc(fp32),
               acc(map50), 0.25)


def test_ranking_order_and_why_the_runner_up_lost():
    on_npu_lower_map, fallback_higher_map = row("relu-decomp", off=0, map50=0.40), row(None, off=83, parts=83, map50=0.60)
    chosen, runner, why = rank([fallback_higher_map, on_npu_lower_map])
    assert chosen is on_npu_lower_map and runner is fallback_higher_map and why == "83 ops off the NPU against 0"
    chosen, _, why = rank([row(None, off=2, parts=2), row("max", off=2, parts=1)])
    assert chosen.candidate.graph == "max" and why == "2 host partitions against 1"
    native, rewrite = row(None, ms=10.0, map50=0.50), row("relu-decomp", ms=25.4, map50=0.505)
    chosen, _, why = rank([rewrite, native])
    assert chosen is native and why.startswith("slower on the NPU: 25.40 ms against 10.00 ms")
    chosen, _, why = rank([row(None, map50=0.50), row("relu-exact", map50=0.52)])
    assert chosen.candidate.graph == "relu-exact" and why == ("lower INT8 mAP50: 0.500 against 0.520 "
                                                             "(no interval: per-image statistics missing)")
    first, second = row(None), row("relu-decomp")
    assert rank([first, second])[0] is first and rank([first, second])[2].startswith("tied on every axis")


def test_a_much_less_accurate_candidate_never_wins_on_npu_time():
    """The demo's Ethos-U55 plan chose the barely trained ReLU twin (INT8 mAP50 0.170) over native LeakyReLU (0.497)
    for 1.6 ms of Vela time. Among candidates placed alike, one more than ACCURACY_GUARD_PP points below the most
    accurate may not win on NPU time; within the guard, time still decides."""
    from npuyolo.deploy.plan import ACCURACY_GUARD_PP, Candidate

    native = row(None, ms=20.7, map50=0.497)
    twin = row(None, ms=19.1, map50=0.170)
    twin.candidate = Candidate("relu-twin", None, "int8")
    chosen, runner, why = rank([native, twin])
    assert chosen is native and runner is twin
    assert why == "INT8 mAP50 0.170, more than 1 point(s) below the most accurate candidate placed as well (0.497): not chosen for its NPU time"
    close = row(None, ms=19.1, map50=0.497 - ACCURACY_GUARD_PP / 100 + 0.001)
    assert rank([native, close])[0] is close  # within the guard: the faster one
    worse_placed = row("max", off=3, parts=3, ms=1.0, map50=0.9)
    assert rank([twin, worse_placed])[0] is twin  # the guard never outranks placement


def test_a_compiler_that_keeps_every_op_on_the_npu_leaves_no_host_partition():
    """The demo's Ethos-U55 plan: Vela ran the `max` rewrite's 83 Max ops on the NPU (0 CPU operators), but the profile,
    which lists no Max, counted 83 host partitions, and the rewrite was ranked behind ones that had none."""
    vela_all_on_npu = row("max", off=0, parts=83, ms=10.6)
    vela_all_on_npu.placement.compiler_cpu_ops = 0
    assert vela_all_on_npu.placement.host_partitions == 0 and vela_all_on_npu.as_dict()["placement"]["host_partitions"] == 0
    slower = row("relu-decomp", ms=16.2)
    slower.placement.compiler_cpu_ops = 0
    assert rank([slower, vela_all_on_npu])[0] is vela_all_on_npu
    no_compiler = row("max", off=83, parts=83)
    assert no_compiler.placement.host_partitions == 83


def test_a_candidate_worse_on_every_axis_is_never_chosen():
    rng = random.Random(0)
    for _ in range(300):
        rows = [row(off=rng.randint(0, 3), parts=rng.randint(0, 3), ms=rng.choice([None, 1.0, 2.0]), map50=rng.choice([0.3, 0.5]))
                for _ in range(rng.randint(1, 6))]
        chosen = rank(rows)[0]
        assert not [r for r in rows if dominates(r, chosen)]


def test_candidates_follow_the_profile():
    names = lambda cs: [c.name for c in cs]  # noqa: E731
    exact = ["export+int8", "export+relu-decomp+int8", "export+relu-exact+int8", "export+max+int8"]
    assert names(candidates(target("amd-dpu"), {0.1}, False)) == [*exact, "export+slope0.1015625+int8"]
    assert names(candidates(target("amd-dpu"), {DPU_SLOPE}, False)) == exact  # already the slope the DPU runs
    assert names(candidates(target("relu-only"), {0.1}, True)) == [*exact, "relu-twin+int8"]
    assert names(candidates(target("relu-only"), set(), False)) == ["export+int8"]  # nothing to rewrite
    assert names(candidates(target("ethos-u55"), set(), False)) == ["export+int8", "export+int8-ends-int16"]
    assert names(candidates(target("rknn-rk3588"), set(), False)) == ["export+int8", "export+int8-ends-float"]


def test_retraining_is_advised_only_above_half_a_point():
    assert retrain_advised(-0.6) and not retrain_advised(-0.4) and not retrain_advised(0.3)
    export = row(None, fp32=0.500)
    lost = target_notes("amd-dpu", [export, row("slope0.1015625", fp32=0.494)], "L4-leaky")
    kept = target_notes("amd-dpu", [export, row("slope0.1015625", fp32=0.497)], "L4-leaky")
    assert lost == ["re-sloped to 0.1015625 without retraining: FP32 mAP50 -0.6 points (measured on val); "
                    "retraining at that slope is advised (train L4-leaky0.1015625)"]
    assert kept[0].endswith("-0.3 points (measured on val); within 0.5 points: no retraining needed")


def test_ethos_u_says_what_the_rewrite_costs_or_that_it_is_not_measured():
    measured = target_notes("ethos-u55", [row(None, ms=10.0), row("relu-decomp", ms=25.4), row("max", ms=30.0)])
    assert measured == ["the fastest rewrite (relu-decomp) takes 2.54× the NPU time of native LeakyReLU "
                        "(Vela's estimate, measured here): keep native LeakyReLU"]
    unmeasured = target_notes("ethos-u55", [row(None), row("relu-decomp")])
    assert len(unmeasured) == 1 and "not measured here (Vela not installed)" in unmeasured[0]
    assert target_notes("relu-only", [row(None), row("relu-decomp")]) == []


def test_python_api_plans_with_its_own_threshold(planned):
    """Last: it re-plans the same run (MinMax, one target) into the same folder."""
    from npuyolo import Workspace
    from npuyolo.deploy.plan import Plan
    from npuyolo.errors import NpuyoloError

    db, data, cli_plan = planned
    ws = Workspace(db)
    with pytest.raises(NpuyoloError, match="unknown option"):
        ws.plan("dp-L4-leaky", ["relu-only"], data, confidence=0.5)
    plan = ws.plan("dp-L4-leaky", ["relu-only"], data, conf=0.5, calib=4, sweep=False)
    assert isinstance(plan, Plan) and plan.calibration == "minmax" and plan.conf == 0.5
    (only,) = plan.targets
    assert all(r.conf == 0.5 for r in only.rows)
    assert only.chosen.placement.off_npu == 0 and only.chosen.candidate.name != "export+int8"
    assert set(plan.stages) >= {"export", "quantize", "evaluate", "place"} and plan.seconds > 0
    from npuyolo.cli import console, print_plan

    with console.capture() as captured:
        print_plan(plan)
    text = captured.get()
    assert f"* {only.chosen.candidate.name}" in text and "export+int8" in text
    assert f"relu-only: {only.chosen.candidate.name}; runner-up {only.runner_up.candidate.name} lost: " in text


def test_a_target_whose_compiler_is_missing_says_so(compilers_dir):
    """Nothing is installed (an empty compilers folder): the row says so and the profile's placement stands."""
    from npuyolo.deploy.plan.build import _compile

    for name, compiler in (("ethos-u55", "vela"), ("rknn-rk3588", "rknn"), ("imx500", "imx500"), ("relu-only", None)):
        p = Placement(1.0, 10, 0, 0, 0, {}, {})
        _compile(None, p, compilers_dir / "never-read.onnx", name, None)
        assert (p.compiler, p.compiler_status) == ((compiler, "compiler not installed") if compiler else (None, None))
        assert p.npu_ms is None and p.off_npu == 0


def test_the_vendors_own_int8_ranks_when_it_was_scored():
    """Our QDQ model says the rewrite keeps more INT8 accuracy; the vendor's own quantized models (what ships) say the
    export does: with both scored, the vendor's figures decide, and the retention is the vendor model's."""
    from npuyolo.deploy.plan import VendorInt8

    acc = lambda m: Accuracy(0.5, 0.5, m, m / 2)  # noqa: E731
    export, rewrite = row(None, map50=0.50), row("relu-exact", map50=0.52)
    assert rank([export, rewrite])[0] is rewrite  # ours alone
    export.vendor = VendorInt8("rknn-toolkit2 simulator", acc(0.49), acc(0.45))
    rewrite.vendor = VendorInt8("rknn-toolkit2 simulator", acc(0.40), acc(0.30))
    chosen, runner, why = rank([export, rewrite])
    assert chosen is export and runner is rewrite
    assert why == "lower INT8 mAP50 (the vendor's own INT8): 0.400 against 0.490 (no interval: per-image statistics missing)"
    assert export.retention["map50"] == pytest.approx(0.45 / 0.5) and export.as_dict()["vendor"]["int8"]["map50"] == 0.49


def test_imx500_is_compiled_once_per_model_and_never_for_a_rewrite(monkeypatch, tmp_path):
    """IMX500 converts the PyTorch model: the plan builds it once per model (its INT8 routes share the build, MCT
    quantizes itself), says a graph rewrite cannot be built, and takes the fit and the scored file from the build."""
    from types import SimpleNamespace

    from npuyolo.compilers.envs import CompilerError
    from npuyolo.deploy.plan import build as plan_module

    calls = []

    def fake_compile(registry, ref, compiler, target, data, imgsz=None):
        calls.append((ref, compiler, target, imgsz))
        if ref == "too-big":
            build = SimpleNamespace(ok=True, error=None, memory={"fits": False}, scored="")
        elif ref == "broken":
            raise CompilerError("the IMX500 export took over 3600 s")
        else:
            build = SimpleNamespace(ok=True, error=None, memory={"fits": True}, scored=str(tmp_path / "model_imx_dense.onnx"))
        return SimpleNamespace(build=build)

    monkeypatch.setattr(plan_module, "installed", lambda name: SimpleNamespace(version="3.19.2"))
    monkeypatch.setattr(plan_module, "compile_model", fake_compile)
    monkeypatch.setattr(plan_module, "record", lambda registry, result: None)
    builds: dict = {}
    placed = []
    for ref in ("run-7", "run-7", None, "too-big", "broken"):  # export+int8, export+int8-ends-int16, a rewrite, ...
        p = Placement(1.0, 10, 0, 0, 0, {}, {})
        plan_module._compile(None, p, tmp_path / "never-read.onnx", "imx500", "d.yaml", ref, 320, builds)
        placed.append(p)
    assert calls == [("run-7", "imx500", "imx500", 320), ("too-big", "imx500", "imx500", 320), ("broken", "imx500", "imx500", 320)]
    first, second, rewrite, big, broken = placed
    assert first.compiler == "imx500 3.19.2" and first.compiler_status == "compiled" and first.off_npu == 0
    assert first.compiled_file == second.compiled_file == str(tmp_path / "model_imx_dense.onnx")
    assert rewrite.compiler_status.startswith("not compiled: a graph rewrite") and rewrite.compiled_file is None
    assert big.compiler_status == "failed: does not fit in the sensor" and big.compiler_cpu_ops is None
    assert broken.compiler_status == "failed: the IMX500 export took over 3600 s"


def test_one_compile_per_graph_and_ethos_u_prefers_native_leaky_relu_to_a_rewrite(planned, monkeypatch):
    """The compiler quantizes the FP32 graph itself: the plan compiles each graph once for a target, and every INT8
    route of that graph carries the verdict (before, each route compiled again: a Vela or RKNN build each). With
    Vela's times (faked here: native LeakyReLU 10 ms, each rewrite 25.4 ms, the ReLU twin 9 ms), no rewrite wins on
    Ethos-U, the note says to keep native LeakyReLU, and the faster ReLU twin is chosen."""
    from npuyolo import Workspace
    from npuyolo.deploy.plan import REWRITES
    from npuyolo.deploy.plan import build as plan_module

    db, data, _ = planned
    compiled = []

    def fake_compile(registry, p, fp32, t, *args):
        compiled.append((str(fp32), t))
        p.compiler, p.compiler_status, p.compiler_cpu_ops = "vela 5.2.0", "compiled", 0
        p.npu_ms = 25.4 if any(m in fp32.name for m in REWRITES) else 9.0 if "L4-relu" in fp32.name else 10.0

    monkeypatch.setattr(plan_module, "_compile", fake_compile)
    plan = Workspace(db).plan("dp-L4-leaky", ["ethos-u55"], data, calib=4, sweep=False)
    (u55,) = plan.targets
    graphs = {r.fp32_path for r in u55.rows}
    assert len(graphs) == 5 and len(u55.rows) == 10  # export, 3 rewrites, the twin; each as int8 and int8-ends-int16
    assert sorted(compiled) == sorted((g, "ethos-u55") for g in graphs)
    assert all(r.placement.npu_ms is not None and r.placement.compiler_status == "compiled" for r in u55.rows)
    assert u55.chosen.candidate.source == "relu-twin" and u55.chosen.placement.npu_ms == 9.0
    own = [r for r in u55.rows if r.candidate.source == "export"]
    assert rank(own)[0].candidate.graph is None  # of the run's own graphs, native LeakyReLU
    assert any("keep native LeakyReLU" in n for n in u55.notes)


def test_a_target_with_little_on_the_npu_says_where_the_graph_is_cut():
    """Edge TPU at 320 px: the first Conv's output is larger than any activation documented to map, so nothing maps,
    whichever candidate. The plan says so, naming the node and the reason, instead of only printing 0%."""
    cut = "Conv /model.0/conv/Conv: output 1x16x160x160 (409600 values) is larger than the largest activation documented to map (200704)"
    low = [row(None), row("relu-decomp")]
    for r in low:
        r.placement.share_nodes, r.placement.first_off_npu = 0.0, cut
    low[1].placement.share_nodes = 0.02
    (note,) = target_notes("edgetpu", low)
    assert note == f"no candidate runs even half its nodes on the NPU (best: 2.0%, export+relu-decomp+int8); the first node off the NPU there: {cut}"
    assert target_notes("edgetpu", [row(None)]) == []  # all on the NPU: nothing to say


def test_a_vendor_int8_that_cannot_be_scored_sinks_only_its_own_row(planned, monkeypatch):
    """Issue 36: `--vendor-int8` where one target's compiled model is refused (a contract error, a driver that dies):
    that row ranks by our QDQ model and says why; the other target keeps the vendor's figures; the plan is written."""
    from types import SimpleNamespace

    from npuyolo import Workspace
    from npuyolo.deploy.plan import build as plan_module
    from npuyolo.deploy.eval import vendor
    from npuyolo.deploy.eval.contract import ContractError

    db, data, _ = planned

    def fake_compile(registry, p, fp32, t, *args):
        p.compiler, p.compiler_status, p.compiler_cpu_ops, p.compiled_file = "rknn 2", "compiled", 0, f"{fp32}.{t}.rknn"

    def fake_eval(path, data, **kwargs):
        if "amd-dpu" in str(path):
            raise ContractError("the compiled model's outputs differ from FP32\non the golden image")
        acc = {"precision": 0.5, "recall": 0.5, "map50": 0.42, "map50_95": 0.2}
        return SimpleNamespace(runtime="fake simulator", result=acc, at_conf=acc)

    monkeypatch.setattr(plan_module, "_compile", fake_compile)
    monkeypatch.setattr(vendor, "evaluate_compiled", fake_eval)
    plan = Workspace(db).plan("dp-L4-leaky", ["relu-only", "amd-dpu"], data, calib=4, sweep=False, vendor_int8=True)
    ok, bad = plan.targets
    assert all(r.vendor is not None and r.vendor.int8.map50 == 0.42 for r in ok.rows)
    assert all(r.vendor is None and "outputs differ from FP32 on the golden image" in r.vendor_error for r in bad.rows)
    assert all("\n" not in r.vendor_error for r in bad.rows)
    recorded = json.loads(open(plan.path).read())
    assert recorded["targets"][1]["rows"][0]["vendor_error"].startswith("the compiled model's outputs differ")
    from npuyolo.cli.common import console
    from npuyolo.cli.tables import print_plan

    with console.capture() as printed:
        print_plan(plan)
    assert "amd-dpu: the vendor's INT8 was not scored (the compiled model's outputs differ" in printed.get()


def test_two_checkpoints_both_named_best_pt_get_their_own_plan_folders(tmp_path, synth_data):
    """Issue 36: `deploy plan a/best.pt` then `deploy plan b/best.pt` both wrote `<registry dir>/plan/best/`, the second
    replacing the first's plan and INT8 files. Each model now has its own folder, keyed by its content."""
    from pathlib import Path

    import torch

    from npuyolo import Workspace
    from npuyolo.variants.build import build_model

    from .conftest import perturbed

    paths = []
    for i, name in enumerate("ab"):
        model = perturbed(build_model("L4-relu", nc=6, verbose=False), scale=0.03, seed=i, class_bias=-1.0)
        model.args = {"imgsz": 64}
        path = tmp_path / name / "best.pt"
        path.parent.mkdir()
        torch.save({"model": None, "ema": model.half(), "epoch": -1, "train_args": {"imgsz": 64}}, path)
        paths.append(path)
    ws = Workspace(tmp_path / "reg" / "r.db")
    a, b = (ws.plan(str(p), ["relu-only"], synth_data, calib=4, holdout=4, sweep=False) for p in paths)
    folder_a, folder_b = Path(a.path).parent, Path(b.path).parent
    assert folder_a != folder_b and folder_a.parent == folder_b.parent == (tmp_path / "reg" / "plan").resolve()
    assert folder_a.name.startswith("best-") and folder_b.name.startswith("best-")
    row_a, row_b = a.targets[0].chosen, b.targets[0].chosen
    for plan, row, folder in ((a, row_a, folder_a), (b, row_b, folder_b)):
        assert json.loads(Path(plan.path).read_text())["targets"][0]["artefact"] == row.int8_path
        assert Path(row.int8_path).parent == folder and Path(row.fp32_path).parent == folder
    assert Path(row_a.int8_path).read_bytes() != Path(row_b.int8_path).read_bytes()
    again = ws.plan(str(paths[0]), ["relu-only"], synth_data, calib=4, holdout=4, sweep=False)
    assert Path(again.path).parent == folder_a  # the same model: the same folder


def test_a_finished_run_whose_best_pt_vanished_says_it_was_planned_from_last_pt(tmp_path, synth_data):
    """Issue 36: a finished run whose best.pt is gone was planned from last.pt, and neither the output nor plan.json
    said so."""
    import torch

    from npuyolo.train.recipe import Recipe
    from npuyolo.variants.build import build_model

    from .conftest import perturbed

    db = tmp_path / "reg" / "r.db"
    reg = Registry(db)
    rid = reg.create_run(name="gone", variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump(),
                         data_path=str(synth_data), data_hash="h", class_names=["a"] * 6, weights_source=None, device="cpu",
                         versions={})
    weights = reg.run_dir(reg.get_run(rid), "weights")
    model = perturbed(build_model("L4-relu", nc=6, verbose=False), scale=0.03, class_bias=-1.0)
    torch.save({"model": None, "ema": model.half(), "epoch": 0, "train_args": {}}, weights / "last.pt")
    reg.add_artifact(rid, "weights/best", weights / "best.pt")  # recorded, then deleted by hand
    reg.add_artifact(rid, "weights/last", weights / "last.pt")
    reg.set_status(rid, "finished")
    result = runner.invoke(app, ["deploy", "plan", "gone", "-t", "relu-only", "--data", str(synth_data), "--calib", "4",
                                 "--no-sweep", "--registry", str(db)], terminal_width=200)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "best.pt" in said and "planned from last.pt" in said, result.output
    recorded = json.loads(Registry(db, readonly=True).get_run(rid).artifact_path("plan").read_text())
    assert "planned from last.pt" in recorded["weights_note"] and str(weights / "last.pt") in recorded["weights_note"]


def test_a_plan_calls_a_tie_a_tie_and_guards_only_a_significant_gap():
    """The guard is the paired interval of the INT8 mAP50 gap, not a fixed point: a faster candidate 2 points below
    the most accurate but within the noise of 80 images wins on NPU time, and the plan says the two tied on accuracy;
    one that misses every other image's objects is significantly below and never wins on time."""
    import numpy as np

    from npuyolo.stats.bootstrap import detection_metrics

    from .test_stats import as_stats, confident_model, missing_half

    per = confident_model(seed=11, images=80)
    slightly = {k: list(v) for k, v in per.items()}
    for i in (3, 17):  # two images where the faster model misses its objects: a small loss, well within noise
        for k in ("tp", "conf", "pred_cls"):
            slightly[k][i] = slightly[k][i][:0]

    def scored(stats, ms, graph=None):
        m = detection_metrics(stats)
        r = row(graph, ms=ms, map50=float(m[0]))
        r.int8_stats = stats
        return r

    best = scored(as_stats(per), ms=20.7)
    close = scored(as_stats(slightly), ms=19.1, graph="relu-decomp")
    gap_pp = (best.int8.map50 - close.int8.map50) * 100
    assert gap_pp > 1.0  # the old fixed 1-point guard would have refused it
    chosen, runner, why = rank([best, close])
    assert chosen is close and runner is best
    assert why.startswith("slower on the NPU: 20.70 ms against 19.10 ms") and "tied on accuracy" in why and "within noise" in why
    far = scored(as_stats(missing_half(per)), ms=10.0, graph="max")
    chosen, runner, why = rank([best, far])
    assert chosen is best and runner is far and "significantly below" in why and "95%" in why
    # the recorded reason carries the interval as data (reports word it in ko/en)
    from npuyolo.deploy.plan import lost_on

    data = lost_on(best, far, [best, far])
    assert data["axis"] == "accuracy_guard" and data["guard_pp"] is None and data["gap_pp"][1] > 0
    assert np.isfinite(data["gap_pp"]).all()


def _scored_pair(first_misses, second_misses):
    """Two hand-made rows with per-image statistics on the same 80 val images and no NPU time (no compiler gave one):
    one detector, which misses every object on the images each row names."""
    from npuyolo.stats.bootstrap import detection_metrics

    from .test_stats import as_stats, confident_model

    per = confident_model(seed=11, images=80)

    def scored(misses, graph=None):
        mine = {k: list(v) for k, v in per.items()}
        for i in misses:
            for k in ("tp", "conf", "pred_cls"):
                mine[k][i] = mine[k][i][:0]
        stats = as_stats(mine)
        r = row(graph, map50=float(detection_metrics(stats)[0]))
        r.int8_stats = stats
        return r

    return scored(first_misses), scored(second_misses, "relu-decomp")


def test_a_runner_up_within_the_noise_on_int8_map50_is_said_to_be_tied_with_its_interval():
    """Without an NPU time, the INT8 mAP50 point value decides. Two rows that miss different images (40; 3 and 17)
    are a point apart, within the noise of 80 images: the plan says the two tied on accuracy, with the paired 95%
    interval of winner - runner-up, and that the higher point value shipped; the recorded plan takes the interval."""
    from npuyolo.deploy.plan import lost_on
    from npuyolo.deploy.plan.recorded import RecordedPlan

    best, close = _scored_pair((40,), (3, 17))
    chosen, runner, why = rank([close, best])
    assert chosen is best and runner is close and best.int8.map50 > close.int8.map50
    data = lost_on(best, close, [best, close])
    v, lo, hi = data["gap_pp"]
    assert data["axis"] == "int8_map50" and lo < 0 < hi and v == pytest.approx((best.int8.map50 - close.int8.map50) * 100, abs=1e-3)
    assert why == (f"tied on INT8 mAP50: {close.int8.map50:.3f} against {best.int8.map50:.3f} (the chosen {v:+.1f} points, "
                   f"95% {lo:+.1f} to {hi:+.1f}: within noise); the higher point value was shipped")
    assert "lower" not in why
    RecordedPlan.model_validate({"model_ref": "m", "run_id": None, "data": "d", "conf": 0.25, "calibration": None,
                                 "targets": [TargetPlan("t", best, close, why, [best, close]).as_dict()]})


def test_a_runner_up_clearly_below_on_int8_map50_is_said_lower_with_its_interval():
    from npuyolo.deploy.plan import lost_on

    best, far = _scored_pair((), range(0, 80, 2))
    chosen, runner, why = rank([far, best])
    assert chosen is best and runner is far
    v, lo, hi = lost_on(best, far, [best, far])["gap_pp"]
    assert 0 < lo < v < hi
    assert why == f"lower INT8 mAP50: {far.int8.map50:.3f} against {best.int8.map50:.3f} (the chosen {v:+.1f} points, 95% {lo:+.1f} to {hi:+.1f})"


def test_a_zero_width_gap_is_no_evidence_for_the_guard_or_the_tie(monkeypatch):
    """Every resample alike (+1.5 to +1.5) says nothing about the images: `verdict_of` calls it a tie, and so must the
    accuracy guard (it is not a significant loss that bars a faster candidate) and the NPU-time tie note."""
    from npuyolo.deploy.plan import choose
    from npuyolo.stats.compare import Estimate

    best, fast = row(None, ms=20.0, map50=0.500), row("relu-decomp", ms=10.0, map50=0.485)
    monkeypatch.setattr(choose.AccuracyNoise, "gap", lambda self, a, b: Estimate(1.5, 1.5, 1.5))
    chosen, runner, _ = choose.rank([best, fast])
    assert chosen is fast and runner is best  # not guarded: NPU time decides
    data = choose.lost_on(fast, best, [best, fast])
    assert data["axis"] == "npu_ms" and data["accuracy_tie_pp"] == [1.5, 1.5, 1.5]


def test_the_plans_resamples_are_drawn_once_per_file_content_not_per_object(monkeypatch):
    """Rows of different targets load the same INT8 file's statistics as separate objects: the plan's paired
    resamples are keyed by what they are computed from, so each file's are drawn once (the L4-leaky demo plan drew
    them 42 times for its files), and a changed file is drawn afresh."""
    import dataclasses

    from npuyolo.deploy.plan import choose
    from npuyolo.stats import bootstrap

    from .test_stats import as_stats, confident_model, missing_half

    calls = []
    original = bootstrap.map50_samples
    monkeypatch.setattr(choose, "map50_samples", lambda *a, **k: calls.append(1) or original(*a, **k))
    per = confident_model(seed=11, images=40)
    a, a_again = as_stats(per), as_stats(per)
    b = as_stats(missing_half(per))
    assert a is not a_again
    noise = choose.AccuracyNoise(n=50)
    first = noise.between(a, b)
    assert noise.between(a_again, b) == first and noise.between(b, a_again).value == -first.value
    assert len(calls) == 2  # a (and its equal copy) once, b once
    shifted = dataclasses.replace(a, conf=a.conf * 0.5)  # the same images and hits, other confidences: another file
    noise.between(shifted, b)
    assert len(calls) == 3
    fresh = choose.AccuracyNoise(n=50).between(a_again, b)
    assert (fresh.value, fresh.low, fresh.high) == (first.value, first.low, first.high)
    odd = tuple(f"{name}\udcff" for name in a.images)  # a name the file system gave as undecodable bytes
    assert noise.between(dataclasses.replace(a, images=odd), dataclasses.replace(b, images=odd)) is not None
