import json

import onnx
import pytest
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.export import export_onnx
from npuyolo.registry.db import Registry
from npuyolo.study.hybrid import hybrid_search, pareto_front
from npuyolo.variants.build import Stages, activation_census, build_model, model_yaml
from npuyolo.variants.spec import VariantError, parse_variant

runner = CliRunner()


def test_hybrid_variant_places_each_activation_where_the_map_says(tmp_path):
    spec = parse_variant("L4-hybrid:backbone=relu,neck=leaky,head=leaky0.2")
    assert spec.name == "L4-hybrid:backbone=relu,neck=leaky,head=leaky0.2" and parse_variant(spec.name) == spec
    model = build_model(spec, nc=3)
    stages = Stages.of(model.yaml)
    expect = {"backbone": ({"ReLU"}, None), "neck": ({"LeakyReLU"}, 0.1), "head": ({"LeakyReLU"}, 0.2)}
    for stage, (kinds, slope) in expect.items():
        for i in getattr(stages, stage):
            found = activation_census(model.model[i])
            assert set(found) <= kinds, (stage, i, found)
            if slope is not None:
                assert all(m.negative_slope == slope for m in model.model[i].modules() if type(m).__name__ == "LeakyReLU")
    ops = {n.op_type for n in onnx.load(str(export_onnx(model, tmp_path / "h.onnx", imgsz=64))).graph.node}
    assert {"Relu", "LeakyRelu"} <= ops
    assert model_yaml(spec)["npuyolo"]["activation_map"]["neck"] == ["leaky", 0.1]


def test_hybrid_defaults_and_errors():
    assert parse_variant("L2-hybrid:neck=relu").stage_activations["backbone"] == ("silu", None)
    for bad in ("L4-hybrid:torso=relu", "L4-hybrid:neck=gelu", "L4-hybrid:neck=relu0.3", "L9-hybrid:neck=relu"):
        with pytest.raises(VariantError):
            parse_variant(bad)


def test_pareto_front():
    rows = [{"npu_share": 1.0, "map50": 0.3}, {"npu_share": 0.6, "map50": 0.5}, {"npu_share": 0.6, "map50": 0.4},
            {"npu_share": 0.9, "map50": 0.2}, {"npu_share": None, "map50": 0.9}]
    assert pareto_front(rows) == [0, 1]


def test_hybrid_search_trains_checks_and_marks_the_front(synth_data, tmp_path):
    reg = Registry(tmp_path / "r.db")
    candidates = ["L4-hybrid:backbone=relu,neck=relu,head=relu", "L4-hybrid:backbone=relu,neck=leaky,head=leaky"]
    rows = hybrid_search(reg, synth_data, candidates, budget=1, imgsz=64, target="relu-only", name="hy",
                         recipe={"batch": 8, "workers": 0}, verbose=False)
    shares = {r["variant"]: r["npu_share"] for r in rows}
    assert shares[candidates[0]] == 1.0 and shares[candidates[1]] < 1.0
    assert any(r["pareto"] for r in rows) and all(r["status"] == "finished" for r in rows)
    assert {r.variant for r in reg.runs("hy")} and len(reg.runs("hy")) == 2
    from npuyolo.report.render import render_series

    text = render_series(reg, "hy", tmp_path / "rep", target="relu-only").read_text()
    assert "Pareto" in text and "yes" in text and (tmp_path / "rep" / "series_hy_accuracy_vs_npu.png").is_file()
    again = json.loads(runner.invoke(app, ["hybrid", "search", "--data", str(synth_data), "--candidate", candidates[0],
                                           "--candidate", candidates[1], "--budget", "1", "--imgsz", "64", "--name", "hy",
                                           "--registry", str(reg.path), "--json"]).stdout)
    assert {r["variant"] for r in again} == set(candidates)  # finished members are skipped, not retrained
    assert len(Registry(reg.path).runs("hy")) == 2
