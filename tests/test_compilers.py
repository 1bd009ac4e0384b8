"""Vendor compilers as referees: parsers on recorded real logs (no compiler needed), the install/list plumbing,
and — only where `npuyolo compilers install rknn` was run — a real RKNN build."""

import dataclasses
import json
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.compilers import envs, registry
from npuyolo.compilers.rknn import IO_OPS, failed_rule, map_to_onnx, parse_layer_table, parse_memory, parse_rewrites, parse_version

FIX = Path(__file__).parent / "fixtures" / "compilers"
runner = CliRunner()


def log(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ parsers (recorded logs)
def test_layer_table_of_a_real_rk3566_build():
    """RKNN-Toolkit2 2.5.0, L0-silu (Ultralytics head) on rk3566: the attention Softmax and the DFL/decode
    Reshapes + Softmax are the CPU rows (shared/research/real-compilers.md saw the same five)."""
    rows = parse_layer_table(log("rknn-L0-silu-rk3566.stdout"))
    assert [r.id for r in rows][:3] == [0, 1, 2]
    assert rows[0].op_type == "InputOperator" and rows[-1].op_type == "OutputOperator"
    work = [r for r in rows if r.op_type not in IO_OPS]
    cpu = [r.full_name for r in work if r.target == "CPU"]
    assert cpu == ["exSoftmax13:/model.10/m/m.0/attn/Softmax", "Reshape:/model.23/dfl/Reshape", "exSoftmax13:/model.23/dfl/Softmax",
                   "Reshape:/model.23/Sigmoid_output_0_rs", "Reshape:output0-rs"]
    conv = next(r for r in rows if r.id == 1)
    assert (conv.op_type, conv.target, conv.node, conv.output_shape) == ("ConvExSwish", "NPU", "/model.0/conv/Conv", "(1,16,320,320)")
    assert all(r.target in ("NPU", "CPU") for r in rows)


def test_memory_version_and_rewrites():
    out, err = log("rknn-L0-silu-rk3566.stdout"), log("rknn-L0-silu-rk3566.stderr")
    assert parse_memory(out) == {"internal_kb": pytest.approx(12256.2), "weight_kb": pytest.approx(2878.44)}
    assert parse_version(err) == "2.5.0"
    rewrites = parse_rewrites(err)
    assert rewrites[0].rule == "fuse_sigmoid_mul_to_exswish"
    assert rewrites[0].removed == ["/model.0/act/Sigmoid", "/model.0/act/Mul"] and rewrites[0].added == ["/model.0/act/Mul_2exswish"]
    removal = next(r for r in rewrites if r.rule == "reduce_tp_in_mesh_forward")  # a removal that adds nothing
    assert removal.removed == ["/model.23/dfl/Transpose"] and removal.added == []
    assert parse_layer_table("no table in here\n") == [] and parse_memory("") == {}


def test_failed_rule_from_the_tools_suggestion_or_its_traceback():
    assert failed_rule(log("rknn-fail-sdpa.stderr")) == "fuse_exmatmul_add_mul_exsoftmax13_exmatmul_to_sdpa"
    assert failed_rule(log("rknn-fail-rs-split.stderr")) == "seperate_conv_rs_split"
    assert failed_rule(log("rknn-L0-silu-rk3566.stderr")) is None


def _graph_nodes():
    """A slice of L0-silu with its real node names (what map_to_onnx receives: name, op, inputs, outputs)."""
    return [
        ("/model.10/cv1/conv/Conv", "Conv", ["x"], ["c1"]),
        ("/model.10/cv1/act/Sigmoid", "Sigmoid", ["c1"], ["s1"]),
        ("/model.10/cv1/act/Mul", "Mul", ["c1", "s1"], ["a1"]),
        ("/model.10/m/m.0/attn/MatMul", "MatMul", ["q", "k"], ["mm"]),
        ("/model.10/m/m.0/attn/Softmax", "Softmax", ["mm"], ["sm"]),
        ("/model.10/m/m.0/attn/proj/conv/Conv", "Conv", ["sm"], ["p"]),
        ("/model.10/m/m.0/Add", "Add", ["a1", "p"], ["r"]),
        ("/model.23/dfl/Reshape", "Reshape", ["r"], ["d1"]),
        ("/model.23/dfl/Transpose", "Transpose", ["d1"], ["d2"]),
        ("/model.99/NotInTheLog", "Mul", ["zz"], ["zz2"]),
    ]


def test_mapping_chain_row_derived_rewrite_fused():
    rows = parse_layer_table(log("rknn-L0-silu-rk3566.stdout"))
    maps = {m.node: m for m in map_to_onnx(_graph_nodes(), rows, parse_rewrites(log("rknn-L0-silu-rk3566.stderr")))}
    got = {name: (m.target, m.via) for name, m in maps.items()}
    assert got["/model.10/cv1/conv/Conv"] == ("NPU", "row")
    assert got["/model.10/cv1/act/Sigmoid"] == ("NPU", "fused")  # SiLU fused: row OpType ConvExSwish
    assert got["/model.10/cv1/act/Mul"] == ("NPU", "fused")
    assert got["/model.10/m/m.0/attn/MatMul"] == ("NPU", "derived")  # row 'exMatMul:.../MatMul#1'
    assert maps["/model.10/m/m.0/attn/MatMul"].row == "exMatMul:/model.10/m/m.0/attn/MatMul#1"
    assert got["/model.10/m/m.0/attn/Softmax"] == ("CPU", "row")
    assert got["/model.10/m/m.0/attn/proj/conv/Conv"] == ("NPU", "derived")  # '..._ConvAdd'
    assert got["/model.10/m/m.0/Add"] == ("NPU", "fused")  # the Add that ConvAdd absorbed
    assert got["/model.23/dfl/Reshape"] == ("CPU", "row")
    assert got["/model.23/dfl/Transpose"] == ("CPU", "rewrite")  # swapped with the (CPU) Softmax, then merged
    assert got["/model.99/NotInTheLog"] == (None, None)  # never guessed


def test_a_rewritten_conv_and_its_relu_reach_the_row_the_rewrite_became():
    """L2-relu on rk3588 (recorded log, two attempts): fuse_concat_conv removed /model.13/cv1/conv/Conv and added
    '/model.6/cv2/act/Relu_output_0_conv', whose row is named with a suffix ('..._ConvAddRelu'); the Relu after the
    removed Conv has no row and is fused there."""
    from npuyolo.compilers.rknn import split_log

    out, err = split_log(log("rknn-L2-relu-rk3588.log"))
    assert "seperate_conv_rs_split" not in err and "fuse_concat_conv" in err  # the last attempt, not the failed first
    rows = parse_layer_table(out)
    assert parse_memory(out) == {"internal_kb": pytest.approx(37006.2), "weight_kb": pytest.approx(3633.44)}
    nodes = [("/model.11/Resize", "Resize", ["a"], ["u"]), ("/model.12/Concat", "Concat", ["u", "b"], ["c"]),
             ("/model.13/cv1/conv/Conv", "Conv", ["c", "w"], ["v"]), ("/model.13/cv1/act/Relu", "Relu", ["v"], ["r"])]
    got = {m.node: (m.target, m.via) for m in map_to_onnx(nodes, rows, parse_rewrites(err))}
    assert got == {"/model.11/Resize": ("NPU", "row"), "/model.12/Concat": ("NPU", "rewrite"),
                   "/model.13/cv1/conv/Conv": ("NPU", "rewrite"), "/model.13/cv1/act/Relu": ("NPU", "fused")}


def test_derived_names_prefer_the_longest_of_ours_and_skip_output_tensors():
    from npuyolo.compilers.rknn import LayerRow

    def row(i, op, name, target="NPU"):
        return LayerRow(i, op, "INT8", target, "", "", 0.0, f"{op}:{name}")

    rows = [row(1, "Transpose", "/a/Transpose_1_output_0_rs#1", "CPU"), row(2, "Conv", "/a/LeakyRelu_output_0_conv", "CPU")]
    nodes = [("/a/Transpose", "Transpose", [], ["t0"]), ("/a/Transpose_1", "Transpose", [], ["t1"]),
             ("/a/LeakyRelu", "LeakyRelu", [], ["l"])]
    got = {m.node: m.target for m in map_to_onnx(nodes, rows, [])}
    # '_output_' after a name is a new node on that tensor: neither Transpose_1 nor LeakyRelu is that row
    assert got == {"/a/Transpose": None, "/a/Transpose_1": None, "/a/LeakyRelu": None}
    rows = [row(1, "Transpose", "/a/Transpose_1#1", "CPU")]
    got = {m.node: m.target for m in map_to_onnx(nodes, rows, [])}
    assert got == {"/a/Transpose": None, "/a/Transpose_1": "CPU", "/a/LeakyRelu": None}


def test_agreement_lists_every_disagreement():
    """Our rk3566 profile against the recorded build: Softmax agrees (CPU both), the DFL Reshape does not."""
    from npuyolo.compilers.compile import agreement
    from npuyolo.compilers.rknn import RknnBuild
    from npuyolo.npu.analyze import analyze
    from npuyolo.npu.graph import load_graph
    from npuyolo.npu.profiles import target

    w = numpy_helper.from_array(__import__("numpy").ones((4, 4, 1, 1), "float32"), "w")
    shape = numpy_helper.from_array(__import__("numpy").array([1, 4, 16], "int64"), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/model.10/cv1/conv/Conv"),
             helper.make_node("Softmax", ["c"], ["s"], name="/model.10/m/m.0/attn/Softmax", axis=1),
             helper.make_node("Reshape", ["s", "shape"], ["y"], name="/model.23/dfl/Reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ours = analyze(load_graph(model), target("rknn-rk3566"))
    rows = parse_layer_table(log("rknn-L0-silu-rk3566.stdout"))
    build = RknnBuild("rknn-toolkit2", "2.5.0", "rk3566", "x.onnx", "x.log", 0.0, [], rows,
                      map_to_onnx([(n.name, n.op_type, list(n.input), list(n.output)) for n in nodes], rows, []), {}, 0)
    a = agreement(ours, build)
    assert (a.nodes, a.mapped, a.agree) == (3, 3, 2) and a.share == pytest.approx(2 / 3)
    [d] = a.disagreements
    assert (d["node"], d["op"], d["ours"], d["compiler"]) == ("/model.23/dfl/Reshape", "Reshape", "npu", "CPU")
    assert d["our_reason"] == "supported"


# ------------------------------------------------------------------------------------ install / list plumbing
def test_missing_compiler_is_one_line_naming_the_install_command(compilers_dir, tmp_path):
    db = tmp_path / "fresh" / "r.db"
    r = runner.invoke(app, ["npu", "compile", "L4-leaky", "--compiler", "rknn", "--target", "rk3588", "--data", str(tmp_path / "d.yaml"),
                            "--registry", str(db)])
    assert r.exit_code == 2
    assert "npuyolo compilers install rknn" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["npu", "check", "L4-leaky", "-t", "rk3566", "--referee", "rknn", "--registry", str(db)])
    assert r.exit_code == 2 and "npuyolo compilers install rknn" in r.output
    assert not db.parent.exists()  # nothing created for a command that could not run
    r = runner.invoke(app, ["npu", "compile", "L4-leaky", "--compiler", "rknn", "--target", "ethos-u55", "--data", "d.yaml"])
    assert r.exit_code == 2 and "rk3588" in r.output
    r = runner.invoke(app, ["compilers", "install", "nope"])
    assert r.exit_code == 2 and "unknown compiler" in r.output


def test_list_and_a_half_finished_install(compilers_dir):
    r = runner.invoke(app, ["compilers", "list", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert listed["root"] == str(compilers_dir)
    assert {c["name"]: c["installed"] for c in listed["compilers"]} == {"rknn": False, "vela": False, "imx500": False}
    (compilers_dir / "rknn" / "venv").mkdir(parents=True)  # an install killed before its manifest: not installed
    assert envs.installed("rknn") is None
    manifest = {"name": "rknn", "version": "2.5.0", "python": str(compilers_dir / "gone" / "python"), "venv": "v",
                "installed_at": "t", "pins": []}
    (compilers_dir / "rknn" / "manifest.json").write_text(json.dumps(manifest))
    assert envs.installed("rknn") is None  # its interpreter was deleted
    venv = compilers_dir / "rknn" / "venv-1"  # as install makes it: its python links to the base interpreter
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (compilers_dir / "rknn" / "manifest.json").write_text(json.dumps({**manifest, "python": str(venv / "bin" / "python"),
                                                                      "venv": str(venv)}))
    assert envs.require("rknn").version == "2.5.0"
    r = runner.invoke(app, ["compilers", "list"])
    assert "2.5.0" in r.output and "npuyolo compilers install vela" in r.output


def test_install_makes_a_venv_and_writes_the_manifest_last(compilers_dir, monkeypatch):
    """The real install path, offline: a spec with no packages to fetch (the venv's own pip is the 'compiler')."""
    fake = dataclasses.replace(registry.COMPILERS["rknn"], distribution="pip", steps=(), check="import json")
    monkeypatch.setitem(registry.COMPILERS, "rknn", fake)
    (compilers_dir / "rknn" / "venv-killed").mkdir(parents=True)  # a killed install of ours
    (compilers_dir / "rknn" / envs.MARKER).write_text("")
    env = registry.install("rknn")
    assert Path(env.python).is_file() and env.version and not (compilers_dir / "rknn" / "venv-killed").exists()
    assert json.loads((compilers_dir / "rknn" / "manifest.json").read_text())["python"] == env.python
    assert registry.install("rknn") == env  # installed: kept as it is
    failing = dataclasses.replace(fake, check="import no_such_module_here")
    monkeypatch.setitem(registry.COMPILERS, "rknn", failing)
    with pytest.raises(envs.CompilerError, match="install.log"):
        registry.install("rknn", force=True)
    assert envs.installed("rknn") == env  # a failed --force keeps the working install
    monkeypatch.setitem(registry.COMPILERS, "rknn", fake)
    again = registry.install("rknn", force=True)
    assert again.venv != env.venv and not Path(env.venv).exists() and Path(again.python).is_file()


def test_install_never_deletes_a_folder_it_did_not_make(compilers_dir):
    """NPUYOLO_COMPILERS_DIR=~/src would have removed a user's own ~/src/rknn (review finding; failed before)."""
    mine = compilers_dir / "rknn" / "src" / "important.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("user's work")
    with pytest.raises(envs.CompilerError, match="not made by npuyolo"):
        registry.install("rknn", python="/bin/false")
    assert mine.read_text() == "user's work"


# ------------------------------------------------------------------------------------ the real compiler
RKNN = envs.installed("rknn")


@pytest.mark.skipif(RKNN is None, reason="RKNN-Toolkit2 is not installed: run `npuyolo compilers install rknn` to run this test")
def test_real_rknn_build_referees_L4_leaky(synth_data, tmp_path):
    from npuyolo.registry.db import Registry

    r = runner.invoke(app, ["npu", "check", "L4-leaky", "--target", "rk3588", "--referee", "rknn", "--imgsz", "320",
                            "--data", str(synth_data), "--json"])
    assert r.exit_code == 0, r.output
    [res] = json.loads(r.stdout)
    b, a = res["build"], res["agreement"]
    assert b["compiler"] == "rknn-toolkit2" and b["version"] == RKNN.version and b["platform"] == "rk3588"
    assert b["summary"]["rows_cpu"] == 0 and b["summary"]["rows"] > 100  # L4-leaky is all NPU on rk3588
    assert b["memory"]["weight_kb"] > 0 and Path(b["log"]).is_file()
    assert "Network Layer Information Table" in Path(b["log"]).read_text()
    assert a["mapped"] == a["nodes"] and a["share"] == 1.0 and a["disagreements"] == []
    assert "training images" in res["calibration"]
    assert len((Path(b["log"]).parent / "calib-320.txt").read_text().split()) == 8
    r = runner.invoke(app, ["npu", "compile", "L4-leaky", "--compiler", "rknn", "--target", "rk3588", "--data", "/no/such/data.yaml"])
    assert r.exit_code == 2 and "data yaml not found" in r.output  # said before any export
    reg = Registry(readonly=True)
    [row] = reg.compiler_runs(model_ref="L4-leaky")
    assert row.target == "rknn-rk3588" and row.version == RKNN.version
    assert len(row.result["build"]["mappings"]) == a["nodes"]
    # an .onnx file is compiled as the analyzer sees it (chunk as Split), in its own folder beside the registry
    r = runner.invoke(app, ["npu", "compile", res["onnx"], "--compiler", "rknn", "--target", "rk3588", "--data", str(synth_data), "--json"])
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)
    assert again["agreement"]["mapped"] == again["agreement"]["agree"] == a["nodes"]
    assert Path(again["onnx"]).parent.parent.name.startswith("onnx-") and again["onnx"] != res["onnx"]


# ------------------------------------------------------------------------------------ profile fixes from the referee
def _analyze(nodes, inits, out_shape: dict, profile):
    import numpy as np

    from npuyolo.npu.analyze import analyze
    from npuyolo.npu.graph import load_graph
    from npuyolo.npu.profiles import target

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o, shape in out_shape.items()],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    report = analyze(load_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), target(profile))
    return {p.name: p for p in report.placements}


@pytest.mark.parametrize("profile", ["rknn-rk3588", "rknn-rk3566"])
def test_rknn_div_by_a_constant_is_npu_by_a_tensor_is_not(profile):
    """RKNN-Toolkit2 2.5.0 turned the head's Div by a constant into an NPU Mul; the PDF lists Div as float16 only."""
    import numpy as np

    nodes = [helper.make_node("Div", ["x", "two"], ["h"], name="by_const"), helper.make_node("Div", ["x", "h"], ["y"], name="by_tensor")]
    p = _analyze(nodes, {"two": np.array(2.0, "float32")}, {"y": [1, 64, 4, 4]}, profile)
    assert p["by_const"].placement == "npu" and "RKNN-Toolkit2 2.5.0 build log" in p["by_const"].source
    assert p["by_tensor"].placement == "cpu" and "const_input" in p["by_tensor"].reason


def test_ethos_u55_div_by_a_constant_is_npu_as_vela_placed_it():
    """Vela 5.2 (via onnx2tf) ran every L0/L2 head's Div by a constant on the U55; the profile had no Div rule (unknown)."""
    import numpy as np

    nodes = [helper.make_node("Div", ["x", "two"], ["h"], name="by_const"), helper.make_node("Div", ["x", "h"], ["y"], name="by_tensor")]
    p = _analyze(nodes, {"two": np.array(2.0, "float32")}, {"y": [1, 64, 4, 4]}, "ethos-u55")
    assert p["by_const"].placement == "npu" and "Vela 5.2" in p["by_const"].source
    assert p["by_tensor"].placement == "cpu" and "const_input" in p["by_tensor"].reason


def test_rk3566_layout_ops_feeding_only_the_cpu_softmax_run_on_the_cpu():
    """The DFL chain Reshape -> Transpose -> Softmax: the compiler put all three on the CPU of rk3566 (build log);
    a Reshape that also feeds an NPU op stays on the NPU; on rk3588 (Softmax on the NPU) nothing moves."""
    import numpy as np

    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r"], name="dfl/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="dfl/Transpose", perm=[0, 2, 1, 3]),
             helper.make_node("Softmax", ["t"], ["y"], name="dfl/Softmax", axis=1),
             helper.make_node("Reshape", ["x", "s1"], ["r2"], name="shared/Reshape"),
             helper.make_node("Softmax", ["r2"], ["y2"], name="other/Softmax", axis=1),
             helper.make_node("Relu", ["r2"], ["y3"], name="other/Relu")]
    inits = {"s1": np.array([1, 4, 16, 16], "int64")}
    outs = {"y": [1, 16, 4, 16], "y2": [1, 4, 16, 16], "y3": [1, 4, 16, 16]}
    rk66 = _analyze(nodes, inits, outs, "rknn-rk3566")
    assert {n: rk66[n].placement for n in ("dfl/Reshape", "dfl/Transpose", "dfl/Softmax")} == {n: "cpu" for n in ("dfl/Reshape", "dfl/Transpose", "dfl/Softmax")}
    assert "runs with them on the CPU" in rk66["dfl/Reshape"].reason and "build log" in rk66["dfl/Reshape"].source
    assert rk66["shared/Reshape"].placement == "npu"
    rk88 = _analyze(nodes, inits, outs, "rknn-rk3588")
    assert rk88["dfl/Reshape"].placement == rk88["dfl/Transpose"].placement == rk88["dfl/Softmax"].placement == "npu"


# ------------------------------------------------------------------------------------ Vela (Ethos-U)
def test_vela_summary_all_on_the_npu():
    """Vela 5.2.0 on onnx2tf's full-integer L4-leaky (320 px), Ethos-U55-128: every operator on the NPU."""
    from npuyolo.compilers.vela import parse_summary_csv, parse_vela

    net = parse_vela(log("vela-L4-leaky-320-u55-128.stdout"))
    assert (net["accelerator"], net["system_config"], net["memory_mode"]) == ("Ethos_U55_128", "Ethos_U55_High_End_Embedded", "Shared_Sram")
    assert (net["npu_ops"], net["cpu_ops"], net["cpu_operators"]) == (223, 0, [])
    assert net["clock_mhz"] == 500 and net["sram_kib"] == pytest.approx(740.77) and net["off_chip_flash_kib"] == pytest.approx(2723.83)
    assert net["macs"] == 821800000
    perf = parse_summary_csv(log("vela-L4-leaky-320-u55-128.summary.csv"))
    assert perf["accelerator"] == "Ethos_U55_128" and perf["inference_ms"] == pytest.approx(21.053246)
    assert perf["inferences_per_second"] == pytest.approx(47.4986, rel=1e-4)


def test_vela_lists_cpu_operators():
    """The float-I/O TFLite (`*_integer_quant`) on Ethos-U85-256: its input Quantize and six output Dequantize run on
    the CPU — why npuyolo compiles the full-integer file."""
    from npuyolo.compilers.vela import parse_summary_csv, parse_vela

    net = parse_vela(log("vela-L4-leaky-320-u85-256-float-io.stdout"))
    assert (net["accelerator"], net["npu_ops"], net["cpu_ops"]) == ("Ethos_U85_256", 223, 7)
    assert net["cpu_operators"][0] == {"op": "Passthrough", "name": "tfl.quantize"}
    assert [c["name"] for c in net["cpu_operators"][1:]] == [f"PartitionedCall:{i}" for i in (2, 0, 3, 5, 1, 4)]
    assert net["dram_kib"] == pytest.approx(4402.52) and net["clock_mhz"] == 1000
    assert parse_summary_csv(log("vela-L4-leaky-320-u85-256-float-io.summary.csv"))["inference_ms"] == pytest.approx(6.740171)
    assert parse_vela("nothing") == {"cpu_operators": []} and parse_summary_csv("") == {}


def test_vela_whole_graph_agreement():
    """Vela's operators are not our nodes: agreement is whether both sides put everything on the NPU."""
    from types import SimpleNamespace

    from npuyolo.compilers.compile import agreement
    from npuyolo.compilers.vela import VelaBuild, parse_vela

    def build(name):
        return VelaBuild("vela", "5.2.0", "ethos-u85-256", "x.onnx", "x.tflite", "x.log", 0.0, parse_vela(log(name)), {})

    place = SimpleNamespace(placement="npu")
    all_npu = SimpleNamespace(target="ethos-u85", nodes_cpu=0, nodes_unknown=0, placements=[place] * 223)
    a = agreement(all_npu, build("vela-L4-leaky-320-u55-128.stdout"))
    assert (a.basis, a.share, a.mapped) == ("whole graph", 1.0, 0) and "vela: 0 CPU of 223 operators" in a.verdict
    b = agreement(all_npu, build("vela-L4-leaky-320-u85-256-float-io.stdout"))  # 7 CPU operators: the profile said none
    assert b.share == 0.0 and "vela: 7 CPU of 230 operators" in b.verdict and "profile: 0 CPU and 0 unknown of 223 nodes" in b.verdict


def test_vela_calibration_writes_onnx2tf_sample_so_nothing_is_fetched(tmp_path):
    import numpy as np

    from npuyolo.compilers.compile import calibration_arrays
    from npuyolo.compilers.vela import SAMPLE_NAME, write_calibration_npy

    arrays, what = calibration_arrays(None, 64, count=3)
    path = write_calibration_npy(arrays, tmp_path)
    data, sample = np.load(path), np.load(tmp_path / SAMPLE_NAME)
    assert data.shape == (3, 64, 64, 3) and data.dtype == np.float32 and 0 <= data.min() and data.max() <= 1
    assert sample.shape == (20, 128, 128, 3) and sample.dtype == np.float32
    assert "synthetic" in what


VELA = envs.installed("vela")


@pytest.mark.skipif(VELA is None, reason="Vela is not installed: run `npuyolo compilers install vela` to run this test")
def test_real_vela_compile_of_L4_leaky(synth_data):
    """onnx2tf + Vela for real (~1-2 min): full-integer TFLite, every operator on the U55, a time estimate, recorded."""
    from npuyolo.registry.db import Registry

    r = runner.invoke(app, ["npu", "compile", "L4-leaky", "--compiler", "vela", "--target", "ethos-u55-128", "--imgsz", "160",
                            "--data", str(synth_data), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    b = res["build"]
    assert b["compiler"] == "vela" and b["version"] == VELA.version and b["tflite"].endswith("_full_integer_quant.tflite")
    assert b["network"]["cpu_ops"] == 0 and b["network"]["npu_ops"] > 100 and b["performance"]["inference_ms"] > 0
    a = res["agreement"]
    assert (a["basis"], a["share"]) == ("whole graph", 1.0) and "vela: 0 CPU of" in a["verdict"]
    calib = Path(b["tflite"]).parents[1] / "calib"
    assert (calib / "calibration_image_sample_data_20x128x128x3_float32.npy").is_file()  # ours: onnx2tf fetched nothing
    [row] = Registry(readonly=True).compiler_runs(model_ref="L4-leaky")
    assert (row.compiler, row.target) == ("vela", "ethos-u55")


def test_api_compile_names_the_install_command(compilers_dir, tmp_path):
    from npuyolo import Workspace
    from npuyolo.compilers.envs import CompilerMissingError

    with pytest.raises(CompilerMissingError, match="npuyolo compilers install vela"):
        Workspace(tmp_path / "r.db").compile("L4-leaky", "vela", "ethos-u55-128", tmp_path / "data.yaml")


def test_api_compile_needs_data_for_rknn_and_vela_as_the_cli_does(compilers_dir, tmp_path):
    """Issue 32: `npu compile` asked for --data for rknn/vela, while `Workspace.compile` silently calibrated on
    synthetic images; both doors now go through one service and say the same (the CLI with its flag)."""
    from typer.testing import CliRunner

    from npuyolo import NpuyoloError, Workspace
    from npuyolo.cli import app

    for compiler, target in (("vela", "ethos-u55-128"), ("rknn", "rk3588")):
        with pytest.raises(NpuyoloError, match=f"^data is required for the {compiler} compiler"):
            Workspace(tmp_path / "r.db").compile("L4-leaky", compiler, target, None)
        said = CliRunner().invoke(app, ["npu", "compile", "L4-leaky", "--compiler", compiler, "-t", target,
                                        "--registry", str(tmp_path / "r.db")]).output
        assert f"--data is required for the {compiler} compiler" in said
    with pytest.raises(NpuyoloError, match="^target is required for the rknn compiler"):
        Workspace(tmp_path / "r.db").compile("L4-leaky", "rknn", data=tmp_path / "data.yaml")
    assert not (tmp_path / "r.db").exists()


def test_fused_row_names_are_read_as_whole_ops():
    from npuyolo.compilers.rknn import fused_parts

    assert fused_parts("ConvLeakyReluAdd") == ["LeakyRelu", "Add"]
    assert fused_parts("ConvAddRelu") == ["Add", "Relu"] and fused_parts("ConvExSwish") == ["Swish"]
    assert fused_parts("ConvHardSwish") == ["HardSwish"] and fused_parts("Conv") == []
    assert fused_parts("exMatMul") == [] and fused_parts("ConvSomethingNew") == []  # a MatMul absorbs no Mul


def test_a_host_follow_rule_needs_its_source():
    import yaml
    from pydantic import ValidationError

    from npuyolo.npu.profiles import TargetProfile, _files

    raw = yaml.safe_load(_files().joinpath("rknn-rk3566.yaml").read_text(encoding="utf-8"))
    assert TargetProfile(**raw).host_follow_ops == ["Reshape", "Transpose"]
    with pytest.raises(ValidationError, match="host_follow_source"):
        TargetProfile(**{**raw, "host_follow_source": " "})


@pytest.mark.skipif(RKNN is None, reason="RKNN-Toolkit2 is not installed: run `npuyolo compilers install rknn` to run this test")
def test_real_rknn_compile_of_a_run_is_kept_with_the_run(synth_data, tiny_recipe, tmp_path):
    """A run compiles at its training size; the log lands in the run's folder and is listed as the run's artefact."""
    from npuyolo.registry.db import Registry
    from npuyolo.train.trainer import train_variant

    db = tmp_path / "r.db"
    run = train_variant(Registry(db), "L4-relu", synth_data, tiny_recipe, verbose=False)
    r = runner.invoke(app, ["npu", "compile", str(run.run_id), "--compiler", "rknn", "--target", "rk3566", "--data", str(synth_data),
                            "--registry", str(db), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["run_id"] == run.run_id and res["agreement"]["share"] == 1.0
    reg = Registry(db, readonly=True)
    record = reg.get_run(run.run_id)
    log = Path(record.artifact_path("compiler/rknn-toolkit2/rk3566/log"))
    assert log.is_file() and Path(record.save_dir) in log.parents and "Network Layer Information Table" in log.read_text()
    assert "-64.onnx" in res["onnx"]  # the size it was trained at
    [row] = reg.compiler_runs(run_id=run.run_id)
    assert row.target == "rknn-rk3566" and row.log_path == str(log)


def _fake_vela(compilers_dir, stdout_file: str | None, summary_file: str | None):
    """A 'vela' that prints a recorded log and writes <tflite stem>_summary_x.csv, as Vela 5.2 does (review tests)."""
    venv = compilers_dir / "vela" / "venv-fake"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "vela"
    out = f"print(open({str(FIX / stdout_file)!r}).read())" if stdout_file else "print('Warning: nothing to report')"
    csv_line = (f"import shutil; shutil.copy({str(FIX / summary_file)!r}, str(od / (Path(sys.argv[1]).stem + '_summary_x.csv')))"
                if summary_file else "")
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\n{out}\n"
                      f"od = Path(sys.argv[sys.argv.index('--output-dir') + 1]); od.mkdir(parents=True, exist_ok=True)\n{csv_line}\n")
    script.chmod(0o755)
    (venv / "bin" / "python").symlink_to(sys.executable)
    manifest = {"name": "vela", "version": "5.2.0", "python": str(venv / "bin" / "python"), "venv": str(venv), "installed_at": "t", "pins": []}
    (compilers_dir / "vela" / "manifest.json").write_text(json.dumps(manifest))


def test_vela_reads_its_own_summary_and_refuses_an_unreadable_log(compilers_dir, tmp_path):
    """Before: the last *_summary_*.csv in a shared folder was read (another model's time), and a log without an
    operator summary counted as '0 CPU operators' (100 % agreement)."""
    from npuyolo.compilers import vela

    tflite = tmp_path / "model_full_integer_quant.tflite"
    tflite.write_bytes(b"not read by the fake")
    _fake_vela(compilers_dir, "vela-L4-leaky-320-u55-128.stdout", "vela-L4-leaky-320-u55-128.summary.csv")
    stale = tmp_path / "work" / "vela-ethos-u55-128" / "zzz_other_model_summary_x.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text((FIX / "vela-L4-leaky-320-u85-256-float-io.summary.csv").read_text())
    build = vela.compile_onnx(tmp_path / "m.onnx", "ethos-u55-128", tmp_path / "c.npy", tmp_path / "work", tflite=tflite)
    expected = vela.parse_summary_csv((FIX / "vela-L4-leaky-320-u55-128.summary.csv").read_text())
    assert build.performance == expected and build.performance != vela.parse_summary_csv(stale.read_text())
    (compilers_dir / "vela" / "venv-fake").rename(compilers_dir / "vela" / "old")
    import shutil

    shutil.rmtree(compilers_dir / "vela" / "old")
    _fake_vela(compilers_dir, None, None)
    with pytest.raises(envs.CompilerError, match="no operator summary"):
        vela.compile_onnx(tmp_path / "m.onnx", "ethos-u55-128", tmp_path / "c.npy", tmp_path / "work2", tflite=tflite)


def test_compile_with_a_wrong_data_yaml_creates_no_registry(compilers_dir, tmp_path):
    _fake_vela(compilers_dir, None, None)
    db = tmp_path / "fresh" / "r.db"
    r = runner.invoke(app, ["npu", "compile", "L4-relu", "--compiler", "vela", "-t", "ethos-u55-128", "--data",
                            str(tmp_path / "missing.yaml"), "--registry", str(db)])
    assert r.exit_code == 2 and "Traceback" not in r.output and not db.exists()


def test_rknn_calibration_list_has_no_spaces_whatever_the_registry_path(tmp_path):
    """RKNN splits a dataset line on spaces (one path per input): a registry under 'My Runs/' broke the build."""
    from npuyolo.compilers.rknn import _local_dataset

    images = tmp_path / "My Runs" / "calib 160"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"{i}.png").write_bytes(b"png%d" % i)
    listing = tmp_path / "My Runs" / "calib.txt"
    listing.write_text("\n".join(str(images / f"{i}.png") for i in range(3)) + "\n")
    work = tmp_path / "work dir"
    work.mkdir()
    local = _local_dataset(listing, work)
    lines = local.read_text().split()
    assert len(lines) == 3 and all(" " not in x and not x.startswith("/") for x in lines)
    assert [(work / x).read_bytes() for x in lines] == [b"png0", b"png1", b"png2"]


def test_compilers_are_chosen_from_one_registry_and_share_a_build_type(monkeypatch, synth_data, tmp_path):
    """Choosing a compiler was an if/else and the build records shared no type: now every profile's compiler is an
    entry of the compiler registry (compilers/registry.py), and each build record class has what the registry and
    tables read."""
    import dataclasses

    from npuyolo.compilers.compile import Build
    from npuyolo.compilers.imx500 import Imx500Build
    from npuyolo.compilers.rknn import RknnBuild
    from npuyolo.compilers.vela import VelaBuild
    from npuyolo.deploy import compile as compile_mod

    wanted = {name for name in Build.__annotations__}
    for cls in (RknnBuild, VelaBuild, Imx500Build):
        assert wanted <= {f.name for f in dataclasses.fields(cls)} and callable(cls.summary), cls
    seen = {}

    def fake_build(job):
        seen["job"] = job
        return VelaBuild(compiler="vela", version="test", platform=job.platform, onnx=str(job.onnx), tflite="", log="",
                         seconds=0.0, network={"npu_ops": 7, "cpu_ops": 0}, performance={}), "fake calibration"

    monkeypatch.setattr(compile_mod, "require", lambda name: None)
    monkeypatch.setitem(registry.COMPILERS, "vela", dataclasses.replace(registry.COMPILERS["vela"], build=fake_build))
    result = compile_mod.compile_model(None, "L4-relu", "vela", "ethos-u55-128", synth_data, imgsz=64, workdir=tmp_path, calib=3)
    assert isinstance(result.build, Build) and result.build.version == "test" and result.calibration == "fake calibration"
    assert (seen["job"].platform, seen["job"].calib, seen["job"].imgsz) == ("ethos-u55-128", 3, 64)
    assert result.agreement.basis == "whole graph"


# ------------------------------------------------------------------------------------------------ forged manifests and huge inputs (the former test_hostile3_env.py)
from .helpers import cli, one_line_error

def fake_install(compilers_dir: Path, name: str = "rknn", python: str | None = None, venv: Path | None = None) -> dict:
    """A manifest as `compilers install` writes it (venv-*/bin/python inside the compiler's folder), or a forged one."""
    home = compilers_dir / name
    own = home / "venv-20260101000000000000"
    (own / "bin").mkdir(parents=True, exist_ok=True)
    if not (own / "bin" / "python").exists():
        (own / "bin" / "python").symlink_to(sys.executable)  # a venv's python links to its base interpreter
    manifest = {"name": name, "version": "2.5.0", "python": python or str(own / "bin" / "python"), "venv": str(venv or own),
                "installed_at": "t", "pins": []}
    (home / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("forgery", ["outside", "python-outside-its-venv", "venv-linked-outside"])
def test_a_forged_compiler_manifest_is_never_run(compilers_dir, tmp_path, synth_data, forgery):
    from npuyolo.compilers import envs

    marker = tmp_path / "PWNED"
    evil = tmp_path / "elsewhere" / "bin" / "python"
    evil.parent.mkdir(parents=True)
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    if forgery == "outside":
        fake_install(compilers_dir, python=str(evil), venv=evil.parent.parent)
    elif forgery == "python-outside-its-venv":
        fake_install(compilers_dir, python=str(evil))
    else:
        linked = compilers_dir / "rknn" / "venv-linked"
        fake_install(compilers_dir)
        linked.symlink_to(evil.parent.parent)
        fake_install(compilers_dir, python=str(linked / "bin" / "python"), venv=linked)
    assert envs.installed("rknn") is None
    out = one_line_error(cli("npu", "compile", "L4-relu", "--compiler", "rknn", "--target", "rk3588", "--imgsz", "64",
                             "--data", synth_data, registry=tmp_path / "r.db"))
    assert "not npuyolo's" in out and not marker.exists(), out
    listed = json.loads(cli("compilers", "list", "--json").stdout)["compilers"]
    assert not next(c for c in listed if c["name"] == "rknn")["installed"]
    r = cli("compilers", "install", "rknn", "--json")  # before: reported the forged entry as installed (exit 0)
    assert "not made by npuyolo" in one_line_error(r) and not marker.exists()


def test_a_compilers_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("NPUYOLO_COMPILERS_DIR", str(tmp_path / "afile"))
    for command in (["compilers", "install", "rknn", "--json"], ["compilers", "list"]):
        assert "is a file" in one_line_error(cli(*command))


def test_npu_compile_refuses_a_huge_declared_input_before_allocating(compilers_dir, tmp_path, synth_data, monkeypatch):
    """An ONNX file declaring a 100000 x 100000 input: calibration images were made at that size (30 GB)."""
    import onnx
    from onnx import TensorProto, helper

    fake_install(compilers_dir)
    side = 100000
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, side, side])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["out"], name="act")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")

    def allocates(*a, **k):
        raise AssertionError("calibration images were made at the declared size")

    monkeypatch.setattr(registry, "write_calibration", allocates)  # what the rknn and vela builds calibrate with
    monkeypatch.setattr(registry, "calibration_arrays", allocates)
    out = one_line_error(cli("npu", "compile", tmp_path / "big.onnx", "--compiler", "rknn", "--target", "rk3588",
                             "--data", synth_data, registry=tmp_path / "r.db"))
    assert "4096" in out
    assert "4096" in one_line_error(cli("npu", "compile", "L4-relu", "--imgsz", "100000", "--compiler", "rknn", "--target",
                                        "rk3588", "--data", synth_data, registry=tmp_path / "r.db"))


def _imported(code: str) -> set[str]:
    """The packages a piece of Python source imports at module level (absolute imports only; not inside functions)."""
    import ast

    found = set()
    for node in ast.parse(code).body:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_compiler_envs_that_run_bundles_install_what_the_runner_imports():
    """`deploy bundle`'s runner (numpy, Pillow, the board's runtime) is run inside the rknn and vela environments (the
    simulator / LiteRT on the host); the vela install had no Pillow, so the int8 .tflite bundle died on `import PIL`
    there (issue 33; failed before). Each such install pins Pillow and its check imports what the runner imports."""
    from importlib import resources

    tmpl = resources.files("npuyolo.deploy.bundle").joinpath("templates", "npuyolo_infer.py.tmpl").read_text(encoding="utf-8")
    top_level = {m for m in _imported(tmpl) - set(sys.stdlib_module_names) if m != "__future__"}
    assert {"numpy", "PIL"} <= top_level
    for name, runtime in (("vela", "ai_edge_litert"), ("rknn", "rknn")):
        s = registry.COMPILERS[name]
        assert top_level | {runtime} <= _imported(s.check), (name, s.check)
        assert "pillow" in {a.lower().split("=")[0].split("<")[0] for step in s.steps for a in step}, name
