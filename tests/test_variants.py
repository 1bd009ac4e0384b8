import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.decode import decode_npu_outputs, nms
from npuyolo.deploy.export import export_onnx, onnx_metadata
from npuyolo.deploy.npu_head import NPUHeadModel
from npuyolo.variants.build import Stages, activation_census, build_model, cascade_sppf_pools, forward_check, model_yaml
from npuyolo.variants.spec import VariantError, activations, all_variants, levels, parse_variant

from .conftest import perturbed

runner = CliRunner()
GRID = [v.name for v in all_variants()]


def onnx_ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_cli_lists_five_levels_by_five_activations():
    result = runner.invoke(app, ["variants", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 25
    assert {r["level"] for r in rows} == {"L0", "L1", "L2", "L3", "L4"}
    assert {r["activation"] for r in rows} == {"silu", "relu", "relu6", "leaky", "hardswish"}


def test_levels_are_cumulative_data():
    lv = levels()
    assert lv["L0"].activation_scope == "backbone" and lv["L1"].activation_scope == "all"
    assert lv["L4"].attention == "none" and lv["L4"].sppf_pool == "3x3x2" and lv["L4"].head == "npu"
    assert lv["L1"].head == "ultralytics"
    assert all(level.sources for level in lv.values())


@pytest.mark.parametrize("name,expected", [
    ("L4-leaky", ("leaky", 0.1, "n")), ("L4-leaky0.2", ("leaky", 0.2, "n")), ("L2-relu6", ("relu6", None, "n")),
    ("L3-hardswish-s", ("hardswish", None, "s")), ("L0-silu", ("silu", None, "n")),
])
def test_parse_variant(name, expected):
    spec = parse_variant(name)
    assert (spec.activation, spec.slope, spec.scale) == expected
    assert parse_variant(spec.name) == spec


@pytest.mark.parametrize("bad", ["L9-relu", "L4-gelu", "L4-relu0.1", "leaky", "L4-leaky-q"])
def test_bad_variant_names(bad):
    with pytest.raises(VariantError):
        parse_variant(bad)
    result = runner.invoke(app, ["variants", "show", bad])
    assert result.exit_code == 2 and "error" in result.output


@pytest.mark.parametrize("name", GRID)
def test_every_variant_builds_runs_and_exports(name, tmp_path):
    spec = parse_variant(name)
    model = build_model(spec, nc=3)
    assert forward_check(model, 64) == torch.Size([1, 4 + 3, 84])
    census = activation_census(model)
    act_cls = activations()[spec.activation]["torch"]
    if spec.settings.activation_scope == "all":
        assert set(census) == {act_cls}
    else:  # L0: backbone only; neck and head keep SiLU
        assert census.get(act_cls, 0) > 0 and (spec.activation == "silu" or census.get("SiLU", 0) > 0)
    path = export_onnx(model, tmp_path / f"{name}.onnx", imgsz=64)
    ops = onnx_ops(path)
    outputs = [o.name for o in onnx.load(str(path)).graph.output]
    if spec.settings.head == "npu":
        assert outputs == ["boxes_s8", "scores_s8", "boxes_s16", "scores_s16", "boxes_s32", "scores_s32"]
        assert "Softmax" not in ops  # neither attention nor DFL softmax left in the graph
    else:
        assert outputs == ["output0"]
    has_attention = spec.settings.attention == "c2psa"
    assert ("MatMul" in ops) == has_attention
    pool_kernels = [a.ints for n in onnx.load(str(path)).graph.node if n.op_type == "MaxPool" for a in n.attribute if a.name == "kernel_shape"]
    assert pool_kernels and all(max(k) <= 3 for k in pool_kernels) == (spec.settings.sppf_pool == "3x3x2")
    assert set(activations()[spec.activation]["onnx"]) <= set(ops)
    if spec.settings.activation_scope == "all" and spec.activation != "silu":
        # the only sigmoids left are the class scores: one after the concat, or one per scale in the NPU head
        assert ops.get("Sigmoid", 0) == (3 if spec.settings.head == "npu" else 1)


def test_stages_split_backbone_neck_head():
    stages = Stages.of(model_yaml("L1-relu"))
    assert list(stages.backbone) == list(range(11)) and list(stages.neck) == list(range(11, 23)) and list(stages.head) == [23]


def test_l0_swaps_only_the_backbone():
    model = build_model("L0-relu", nc=2)
    for i, layer in enumerate(model.model):
        kinds = set(activation_census(layer))
        assert kinds <= ({"ReLU"} if i <= 10 else {"SiLU"}), (i, kinds)


def test_sppf_cascade_equals_5x5_pool_exactly():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 23, 17) * 10
    five = nn.MaxPool2d(5, 1, 2)(x)
    two_threes = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.MaxPool2d(3, 1, 1))(x)
    assert torch.equal(five, two_threes)


def test_l3_model_output_equals_l2_model_output_exactly():
    torch.manual_seed(0)
    model = build_model("L2-relu", nc=4).eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)[0].clone()
        assert cascade_sppf_pools(model) == 1
        after = model(x)[0]
    assert torch.equal(before, after)


def _randomised(model):
    return perturbed(model, seed=1, class_bias=0.0)


def test_l4_host_decode_equals_ultralytics_decode_in_torch():
    model = _randomised(build_model("L4-leaky", nc=5))
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        reference = model(x)[0].numpy()
        raw = [t.numpy() for t in NPUHeadModel(model)(x)]
    decoded = decode_npu_outputs(raw, strides=[8, 16, 32], reg_max=16)
    assert decoded.shape == reference.shape == (2, 4 + 5, 16 * 12 + 8 * 6 + 4 * 3)
    np.testing.assert_allclose(decoded, reference, rtol=1e-5, atol=1e-4)
    assert np.ptp(reference[:, :4]) > 10  # boxes really differ across anchors


def test_l4_onnx_npu_head_plus_host_decode_equals_ultralytics_onnx(tmp_path):
    model = _randomised(build_model("L4-relu", nc=3))
    npu = export_onnx(model, tmp_path / "npu.onnx", imgsz=96, head="npu")
    full = export_onnx(model, tmp_path / "full.onnx", imgsz=96, head="ultralytics")
    meta = onnx_metadata(npu)
    assert meta["npuyolo_head"] == "npu" and json.loads(meta["strides"]) == [8, 16, 32]
    x = np.random.default_rng(0).random((1, 3, 96, 96), dtype=np.float32)
    raw = ort.InferenceSession(str(npu), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    ref = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    decoded = decode_npu_outputs(raw, json.loads(meta["strides"]), int(meta["reg_max"]))
    np.testing.assert_allclose(decoded, ref, rtol=1e-4, atol=1e-3)
    dets_host, dets_ref = nms(decoded, conf=0.01), nms(ref, conf=0.01)
    assert len(dets_host[0]) == len(dets_ref[0]) > 0
    np.testing.assert_allclose(dets_host[0], dets_ref[0], rtol=1e-4, atol=1e-3)


def test_variants_show_prints_yaml_params_gflops():
    result = runner.invoke(app, ["variants", "show", "L4-leaky", "--nc", "6", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["yaml"]["npuyolo"]["head"] == "npu" and info["yaml"]["activation"] == "nn.LeakyReLU(0.1)"
    assert info["parameters"] > 2_000_000 and 5 < info["gflops"] < 8
    text = runner.invoke(app, ["variants", "show", "L0-silu"]).stdout
    assert "C2PSA" in text and "parameters:" in text and "GFLOPs@640" in text


def test_scale_is_selectable():
    n = build_model("L1-relu", nc=2)
    s = build_model("L1-relu-s", nc=2)
    assert sum(p.numel() for p in s.parameters()) > 3 * sum(p.numel() for p in n.parameters())


# ------------------------------------------------------------------------------------------------ checkpoints that run code (the former test_hostile.py)
from npuyolo.errors import CheckpointError

from .helpers import save_ultralytics_checkpoint

def test_a_checkpoint_that_runs_code_is_refused(evil_pt):
    from npuyolo.variants.checkpoint import load_weights

    path, marker = evil_pt
    with pytest.raises(CheckpointError, match="refused to load"):
        load_weights(path)
    assert not marker.exists()


def test_real_checkpoints_still_load(tmp_path):
    from npuyolo.variants.checkpoint import load_weights

    model = load_weights(save_ultralytics_checkpoint(tmp_path / "good.pt"))
    assert model.names == {0: "stop", 1: "yield"}


def test_ultralytics_own_checkpoint_loads_are_weights_only(tmp_path, evil_pt):
    import npuyolo.ultra  # noqa: F401  (installs the guards)
    from ultralytics.utils.torch_utils import strip_optimizer

    path, marker = evil_pt
    strip_optimizer(path)  # called by Ultralytics' final_eval on best.pt / last.pt; it logs and skips what it cannot load
    assert not marker.exists()
