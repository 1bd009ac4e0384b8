"""One test per profile rule corrected against the vendors' documents (shared/research/profile-audit.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuyolo.npu.analyze import analyze
from npuyolo.deploy.check import check_model
from npuyolo.npu.graph import load_graph
from npuyolo.npu.normalize import slices_to_split
from npuyolo.npu.profiles import target
from npuyolo.npu.rewrite import rewrite_leaky


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Placement of untrained L4-relu / L4-leaky / L4-leaky0.1015625 exports (placement needs no training)."""
    out = {}
    work = tmp_path_factory.mktemp("audit")
    targets = ["edgetpu", "deepx-dx-m1", "nxp-neutron", "amd-dpu", "tidl", "ethos-u85", "rknn-rk3566"]
    for variant in ("L4-relu", "L4-leaky", "L4-leaky0.1015625"):
        result = check_model(None, variant, targets, imgsz=64, nc=2, workdir=work / variant)
        out[variant] = {r.target: r for r in result.reports}
        out[variant]["_onnx"] = result.onnx_paths
    return out


def placement(report, op: str) -> set[str]:
    return {p.placement for p in report.placements if p.op == op}


def test_edgetpu_leakyrelu_hardswish_matmul_are_cpu_not_unknown(reports):
    edgetpu = target("edgetpu")
    assert {op: edgetpu.rule(op).place for op in ("LeakyRelu", "HardSwish", "MatMul")} == {op: "cpu" for op in ("LeakyRelu", "HardSwish", "MatMul")}
    leaky = reports["L4-leaky"]["edgetpu"]
    assert placement(leaky, "LeakyRelu") == {"cpu"} and "#597" in next(p.reason + str(p.source) for p in leaky.placements if p.op == "LeakyRelu")


def test_relu_decomp_rewrite_places_l4_leaky_like_l4_relu_on_edgetpu(reports):
    path = reports["L4-leaky"]["_onnx"]["edgetpu"]
    rewritten, count = rewrite_leaky(onnx.load(path), "relu-decomp")
    assert count > 0
    after = analyze(load_graph(rewritten), target("edgetpu"))
    assert reports["L4-leaky"]["edgetpu"].share_nodes < 0.05
    assert after.share_nodes == reports["L4-relu"]["edgetpu"].share_nodes == 1.0


def test_chunk_exports_as_split_whatever_the_exporter(reports, tmp_path):
    """torch 2.14 writes C3k2's chunk as Slices; the export normalises them, so DX-COM's Split rule applies."""
    path = reports["L4-relu"]["_onnx"]["deepx-dx-m1"]
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Slice" not in ops and ops.count("Split") == 9
    assert placement(reports["L4-relu"]["deepx-dx-m1"], "Split") == {"npu"}


def test_slices_to_split_is_exact_and_makes_checks_exporter_independent(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")]
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in
             (("s0", [0]), ("e0", [4]), ("s1", [4]), ("e1", [np.iinfo(np.int64).max]), ("ax", [1]))]
    nodes = [helper.make_node("Slice", ["x", "s0", "e0", "ax"], ["a"]), helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["b"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits), opset_imports=[helper.make_opsetid("", 17)])
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.arange(128, dtype=np.float32).reshape(1, 8, 4, 4)})
    assert slices_to_split(model) == 1 and [n.op_type for n in model.graph.node] == ["Split"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.arange(128, dtype=np.float32).reshape(1, 8, 4, 4)})
    assert all(np.array_equal(u, v) for u, v in zip(before, after))


def test_deepx_resize_needs_pytorch_half_pixel(reports):
    resize = [p for p in reports["L4-relu"]["deepx-dx-m1"].placements if p.op == "Resize"]
    assert resize and all(p.placement == "cpu" and "asymmetric" in p.reason for p in resize)
    assert target("deepx-dx-m1").rule("Sub").place == "npu" and target("deepx-dx-m1").rule("Div").place == "npu"


def test_rknn_rk3566_sub_and_resize_as_the_compiler_placed_it(reports):
    rk = target("rknn-rk3566")
    assert rk.rule("Sub").place == "npu" and "§3.1.56" in rk.rule("Sub").source
    assert "real-compilers.md" in rk.rule("Resize").source  # the documented mode list vs the compiler's own placement
    assert placement(reports["L4-relu"]["rknn-rk3566"], "Resize") == {"npu"}


def test_tidl_div_and_slice_constant_inputs():
    tidl = target("tidl")
    assert tidl.rule("Div").place == "npu"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    for n, expect in ((1, "cpu"), (4, "npu")):
        vals = {"starts": [0] * n, "ends": [4] * n if n == 1 else [1, 4, 4, 4], "axes": [1] if n == 1 else [0, 1, 2, 3]}
        inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in vals.items()]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4] if n == 1 else [1, 4, 4, 4])
        g = helper.make_graph([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="s")], "g", [x], [y], inits)
        report = analyze(load_graph(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])), tidl)
        assert report.placements[0].placement == expect


def test_ethos_u_rules_from_vela_5_2(reports):
    u85, u55 = target("ethos-u85"), target("ethos-u55")
    assert u85.rule("Div").place == "npu" and "5.2" in u85.sources["vela-ops"]
    assert u85.rule("Resize").constraints == {"resize_scale": "integer", "resize_scale_max": 1024}
    assert "dtype_in" not in u55.rule("HardSwish").constraints  # the int8-only rule was Vela 3.10's
    assert reports["L4-leaky"]["ethos-u85"].share_nodes == 1.0


def test_relu_only_says_what_it_is():
    assert "not a real NPU" in target("relu-only").title


def test_nxp_neutron_runs_leakyrelu_unfused(reports):
    neutron = target("nxp-neutron")
    assert "LeakyRelu" not in neutron.fusable_activations and neutron.rule("LeakyRelu").place == "npu"
    leaky, relu = reports["L4-leaky"]["nxp-neutron"], reports["L4-relu"]["nxp-neutron"]
    assert leaky.share_nodes == relu.share_nodes == 1.0
    unfused = lambda r, op: sum(p.op == op and not p.fused_into for p in r.placements)  # noqa: E731
    assert unfused(leaky, "LeakyRelu") == 83 and unfused(relu, "Relu") == 0  # each LeakyReLU stays its own NPU op; ReLU fuses


def test_amd_dpu_runs_leakyrelu_only_at_26_over_256(reports):
    assert placement(reports["L4-leaky"]["amd-dpu"], "LeakyRelu") == {"cpu"}  # trained at 0.1: not what the DPU runs
    assert placement(reports["L4-leaky0.1015625"]["amd-dpu"], "LeakyRelu") == {"npu"}  # the variant that fits exactly
    assert reports["L4-leaky0.1015625"]["amd-dpu"].share_nodes == reports["L4-relu"]["amd-dpu"].share_nodes


def test_hailo_follows_the_model_zoo_cut_at_the_six_head_convs(tmp_path):
    """hailo_model_zoo yolov11n.yaml parses up to cv2.x.2/cv3.x.2: attention and splits on chip, DFL+decode on host."""
    result = check_model(None, "L0-silu", ["hailo-8"], imgsz=64, nc=2, workdir=tmp_path / "l0")
    r = result.reports[0]
    assert not r.unknown_ops and r.partitions_host == 1 and r.partitions_npu == 1
    by_name = {p.name: p for p in r.placements}
    for p in r.placements:  # C2PSA attention runs on the chip (the profile under-counted it as CPU/unknown)
        if "/attn/" in p.name and p.placement != "n/a":
            assert p.placement == "npu", p
    ends = [n for n in by_name if n.endswith(("cv2.0.2/Conv", "cv3.2.2/Conv"))]
    assert len(ends) == 2 and all(by_name[n].placement == "npu" for n in ends)
    host = [p for p in r.placements if p.placement == "cpu"]
    assert host and all(p.reason.startswith("after the vendor's end nodes") for p in host)
    assert {"Softmax", "Div"} <= {p.op for p in host}  # DFL softmax and the decode
    l4 = check_model(None, "L4-leaky", ["hailo-8"], imgsz=64, nc=2, workdir=tmp_path / "l4").reports[0]
    assert l4.share_nodes == 1.0 and not l4.fallback_ops  # the NPU head's class sigmoid fuses into its end conv


def test_end_nodes_must_cite_a_source():
    from pydantic import ValidationError

    from npuyolo.npu.profiles import TargetProfile

    base = target("hailo-8").model_dump()
    with pytest.raises(ValidationError, match="end_nodes_source"):
        TargetProfile(**{**base, "end_nodes_source": None})


def test_edgetpu_maps_no_activation_larger_than_documented(tmp_path):
    """YOLOv8n maps whole at 224 px, not at 320 (ultralytics#4754); at 640 px 13 of 257 ops (#4719)."""
    small = check_model(None, "L4-relu", ["edgetpu"], imgsz=224, nc=2, workdir=tmp_path / "224").reports[0]
    large = check_model(None, "L4-relu", ["edgetpu"], imgsz=320, nc=2, workdir=tmp_path / "320").reports[0]
    assert small.share_nodes == 1.0
    first = next(p for p in large.placements if p.op == "Conv")
    assert first.placement == "cpu" and "larger than the largest activation" in first.reason and "#4754" in first.source
    assert large.share_nodes == 0.0  # single subgraph: nothing after the first unmapped op stays on the TPU
