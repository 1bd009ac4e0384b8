import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.npu.analyze import analyze
from npuyolo.deploy.check import check_model
from npuyolo.npu.graph import GraphError, load_graph
from npuyolo.npu.profiles import TargetError, TargetProfile, target, targets
from npuyolo.npu.rewrite import RewriteError, rewrite_leaky

from .conftest import ROADSIGN4_MINI

runner = CliRunner()
TARGETS = {"rknn-rk3588", "rknn-rk3566", "hailo-8", "deepx-dx-m1", "ethos-u55", "ethos-u85", "tidl", "furiosa-warboy",
           "edgetpu", "imx500", "relu-only", "nxp-neutron", "amd-dpu"}


# ---------------------------------------------------------------------------------------------- tiny graphs
class G:
    """A tiny ONNX graph builder: x [1, C, H, W] -> nodes -> declared outputs."""

    def __init__(self, c=8, h=16, w=16):
        self.nodes, self.inits, self.c = [], [], c
        self.x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])
        self.n = 0

    def const(self, arr) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def op(self, op_type, inputs, **attrs) -> str:
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.n}", **attrs))
        return out

    def conv(self, x, k=3, stride=1, group=1, cout=None) -> str:
        cout = cout or self.c
        w = self.const(np.random.default_rng(self.n).normal(size=(cout, self.c // group, k, k)) * 0.1)
        return self.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)

    def model(self, *outputs) -> onnx.ModelProto:
        draft = helper.make_model(helper.make_graph(self.nodes, "t", [self.x], [], self.inits),
                                  opset_imports=[helper.make_opsetid("", 17)])
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(draft).graph.value_info}
        draft.graph.output.extend(inferred[o] for o in outputs)
        return draft


def place(model, target_name_or_profile):
    profile = target(target_name_or_profile) if isinstance(target_name_or_profile, str) else target_name_or_profile
    report = analyze(load_graph(model), profile)
    return report, {p.name: p for p in report.placements}


def custom(**overrides) -> TargetProfile:
    base = target("relu-only").model_dump()
    base.update(name="custom", **overrides)
    return TargetProfile(**base)


# ---------------------------------------------------------------------------------------------- profiles
def test_all_targets_present_and_every_rule_cited():
    assert set(targets()) == TARGETS
    for p in targets().values():
        assert p.sources and p.fallback_note and p.fusion_source
        assert all(rule.source.strip() for rule in p.ops.values())
    shown = json.loads(runner.invoke(app, ["npu", "targets", "--json"]).stdout)
    assert shown["rknn-rk3588"]["ops"]["Softmax"]["source"].startswith("RKNN-PDF")
    assert shown["edgetpu"]["fallback"] == "single_subgraph"


def test_unknown_constraint_in_a_profile_is_rejected():
    with pytest.raises(ValueError, match="unknown constraint"):
        custom(ops={"Conv": {"place": "npu", "constraints": {"kernel_maximum": 3}, "source": "x"}})


# ---------------------------------------------------------------------------------------------- rule kinds
def test_op_support_and_unknown_ops():
    g = G()
    a = g.conv("x")
    b = g.op("Relu", [a])
    c = g.op("Sigmoid", [b])
    d = g.op("Erf", [c])
    report, p = place(g.model(d), "relu-only")
    assert (p["Conv_1"].placement, p["Relu_2"].placement, p["Sigmoid_3"].placement, p["Erf_4"].placement) == ("npu", "npu", "cpu", "unknown")
    assert "no rule for Erf" in p["Erf_4"].reason and p["Sigmoid_3"].source.startswith("definition")
    assert report.unknown_ops == {"Erf": 1} and report.fallback_ops == {"Sigmoid": 1}


def test_kernel_constraints():
    g = G()
    m = g.op("MaxPool", ["x"], kernel_shape=[5, 5], pads=[2, 2, 2, 2], strides=[1, 1])
    _, on_rk = place(g.model(m), "rknn-rk3588")  # kernel <= 7
    _, on_tidl = place(g.model(m), "tidl")  # only 1/2/3
    assert on_rk["MaxPool_1"].placement == "npu"
    assert on_tidl["MaxPool_1"].placement == "cpu" and "kernel [5, 5] not in [1, 2, 3]" in on_tidl["MaxPool_1"].reason
    g = G()
    c = g.conv("x", k=4)
    assert place(g.model(c), "tidl")[1]["Conv_1"].placement == "cpu"  # even kernels unsupported


def test_stride_and_group_constraints():
    g = G(c=256)
    c = g.conv("x", k=3, stride=4)
    assert "stride [4, 4] exceeds 3" in place(g.model(c), "ethos-u55")[1]["Conv_1"].reason
    g = G(c=256)
    dw = g.conv("x", k=3, group=256)
    assert place(g.model(dw), "furiosa-warboy")[1]["Conv_1"].placement == "cpu"  # group <= 128
    g = G(c=8)
    dw7 = g.conv("x", k=7, group=8)
    assert "depthwise kernel [7, 7]" in place(g.model(dw7), "deepx-dx-m1")[1]["Conv_1"].reason


def test_axis_constraints():
    g = G()
    s1 = g.op("Softmax", ["x"], axis=1)
    s2 = g.op("Softmax", [s1], axis=2)
    _, p = place(g.model(s2), "rknn-rk3588")  # axis 1 or 3
    assert p["Softmax_1"].placement == "npu" and p["Softmax_2"].placement == "cpu"
    g = G()
    cat = g.op("Concat", ["x", "x"], axis=1)
    assert place(g.model(cat), "furiosa-warboy")[1]["Concat_1"].placement == "cpu"  # height axis only
    assert place(g.model(cat), "tidl")[1]["Concat_1"].placement == "npu"  # axes -3/-2/-1 of 4D


def test_resize_mode_and_scale_constraints():
    def resize(mode, scale):
        g = G()
        r = g.op("Resize", ["x", "", g.const([1, 1, scale, scale])], mode=mode)
        return g.model(r)

    assert place(resize("nearest", 2), "relu-only")[1]["Resize_1"].placement == "npu"
    assert "mode 'linear'" in place(resize("linear", 2), "relu-only")[1]["Resize_1"].reason
    assert place(resize("nearest", 4), "ethos-u55")[1]["Resize_1"].placement == "npu"
    assert "not in [2, 4, 8]" in place(resize("nearest", 3), "ethos-u55")[1]["Resize_1"].reason
    assert place(resize("nearest", 3), "tidl")[1]["Resize_1"].placement == "cpu"  # power of 2 only
    def resize_coord(mode):
        g = G()
        return g.model(g.op("Resize", ["x", "", g.const([1, 1, 3, 3])], mode="nearest", coordinate_transformation_mode=mode))

    assert place(resize_coord("pytorch_half_pixel"), "deepx-dx-m1")[1]["Resize_1"].placement == "npu"  # integer scale
    assert "'asymmetric' not in" in place(resize_coord("asymmetric"), "deepx-dx-m1")[1]["Resize_1"].reason


def test_slope_clip_and_dtype_constraints():
    dpu_like = custom(ops={"LeakyRelu": {"place": "npu", "constraints": {"slope_in": [0.1015625]}, "source": "Vitis-AI DPU"}})
    g = G()
    lr = g.op("LeakyRelu", ["x"], alpha=0.1)
    assert "slope 0.1 not in [0.1015625]" in place(g.model(lr), dpu_like)[1]["LeakyRelu_1"].reason
    g = G()
    ok = g.op("Clip", ["x", g.const(0.0), g.const(6.0)])
    bad = g.op("Clip", [ok, g.const(0.0), g.const(3.0)])
    _, p = place(g.model(bad), "edgetpu")
    assert p["Clip_1"].placement == "npu" and "clip range (0, 3)" in p["Clip_2"].reason
    g = G()
    hs = g.op("HardSwish", ["x"])
    assert place(g.model(hs), "ethos-u55")[1]["HardSwish_1"].placement == "npu"  # int8 deployment
    int16 = target("ethos-u55").model_copy(update={"deploy_dtype": "int16"})
    assert place(g.model(hs), int16)[1]["HardSwish_1"].placement == "npu"  # Vela 5.2 dropped 3.10's int8-only rule
    int8_only = custom(ops={"HardSwish": {"place": "npu", "constraints": {"dtype_in": ["int8", "uint8"]}, "source": "test"}},
                       deploy_dtype="int16")
    assert "data type int16" in place(g.model(hs), int8_only)[1]["HardSwish_1"].reason


def test_fusion_with_preceding_conv():
    g = G()
    a = g.conv("x")
    r = g.op("Relu", [a])  # sole consumer of the conv: fused
    b = g.conv(r)
    r2 = g.op("Relu", [b])
    add = g.op("Add", [b, r2])  # conv output also feeds the Add: not fused
    report, p = place(g.model(add), "relu-only")
    assert p["Relu_2"].fused_into == "Conv_1" and p["Relu_4"].fused_into is None
    assert report.share_nodes == 1.0 and report.nodes_total == 5
    g = G()
    c = g.conv("x")
    s = g.op("Sigmoid", [c])
    m = g.op("Mul", [c, s])  # SiLU pattern
    report, p = place(g.model(m), "rknn-rk3588")
    assert p["Sigmoid_2"].fused_into == p["Mul_3"].fused_into == "Conv_1"
    report, p = place(g.model(m), "relu-only")  # no Swish fusion, Sigmoid on CPU
    assert report.share_nodes == pytest.approx(2 / 3) and report.share_nodes_fused == pytest.approx(2 / 3)


def test_requires_fusion():
    g = G()
    c = g.conv("x")
    fused = g.op("Clip", [c, g.const(0.0), g.const(6.0)])
    add = g.op("Add", [fused, fused])
    loose = g.op("Clip", [add, g.const(0.0), g.const(6.0)])
    _, p = place(g.model(loose), "deepx-dx-m1")
    assert p["Clip_2"].placement == "npu" and p["Clip_4"].placement == "cpu" and "requires_fusion" in p["Clip_4"].reason


def test_edge_tpu_single_subgraph():
    g = G()
    a = g.conv("x")
    lr = g.op("LeakyRelu", [a], alpha=0.1)  # not supported on Edge TPU (google-coral/edgetpu#597)
    b = g.conv(lr)
    r = g.op("Relu", [b])
    report, p = place(g.model(r), "edgetpu")
    assert p["Conv_1"].placement == "npu" and p["LeakyRelu_2"].placement == "cpu"
    assert p["Conv_3"].placement == "cpu" and "only one accelerator subgraph" in p["Conv_3"].reason
    assert report.share_nodes == 0.25
    cpu_blocker = custom(fallback="single_subgraph")
    g = G()
    a = g.conv("x")
    s = g.op("Sigmoid", [a])  # cpu on the relu-only rules
    b = g.conv(s)
    _, p = place(g.model(b), cpu_blocker)
    assert p["Conv_3"].placement == "cpu"
    _, per_op = place(g.model(b), "relu-only")
    assert per_op["Conv_3"].placement == "npu"


def test_partitions_transitions_and_macs():
    g = G(c=8, h=16, w=16)
    a = g.conv("x", k=3)
    s = g.op("Sigmoid", [a])
    b = g.conv(s, k=1)
    r = g.op("Relu", [b])
    report, p = place(g.model(r), "relu-only")
    assert (report.partitions_npu, report.partitions_host, report.transitions) == (2, 1, 2)
    assert {t["tensor"] for t in report.crossing_tensors} == {a, s}
    assert p["Conv_1"].macs == 16 * 16 * 8 * 8 * 9 and p["Conv_3"].macs == 16 * 16 * 8 * 8
    assert report.share_macs == 1.0 and report.share_nodes == 0.75


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_give_one_clear_error(tmp_path):
    garbage = tmp_path / "g.onnx"
    garbage.write_bytes(b"\x00\x01 definitely not protobuf")
    g = G()
    good = tmp_path / "good.onnx"
    onnx.save(g.model(g.conv("x")), str(good))
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    dyn = G()
    dyn.x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16, 16])
    dynamic = tmp_path / "d.onnx"
    onnx.save(dyn.model(dyn.conv("x")), str(dynamic))
    for path, message in ((garbage, "not a readable ONNX model"), (truncated, "not"), (dynamic, "dynamic shape"),
                          (tmp_path / "missing.onnx", "file not found")):
        with pytest.raises(GraphError, match=message):
            load_graph(path)
        result = runner.invoke(app, ["npu", "check", str(path), "-t", "relu-only"])
        assert result.exit_code == 2 and "error" in result.output
    with pytest.raises(TargetError, match="unknown target 'tpu9000'"):
        target("tpu9000")
    assert runner.invoke(app, ["npu", "check", str(good), "-t", "tpu9000"]).exit_code == 2


# ---------------------------------------------------------------------------------------------- levels on real graphs
def shares(variant, targets_, imgsz=64):
    result = check_model(None, variant, targets_, imgsz=imgsz, nc=4)
    return {r.target: r for r in result.reports}


def test_levels_explain_themselves_on_real_graphs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    l1, l2 = shares("L1-relu", ["relu-only", "edgetpu"]), shares("L2-relu", ["relu-only", "edgetpu"])
    assert {"MatMul", "Softmax"} <= set(l1["relu-only"].fallback_ops)  # attention
    assert "MatMul" not in l2["relu-only"].fallback_ops
    assert l2["edgetpu"].share_nodes > 2 * l1["edgetpu"].share_nodes  # the MatMul no longer cuts the TPU subgraph
    l2t, l3t = shares("L2-relu", ["tidl"])["tidl"], shares("L3-relu", ["tidl"])["tidl"]
    assert l2t.fallback_ops.get("MaxPool") == 3 and "MaxPool" not in l3t.fallback_ops
    l3r, l4r = shares("L3-relu", ["rknn-rk3566"])["rknn-rk3566"], shares("L4-relu", ["rknn-rk3566"])["rknn-rk3566"]
    assert "Softmax" in l3r.fallback_ops and l4r.share_nodes == 1.0  # DFL softmax left the graph


def test_l4_leaky_rewrite_reaches_l4_relu_share_on_relu_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relu = json.loads(runner.invoke(app, ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", "64", "--json"]).stdout)[0]
    leaky = json.loads(runner.invoke(app, ["npu", "check", "L4-leaky", "-t", "relu-only", "--imgsz", "64", "--json"]).stdout)[0]
    silu = json.loads(runner.invoke(app, ["npu", "check", "L0-silu", "-t", "relu-only", "--imgsz", "64", "--json"]).stdout)[0]
    assert relu["share_nodes"] >= 0.99 and leaky["share_nodes"] < 0.7 and silu["share_nodes"] < 0.8
    assert leaky["fallback_ops"] == {"LeakyRelu": 83} and len(leaky["placements"]) == leaky["nodes_total"]
    rewritten = tmp_path / "leaky.relu-decomp.onnx"
    result = runner.invoke(app, ["npu", "rewrite", leaky["onnx"], "--leaky", "relu-decomp", "--out", str(rewritten)])
    assert result.exit_code == 0 and "rewrote 83" in result.stdout
    after = json.loads(runner.invoke(app, ["npu", "check", str(rewritten), "-t", "relu-only", "--json"]).stdout)[0]
    assert after["share_nodes"] == relu["share_nodes"] >= 0.99
    assert after["share_macs"] == relu["share_macs"] == 1.0 and after["partitions_host"] == 0


def _inputs(imgsz: int) -> list[np.ndarray]:
    """Noise, then three real roadsign4 photos (shipped in tests/fixtures: a bare clone has them too)."""
    rng = np.random.default_rng(0)
    batch = [rng.random((1, 3, imgsz, imgsz), dtype=np.float32), rng.normal(size=(1, 3, imgsz, imgsz)).astype(np.float32)]
    photos = sorted((ROADSIGN4_MINI / "images" / "val").glob("*.jpg"))[:3]
    assert len(photos) == 3
    for photo in photos:
        im = cv2.resize(cv2.imread(str(photo)), (imgsz, imgsz))[..., ::-1].transpose(2, 0, 1)[None] / 255.0
        batch.append(np.ascontiguousarray(im, dtype=np.float32))
    return batch


@pytest.mark.parametrize("method", ["relu-decomp", "relu-exact", "max"])
def test_rewrite_is_numerically_equal(method, tmp_path):
    import torch

    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    model = build_model("L4-leaky", nc=4)
    torch.manual_seed(0)
    with torch.no_grad():  # trained-like spread of pre-activations, negative ones included
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    src = export_onnx(model, tmp_path / "m.onnx", imgsz=128, head="npu")
    original = onnx.load(str(src))
    rewritten, count = rewrite_leaky(original, method)
    assert count == 83 and not any(n.op_type == "LeakyRelu" for n in rewritten.graph.node)
    a = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in _inputs(128):
        for ya, yb in zip(a.run(None, {"images": x}), b.run(None, {"images": x})):
            assert np.abs(ya - yb).max() <= 1e-5
    with pytest.raises(RewriteError):
        rewrite_leaky(original, "magic")


def test_check_records_in_registry(tmp_path, monkeypatch):
    from npuyolo.registry.db import Registry

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "r.db"
    result = runner.invoke(app, ["npu", "check", "L2-relu6", "-t", "tidl", "-t", "hailo-8", "--imgsz", "64", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    rows = Registry(db).npu_checks(model_ref="L2-relu6")
    assert {r.target for r in rows} == {"tidl", "hailo-8"} and all(0 < r.share_nodes <= 1 for r in rows)
    assert rows[0].report["placements"]


# ------------------------------------------------------------------------------------------------ npu rewrite's output, names and full disks (the former test_hostile3*.py)
import errno
import os
import stat

from npuyolo.registry.db import Registry

from .helpers import cli, foreign_file_and_link, leaky_onnx, one_line_error, sha

def test_rewrite_output_rules(tmp_path, monkeypatch):
    src = leaky_onnx(tmp_path / "m.onnx")
    foreign, target, link = foreign_file_and_link(tmp_path, "data.yaml", "train: images\n")
    db = tmp_path / "reg" / "npuyolo.db"
    Registry(db).close()
    monkeypatch.setenv("NPUYOLO_REGISTRY", str(db))
    before = sha(db)
    assert "did not write" in one_line_error(cli("npu", "rewrite", src, "--out", foreign))
    assert "symbolic link" in one_line_error(cli("npu", "rewrite", src, "--out", link))
    assert "registry" in one_line_error(cli("npu", "rewrite", src, "--out", db, "--force"))
    assert "not a regular file" in one_line_error(cli("npu", "rewrite", src, "--out", "/dev/null", "--force"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert foreign.read_text() == "train: images\n" and target.read_text() == "keep" and sha(db) == before
    out = tmp_path / "r.onnx"
    for _ in range(2):  # its own output may be written again
        assert cli("npu", "rewrite", src, "--out", out).exit_code == 0
    assert cli("npu", "rewrite", src, "--out", foreign, "--force").exit_code == 0
    assert onnx.load(str(foreign)).graph.node[0].op_type != "LeakyRelu"


def test_rewrite_bad_places_are_one_line(tmp_path):
    src = leaky_onnx(tmp_path / "m.onnx")
    assert "is a folder" in one_line_error(cli("npu", "rewrite", src, "--out", tmp_path))
    assert "is a folder" in one_line_error(cli("npu", "rewrite", src, "--out", f"{tmp_path}/nodir/"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "cannot create" in one_line_error(cli("npu", "rewrite", src, "--out", blocker / "sub" / "x.onnx"))
    assert "cannot write" in one_line_error(cli("npu", "rewrite", src, "--out", "/proc/x.onnx"))
    r = cli("npu", "rewrite", src, "--out", tmp_path / "new" / "deeper" / "x.onnx")  # a missing folder is made
    assert r.exit_code == 0 and (tmp_path / "new" / "deeper" / "x.onnx").is_file(), r.output


def test_rewrite_on_a_full_disk_leaves_the_old_file_whole(tmp_path, monkeypatch):
    src = leaky_onnx(tmp_path / "m.onnx")
    out = tmp_path / "m.relu-decomp.onnx"
    assert cli("npu", "rewrite", src).exit_code == 0
    before = sha(out)

    def full_disk(model, path, *args, **kwargs):
        Path(path).write_bytes(b"\x08\x07half")  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save", full_disk)
    assert "No space left on device" in one_line_error(cli("npu", "rewrite", src))
    assert sha(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.relu-decomp.onnx"]  # no partial file left


def clashing_graph(path: Path) -> Path:
    """x -> Relu 'n/relu' -> Mul by 'npuyolo_const_0' -> LeakyRelu 'n' -> y: the names a rewrite of 'n' would generate."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Relu", ["x"], ["n/relu"], name="n/relu"),
             helper.make_node("Mul", ["n/relu", "npuyolo_const_0"], ["n/ax"], name="n/ax"),
             helper.make_node("LeakyRelu", ["n/ax"], ["y"], name="n", alpha=0.1)]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", io[:1], io[1:], [numpy_helper.from_array(np.array(2.0, np.float32), "npuyolo_const_0")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("method", ["relu-decomp", "relu-exact", "max"])
def test_rewrite_of_a_graph_already_using_generated_names(tmp_path, method):
    import numpy as np
    import onnxruntime as ort

    src = clashing_graph(tmp_path / "clash.onnx")
    dst = tmp_path / f"out-{method}.onnx"
    r = cli("npu", "rewrite", src, "--leaky", method, "--out", dst)
    assert r.exit_code == 0, r.output
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    assert np.allclose(run(src), run(dst), atol=1e-6)
    assert not [n for n in onnx.load(str(dst)).graph.node if n.op_type == "LeakyRelu"]
