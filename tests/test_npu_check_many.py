"""Issue 34: `npu check` takes several models in one call (the demo started it once per series member, each start
importing PyTorch again); each is checked as a call of its own would (the same service call, in turn), and --json
names each row's model."""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper
from typer.testing import CliRunner

from npuyolo.cli import app

from .helpers import leaky_onnx

TARGETS = ["-t", "relu-only", "-t", "edgetpu"]


def relu_onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="n")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def cli_json(*args) -> list:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_npu_check_of_several_models_is_each_model_checked_in_turn(tmp_path):
    relu, leaky = str(relu_onnx(tmp_path / "relu.onnx")), str(leaky_onnx(tmp_path / "leaky.onnx"))
    alone = {m: cli_json("npu", "check", m, *TARGETS, "--registry", tmp_path / "alone.db", "--json") for m in (relu, leaky)}
    both = cli_json("npu", "check", relu, leaky, *TARGETS, "--registry", tmp_path / "both.db", "--json")
    assert [(r["model"], r["target"], r["onnx"]) for r in both] == [(m, t, m) for m in (relu, leaky) for t in ("relu-only", "edgetpu")]
    assert both == alone[relu] + alone[leaky]  # the same rows as one call per model
    assert both[2]["fallback_ops"] == {"LeakyRelu": 1} and both[0]["fallback_ops"] == {}
    tables = CliRunner().invoke(app, ["npu", "check", relu, leaky, *TARGETS, "--registry", str(tmp_path / "tables.db")])
    assert tables.exit_code == 0 and tables.output.count("NPU compatibility of") == 2, tables.output
    assert tables.output.index("relu.onnx") < tables.output.index("leaky.onnx")
