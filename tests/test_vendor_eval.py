"""`deploy eval` of a vendor-compiled model: the driver protocol, output matching and scoring, and the manifest checks.

The vendor runtimes themselves (RKNN's simulator, TFLite) need the compilers, which the core suite never installs;
here the same driver runs ONNX Runtime (its `onnx` kind, the one IMX500's MCT model uses) in this environment, on a
"compiled" model that wants its input as a vendor runtime does: NHWC, uint8 0-255."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuyolo.deploy.eval import vendor
from npuyolo.deploy.eval.contract import ContractError, InputContract, check_contract, golden_image
from npuyolo.deploy.eval.evaluate import DeployError, load_deployable
from npuyolo.deploy.export import export_onnx
from npuyolo.variants.checkpoint import load_weights

from .conftest import REPO
from .test_deploy import randomised

TRAINED = REPO / "bench" / "seed_experiment" / "320" / "L4-leaky" / "best.pt"  # committed with the repository


def vendor_like(fp32, out, bgr: bool = False):
    """`fp32` behind a uint8 NHWC 0-255 input (as RKNN's runtime takes it); `bgr` swaps channels inside, a model
    compiled for the wrong channel order."""
    model = onnx.load(str(fp32))
    size = model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    nodes = [helper.make_node("Cast", ["raw"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["f", "k255"], ["d"]),
             helper.make_node("Transpose", ["d"], ["t" if bgr else "pre"], perm=[0, 3, 1, 2])]
    inits = [numpy_helper.from_array(np.array(255, np.float32), "k255")]
    if bgr:
        nodes.append(helper.make_node("Gather", ["t", "bgr"], ["pre"], axis=1))
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr"))
    pre = helper.make_model(helper.make_graph(nodes, "pre", [helper.make_tensor_value_info("raw", TensorProto.UINT8, [1, size, size, 3])],
                                              [helper.make_tensor_value_info("pre", TensorProto.FLOAT, [1, 3, size, size])], inits),
                            opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.save(onnx.compose.merge_models(pre, model, io_map=[("pre", model.graph.input[0].name)]), str(out))
    return out


@pytest.fixture
def here(monkeypatch):
    """The driver in this environment (the compilers are not installed in the core suite)."""
    monkeypatch.setattr(vendor, "require", lambda name: SimpleNamespace(python=sys.executable))


def artefact(path, fp32, contract):
    return vendor.CompiledArtefact("onnx", path, fp32, ("--model", str(path)), contract, path.parent)


def test_a_compiled_model_scores_through_the_driver_like_its_fp32_file(here, synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "m.onnx", imgsz=64, head="npu")
    compiled = vendor_like(fp32, tmp_path / "compiled.onnx")
    model = load_deployable(fp32)
    art = artefact(compiled, fp32, InputContract(64, layout="NHWC", scale="0-255", dtype="uint8"))
    with vendor.VendorRuntime(art, tmp_path / "eval.log") as runtime:
        assert runtime.info["runtime"] == "onnxruntime"
        report = check_contract(vendor._onnx_runner(model), runtime, art.contract)
        assert [m.index for m in report.matches] == list(range(6)) and min(report.cosine) > 0.99
        for seed in range(3):  # decoded predictions agree (the compiled model's input is rounded to 1/255 steps)
            image = golden_image(64, seed)
            want = model.decode(vendor._onnx_runner(model)(image))
            got = model.decode([m.take(runtime(vendor.prepare(image, art.contract))) for m in report.matches])
            assert got.shape == want.shape and np.abs(got - want).max() < 0.05 * np.abs(want).max()
        scored = vendor._validate(model, runtime, report, synth_data, 8, 0.001, art.contract)
    assert scored["images"] == 8 and set(scored) >= {"map50", "map50_95", "precision", "recall", "per_class"}


def test_a_compiled_model_that_reads_bgr_is_one_line_through_the_driver(here, tmp_path):
    fp32 = export_onnx(load_weights(TRAINED), tmp_path / "m.onnx", imgsz=64, head="npu")
    compiled = vendor_like(fp32, tmp_path / "compiled.onnx", bgr=True)
    model = load_deployable(fp32)
    art = artefact(compiled, fp32, InputContract(64, layout="NHWC", scale="0-255", dtype="uint8"))
    with vendor.VendorRuntime(art, tmp_path / "eval.log") as runtime, pytest.raises(ContractError) as e:
        check_contract(vendor._onnx_runner(model), runtime, art.contract, image=golden_image(64))
    assert "channels BGR" in str(e.value) and "\n" not in str(e.value)


def test_a_driver_that_cannot_load_its_model_is_one_line(here, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    art = artefact(bad, bad, InputContract(64))
    with pytest.raises(DeployError) as e:
        vendor.VendorRuntime(art, tmp_path / "eval.log")
    assert "did not start" in str(e.value) and "\n" not in str(e.value)


def imx_like(fp32, out):
    """`fp32` (Detect's [1, 4 + nc, N] xywh) ending as Ultralytics' IMX head does before its NMS layer: xyxy boxes
    [1, N, 4] and class scores [1, N, nc], two outputs (MCT's model_imx_dense.onnx has this shape)."""
    model = onnx.load(str(fp32))
    out_name = model.graph.output[0].name
    nc = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value - 4
    nodes = [helper.make_node("Transpose", [out_name], ["t"], perm=[0, 2, 1]),
             helper.make_node("Split", ["t", "sizes"], ["xy", "wh", "scores"], axis=2),
             helper.make_node("Div", ["wh", "two"], ["half"]),
             helper.make_node("Sub", ["xy", "half"], ["x1y1"]),
             helper.make_node("Add", ["xy", "half"], ["x2y2"]),
             helper.make_node("Concat", ["x1y1", "x2y2"], ["boxes"], axis=2)]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend([numpy_helper.from_array(np.array([2, 2, nc], np.int64), "sizes"),
                                    numpy_helper.from_array(np.array(2, np.float32), "two")])
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)])
    onnx.save(model, str(out))
    return out


def test_an_imx_model_ending_in_boxes_and_scores_scores_as_its_fp32_file(here, synth_data, tmp_path):
    """IMX500: `npu compile` writes MCT's quantized model without its NMS layer and a manifest naming the FP32 file;
    `deploy eval` joins its boxes and scores back into Detect's layout, so the contract check and the NMS are ours."""
    from npuyolo.compilers.manifest import write_manifest

    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "model_fp32.onnx", imgsz=64, head="ultralytics")
    dense = imx_like(fp32, tmp_path / "model_imx_dense.onnx")
    write_manifest(dense, "onnx", fp32, outputs="boxes,scores")
    assert vendor.is_compiled(dense) and not vendor.is_compiled(fp32)
    art = vendor.read_compiled(dense)
    assert art.kind == "onnx" and art.compiler == "imx500" and "--boxes-scores" in art.args and "--mct" not in art.args
    model = load_deployable(fp32)
    with vendor.VendorRuntime(art, tmp_path / "eval.log") as runtime:  # Detect's xywh + scores, anchor by anchor
        image = golden_image(64, 1)
        want = vendor._onnx_runner(model)(image)[0]
        got = runtime(vendor.prepare(image, art.contract))
        assert len(got) == 1 and got[0].shape == want.shape and np.abs(got[0] - want).max() < 1e-3 * np.abs(want).max()
    score = vendor.evaluate_compiled(dense, synth_data, batch=8)
    assert score.contract.startswith("NCHW") and min(c for c in score.cosine if c is not None) > 0.999
    assert score.result["map50"] == pytest.approx(score.fp32["map50"], abs=1e-6)
    assert score.result["images"] == score.fp32["images"] == 8
    write_manifest(dense, "onnx", fp32)  # without the join: two outputs against one, one line
    with pytest.raises(ContractError, match="returns 2 output tensor"):
        vendor.evaluate_compiled(dense, synth_data, batch=8)


@pytest.mark.parametrize("case", ["no manifest", "garbage", "other kind", "onnx missing", "not compiled"])
def test_a_compiled_file_without_a_usable_manifest_is_one_line(tmp_path, case):
    path = tmp_path / ("m.txt" if case == "not compiled" else "m.rknn")
    path.write_bytes(b"rknn")
    manifest = tmp_path / "m.rknn.npuyolo.json"
    if case == "garbage":
        manifest.write_text("{nope")
    elif case == "other kind":
        manifest.write_text(json.dumps({"kind": "tflite", "onnx": "m.onnx"}))
    elif case == "onnx missing":
        manifest.write_text(json.dumps({"kind": "rknn", "onnx": "gone.onnx", "target": "rk3588", "dataset": "c.txt"}))
    with pytest.raises(DeployError) as e:
        vendor.read_compiled(path)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ per-layer error (--layers)
def test_our_qdq_layer_errors_join_the_vendor_rows_per_conv(tmp_path):
    """Per Conv: the vendor's row (the activation after the Conv wins, as both quantizers fuse them) beside our QDQ
    model's cosine and SQNR on the same image, worst vendor cosine first."""
    from npuyolo.data.calibration import calibration_images, letterbox
    from npuyolo.deploy.eval.layers import LayerError, compare_layers, qdq_layer_errors
    from npuyolo.deploy.int8.quantize import quantize_onnx

    import cv2

    from .conftest import ROADSIGN4_MINI

    data = ROADSIGN4_MINI / "data.yaml"
    fp32 = export_onnx(load_weights(TRAINED), tmp_path / "m.onnx", imgsz=64, head="npu")
    int8 = tmp_path / "m-int8.onnx"
    quantize_onnx(fp32, int8, data, calib=4, per_channel=True)
    image = letterbox(cv2.imread(str(calibration_images(data, 1)[0])), 64)[None]
    ours = qdq_layer_errors(fp32, int8, image)
    graph = onnx.load(str(fp32)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    after = {n.input[0]: n for n in graph.node if n.op_type == "LeakyRelu"}
    # as RKNN's table lists them: each Conv's output, then the activation's output (which is the row that counts)
    vendor_rows = []
    for i, conv in enumerate(convs):
        vendor_rows.append(LayerError("Conv", conv.output[0], 0.5, 1.0, 0.5, 1.0))  # superseded by the activation's
        act = after.get(conv.output[0])
        if act is not None:
            vendor_rows.append(LayerError("LeakyRelu", act.output[0], 1 - i / 1000, 1.0, 0.999, 1.0))
    vendor_rows.append(LayerError("Concat", "not_a_conv_tensor", 0.1, 9.0, 0.1, 9.0))  # no Conv behind it: not joined
    rows = compare_layers(fp32, vendor_rows, ours)
    assert {r.conv for r in rows} == {c.name for c in convs}
    assert [r.vendor_cos for r in rows] == sorted(r.vendor_cos for r in rows)
    fused = [r for r in rows if r.tensor != next(c for c in convs if c.name == r.conv).output[0]]
    assert fused and all(r.vendor_cos > 0.9 for r in fused)  # the activation's row won over the Conv's own
    assert all(r.ours_cos is not None and -1 <= r.ours_cos <= 1 and r.ours_sqnr_db is not None for r in rows)
    assert sum(r.ours_cos > 0.9 for r in rows) > len(rows) / 2  # a sane QDQ model, judged per layer


def test_layers_of_a_build_without_accuracy_analysis_is_one_line(monkeypatch, tmp_path):
    art = vendor.CompiledArtefact("tflite", tmp_path / "m.tflite", tmp_path / "m.onnx", (), InputContract(64), tmp_path)
    monkeypatch.setattr(vendor, "read_compiled", lambda path: art)
    with pytest.raises(DeployError) as e:
        vendor.evaluate_compiled(art.path, tmp_path / "data.yaml", layers=True)
    assert "accuracy_analysis" in str(e.value) and "tflite" in str(e.value) and "\n" not in str(e.value)


def test_rknn_error_analysis_table_is_read_as_rknn_writes_it():
    """A trimmed real error_analysis.txt (RKNN-Toolkit2's accuracy_analysis of L4-leaky at 320 px, rk3588): header and
    rows without figures (a Conv fused into the op after it) are skipped, every other row keeps its four figures."""
    from npuyolo.deploy.eval.layers import parse_error_analysis

    from .conftest import REPO

    rows = parse_error_analysis((REPO / "tests" / "fixtures" / "rknn_error_analysis.txt").read_text())
    assert [(r.op, r.tensor) for r in rows[:3]] == [("Input", "images"), ("exDataConvert", "images_int8"),
                                                   ("Conv", "/model.0/conv/Conv_output_0")]
    assert rows[2].cos_entire == 0.99988 and rows[2].euc_entire == 7.83368
    sigmoid = next(r for r in rows if r.op == "Sigmoid")
    assert (sigmoid.tensor, sigmoid.cos_entire, sigmoid.cos_single) == ("scores_s32_int8", 0.2854, 0.3123)
    assert "/cv3.2/cv3.2.2/Conv_output_0" not in {r.tensor for r in rows}  # fused: no figures of its own


def test_a_forged_manifest_cannot_make_a_model_elsewhere_the_reference(tmp_path):
    """An .onnx file with a manifest beside it is scored in the imx500 environment; the FP32 file that manifest names
    must lie in the same folder (npu compile writes it there), not anywhere on disk."""
    elsewhere = tmp_path / "other-run" / "best.onnx"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"onnx")
    build = tmp_path / "build"
    build.mkdir()
    dense = build / "model_imx_dense.onnx"
    dense.write_bytes(b"onnx")
    for named in ("../other-run/best.onnx", str(elsewhere)):
        (build / "model_imx_dense.onnx.npuyolo.json").write_text(json.dumps({"kind": "onnx", "onnx": named, "mct": True}))
        with pytest.raises(DeployError, match="lies outside") as e:
            vendor.read_compiled(dense)
        assert "\n" not in str(e.value)


def test_layers_hands_the_driver_absolute_paths_though_the_artefact_was_named_relative(tmp_path, monkeypatch):
    """Issue 36: the driver runs in the artefact's folder, so a golden image named relative to ours is not found there
    ("the image of .../golden.png is invalid"): analyze() sends absolute paths."""
    import io
    import struct

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "build" / "m.rknn.layers"
    folder.mkdir(parents=True)
    (folder / "golden.png").write_bytes(b"png")
    answer = json.dumps({"error_analysis": ""}).encode()
    sent = io.BytesIO()
    runtime = object.__new__(vendor.VendorRuntime)
    runtime.art = SimpleNamespace(kind="rknn")
    runtime.log = tmp_path / "eval.log"
    runtime.proc = SimpleNamespace(stdin=sent, stdout=io.BytesIO(struct.pack("<Q", len(answer)) + answer),
                                   poll=lambda: None)
    runtime.analyze(Path("build/m.rknn.layers/golden.png"), Path("build/m.rknn.layers"))
    request = json.loads(sent.getvalue()[8:])
    assert Path(request["analyze"]).is_absolute() and Path(request["analyze"]) == folder / "golden.png"
    assert Path(request["dir"]).is_absolute() and Path(request["dir"]) == folder


# ------------------------------------------------------------------------------ manifests (issue 36, hostile round 5)
@pytest.fixture(scope="module")
def small_fp32(tmp_path_factory):
    return export_onnx(randomised("L4-leaky"), tmp_path_factory.mktemp("fp32") / "m.onnx", imgsz=64, head="npu")


def rknn_build(tmp_path, small_fp32, **changes):
    """A .rknn build as npu compile lays it out: the ONNX file in the export folder, the build folder beside it with
    its calibration list, the .rknn file and its manifest (written by write_manifest, then edited by `changes`)."""
    import shutil

    from npuyolo.compilers.manifest import write_manifest

    (tmp_path / "run").mkdir(parents=True)
    fp32 = Path(shutil.copyfile(small_fp32, tmp_path / "run" / "m.onnx"))
    build = tmp_path / "run" / "rknn-rk3588-m"
    (build / "calib").mkdir(parents=True)
    (build / "calib" / "000.jpg").write_bytes(b"jpg")
    (build / "calib.txt").write_text("calib/000.jpg\n")
    rknn = build / "m-rk3588.rknn"
    rknn.write_bytes(b"RKNN" * 1000)
    manifest = write_manifest(rknn, "rknn", fp32, target="rk3588", dataset=build / "calib.txt", disabled_rules=[])
    record = {**json.loads(manifest.read_text()), **changes}
    manifest.write_text(json.dumps(record))
    return rknn


def test_a_manifest_nested_100000_deep_is_one_line(tmp_path, small_fp32):
    rknn = rknn_build(tmp_path, small_fp32)
    (rknn.parent / (rknn.name + ".npuyolo.json")).write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(DeployError) as e:
        vendor.read_compiled(rknn)
    assert "manifest" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [("dataset", "/etc/passwd"), ("dataset", "../../../../etc/hostname"),
                                         ("onnx", "../../../elsewhere.onnx")])
def test_manifest_paths_stay_in_the_build_or_run_folder(tmp_path, small_fp32, field, value):
    (tmp_path / "elsewhere.onnx").write_bytes(small_fp32.read_bytes())  # a real model, outside the build's run
    rknn = rknn_build(tmp_path / "b", small_fp32, **{field: value})
    with pytest.raises(DeployError, match="lies outside") as e:
        vendor.read_compiled(rknn)
    assert "\n" not in str(e.value)


def test_a_calibration_list_naming_files_outside_is_refused(tmp_path, small_fp32):
    rknn = rknn_build(tmp_path, small_fp32)
    (rknn.parent / "calib.txt").write_text("/etc/passwd\n")
    with pytest.raises(DeployError, match="outside") as e:
        vendor.read_compiled(rknn)
    assert "\n" not in str(e.value)


def test_a_build_as_npu_compile_lays_it_out_is_read(tmp_path, small_fp32):
    art = vendor.read_compiled(rknn_build(tmp_path, small_fp32))
    assert art.kind == "rknn" and art.onnx == (tmp_path / "run" / "m.onnx").resolve() and "calib.txt" in art.args


def test_a_vendor_error_of_many_lines_is_cut_to_one(here, tmp_path, monkeypatch):
    script = tmp_path / "driver.py"
    script.write_text("import json, struct, sys\nmsg = json.dumps({'ok': False, 'error': 'E RKNN: [10:03] load failed\\n"
                      "Traceback (most recent call last):\\n  File x\\nValueError: bad\\n' * 2}).encode()\n"
                      "out = sys.stdout.buffer\nout.write(struct.pack('<Q', len(msg)) + msg)\nout.flush()\n")
    monkeypatch.setattr(vendor, "DRIVER", script)
    art = artefact(tmp_path / "m.onnx", tmp_path / "m.onnx", InputContract(64))
    with pytest.raises(DeployError) as e:
        vendor.VendorRuntime(art, tmp_path / "eval.log")
    assert "\n" not in str(e.value) and "ValueError: bad" in str(e.value) and len(str(e.value)) < 400


def test_a_compiled_file_changed_since_its_build_is_refused(tmp_path, small_fp32):
    """Issue 36: RKNN's simulator rebuilds from the manifest and never reads the .rknn, so a file cut to 10 bytes
    scored exactly like the intact build. The manifest records the built file's size and sha256; a mismatch is
    one line, before any scoring."""
    rknn = rknn_build(tmp_path, small_fp32)
    record = json.loads((rknn.parent / (rknn.name + ".npuyolo.json")).read_text())
    assert record["size"] == 4000 and len(record["sha256"]) == 64
    vendor.read_compiled(rknn)
    rknn.write_bytes(rknn.read_bytes()[:10])
    with pytest.raises(DeployError, match="changed since npu compile built it") as e:
        vendor.read_compiled(rknn)
    assert "\n" not in str(e.value)
    rknn.write_bytes(b"X" * 4000)  # same size, other bytes
    with pytest.raises(DeployError, match="changed since npu compile built it"):
        vendor.read_compiled(rknn)
    no_digest = rknn_build(tmp_path / "old", small_fp32, size=None, sha256=None)  # written before sizes were recorded
    with pytest.raises(DeployError, match="records no size and sha256"):
        vendor.read_compiled(no_digest)


def test_a_stray_manifest_beside_a_plain_export_does_not_make_it_compiled(tmp_path, small_fp32):
    """Issue 36: a manifest written for another file (copied beside a plain export) does not send `deploy eval
    model.onnx` into the IMX500 route: its recorded sha256 is not this file's."""
    import shutil

    from npuyolo.compilers.manifest import manifest_path, write_manifest

    build = tmp_path / "imx"
    build.mkdir()
    dense = Path(shutil.copyfile(small_fp32, build / "model_imx_dense.onnx"))
    shutil.copyfile(small_fp32, build / "model_fp32.onnx")
    write_manifest(dense, "onnx", build / "model_fp32.onnx", mct=True, outputs="boxes,scores")
    assert vendor.is_compiled(dense)
    plain = Path(shutil.copyfile(small_fp32, tmp_path / "model.onnx"))
    plain.write_bytes(plain.read_bytes() + b"\0")  # another file (an export of another size, say)
    shutil.copyfile(manifest_path(dense), manifest_path(plain))
    assert not vendor.is_compiled(plain)
    # a stray manifest from before sizes were recorded: npuyolo's own export (its metadata says so) is still plain
    manifest_path(plain).write_text(json.dumps({"kind": "onnx", "onnx": "model_fp32.onnx", "mct": True}))
    assert not vendor.is_compiled(Path(shutil.copyfile(small_fp32, plain)))


def test_a_missing_compiler_is_found_before_the_fp32_validation(tmp_path, small_fp32, monkeypatch):
    """Issue 36: for every compiled kind, the compiler's environment is looked for before minutes of FP32 scoring."""
    from npuyolo.compilers.envs import CompilerError

    def missing(name):
        raise CompilerError(f"the {name} compiler is not installed; `npuyolo compilers install {name}`")

    def never(*args, **kwargs):
        raise AssertionError("FP32 validation ran before the compiler was looked for")

    monkeypatch.setattr(vendor, "require", missing)
    monkeypatch.setattr(vendor, "_validate_at", never)
    with pytest.raises(CompilerError, match="rknn compiler is not installed"):
        vendor.evaluate_compiled(rknn_build(tmp_path, small_fp32), tmp_path / "data.yaml")


def test_a_runtime_that_dies_before_answering_is_one_line_with_its_exit_code(here, tmp_path, monkeypatch):
    """Issue 36: a truncated .tflite kills TFLite before the driver answers: "did not start (... exit None ...)" named
    the log twice. The exit code is waited for, the log's last line quoted, the log named once, all on one line."""
    script = tmp_path / "driver.py"
    script.write_text('import sys\nsys.stderr.write("Traceback (most recent call last):\\n'
                      'ValueError: Model provided has model identifier \'x\\n\', should be \'TFL3\'\\n")\nsys.exit(3)\n')
    monkeypatch.setattr(vendor, "DRIVER", script)
    art = artefact(tmp_path / "m.tflite", tmp_path / "m.onnx", InputContract(64))
    with pytest.raises(DeployError) as e:
        vendor.VendorRuntime(art, tmp_path / "eval.log")
    said = str(e.value)
    assert "\n" not in said and "exit 3" in said and "exit None" not in said and said.count("eval.log") == 1
    assert "should be 'TFL3'" in said


def test_a_build_at_another_size_than_its_fp32_file_says_so(here, tmp_path, small_fp32):
    """Issue 36: a Vela .tflite built at 96 px whose manifest names a 64 px FP32 file got the generic "no usual variant
    runs"; the runtime reports its input shape and the contract check names both sizes."""
    fp32_96 = export_onnx(randomised("L4-leaky"), tmp_path / "m96.onnx", imgsz=96, head="npu")
    compiled = vendor_like(fp32_96, tmp_path / "compiled96.onnx")
    art = artefact(compiled, small_fp32, InputContract(64, layout="NHWC", scale="0-255", dtype="uint8"))
    model = load_deployable(small_fp32)
    with vendor.VendorRuntime(art, tmp_path / "eval.log") as runtime, pytest.raises(ContractError) as e:
        vendor.check_runtime(model, runtime, art, golden_image(64))
    assert "96x96" in str(e.value) and "64x64" in str(e.value) and "\n" not in str(e.value)


def test_a_float32_tflite_is_not_scored_as_int8(tmp_path):
    """Issue 36: onnx2tf's float32 .tflite, given a manifest, was reported as "TFLITE INT8 drop 0.00"."""
    art = vendor.CompiledArtefact("tflite", tmp_path / "m_float32.tflite", tmp_path / "m.onnx", (), InputContract(64),
                                  tmp_path)
    runtime = SimpleNamespace(info={"runtime": "tflite BUILTIN_REF", "input_shape": [1, 64, 64, 3],
                                    "input_dtype": "float32", "int8_tensors": 0})
    with pytest.raises(DeployError, match="no int8 tensor") as e:
        vendor.check_runtime(None, runtime, art, golden_image(64))
    assert "\n" not in str(e.value)


def test_layers_qdq_file_is_checked_first_loadable_and_of_the_same_graph(tmp_path, small_fp32, monkeypatch):
    """Issue 36: `--qdq /etc/passwd` failed after the whole evaluation with a protobuf traceback, and another model's
    QDQ file was taken (blaming our quantizer, cosine 0.14-0.50). Both are one line before anything is scored."""
    from npuyolo.deploy.eval.layers import check_qdq
    from npuyolo.deploy.int8.quantize import quantize_onnx

    from .conftest import ROADSIGN4_MINI

    data = ROADSIGN4_MINI / "data.yaml"
    ours = tmp_path / "ours-int8.onnx"
    quantize_onnx(small_fp32, ours, data, calib=2, per_channel=True)
    check_qdq(small_fp32, ours)  # our own QDQ model of this graph passes
    other_fp32 = export_onnx(load_weights(TRAINED), tmp_path / "other.onnx", imgsz=64, head="npu")
    other = tmp_path / "other-int8.onnx"
    quantize_onnx(other_fp32, other, data, calib=2, per_channel=True)
    with pytest.raises(DeployError, match="not quantized from") as e:
        check_qdq(small_fp32, other)
    assert "\n" not in str(e.value)
    garbage = tmp_path / "passwd"
    garbage.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(DeployError, match="not a readable ONNX model") as e:
        check_qdq(small_fp32, garbage)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(vendor, "require", lambda name: None)
    monkeypatch.setattr(vendor, "_validate_at", lambda *a, **k: pytest.fail("scored before the QDQ file was checked"))
    with pytest.raises(DeployError, match="not quantized from"):
        vendor.evaluate_compiled(rknn_build(tmp_path / "b", small_fp32), data, layers=True, qdq=other)
