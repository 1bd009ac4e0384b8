"""INT8 routes of issue 15: bias correction, 16-bit ends, calibration sweep, real entropy calibration, QAT, full-integer."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from typer.testing import CliRunner

from npuyolo.data.calibration import CalibrationError
from npuyolo.cli import app
from npuyolo.deploy.int8.bias_correction import correct_biases
from npuyolo.deploy.eval.evaluate import DeployError
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.int8.qdq import end_convs, float_compute_nodes, is_full_integer, quantized_conv_weights
from npuyolo.deploy.int8.quantize import ImageReader, calibration_images, ends_allowed, quantize_onnx
from npuyolo.registry.db import Registry
from npuyolo.train.trainer import train_variant

from .test_deploy import randomised

runner = CliRunner()


def _conv_model(weight: np.ndarray, bias: np.ndarray, group: int = 1) -> onnx.ModelProto:
    c_in = weight.shape[1] * group
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[0], 4, 4])],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("group", [1, 3])
def test_bias_correction_cancels_the_mean_shift_of_rounded_weights(group):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (6, 6 // group, 1, 1)).astype(np.float32)
    w[:, :, 0, 0] += rng.uniform(-0.013, 0.013, w.shape[:2]).astype(np.float32)  # off the INT8 grid
    b = rng.normal(0, 0.1, 6).astype(np.float32)
    wq = np.round(w / (np.abs(w).max() / 127)) * (np.abs(w).max() / 127)  # per-tensor symmetric INT8 codes
    mean = np.linspace(0.5, 3.0, 6)  # inputs after a ReLU: a large positive mean the rounding error multiplies
    x = np.broadcast_to(mean[None, :, None, None], (1, 6, 4, 4)).astype(np.float32)
    exact = _run(_conv_model(w, b, group), x)
    rounded = _run(_conv_model(wq.astype(np.float32), b, group), x)
    assert np.abs(rounded - exact).max() > 1e-3  # the shift is real
    model = _conv_model(w, b, group)
    assert correct_biases(model, {"conv": wq}, {"conv": mean}) == 1
    b_corrected = numpy_helper.to_array(model.graph.initializer[1])
    fixed = _run(_conv_model(wq.astype(np.float32), b_corrected, group), x)
    np.testing.assert_allclose(fixed, exact, atol=1e-5)  # at the mean input, rounded weights + corrected bias == FP32


def test_quantized_weights_are_read_back_exactly(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=4, per_channel=True)
    q = onnx.load(str(tmp_path / "q.onnx"))
    wq = quantized_conv_weights(q)
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert len(wq) == len(convs) > 20
    f = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    some = next(n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    rounded = wq[some.name]
    scale = np.abs(f[some.input[1]]).reshape(rounded.shape[0], -1).max(axis=1) / 127
    np.testing.assert_allclose(rounded, np.round(f[some.input[1]] / scale[:, None, None, None]) * scale[:, None, None, None], rtol=1e-5, atol=1e-7)


def test_bias_corrected_export_is_recorded_and_full_integer(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "bc.onnx", synth_data, calib=6, bias_correct=True)
    n_convs = sum(n.op_type == "Conv" for n in onnx.load(str(fp32)).graph.node)
    assert info["bias_corrected"] == n_convs
    q = onnx.load(str(tmp_path / "bc.onnx"))
    assert json.loads({p.key: p.value for p in q.metadata_props}["npuyolo_quant"])["bias_corrected"] == n_convs
    assert is_full_integer(q)
    plain = quantize_onnx(fp32, tmp_path / "plain.onnx", synth_data, calib=6)
    def conv_bias(m):  # Conv name -> the INT32 bias it computes with
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
        return {n.name: inits[dq[n.input[2]].input[0]] for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2}

    corrected, uncorrected = conv_bias(q), conv_bias(onnx.load(str(tmp_path / "plain.onnx")))
    assert plain["bias_corrected"] == 0 and corrected.keys() == uncorrected.keys()
    assert sum(not np.array_equal(v, uncorrected[k]) for k, v in corrected.items()) > n_convs // 2


def test_full_integer_check_tells_conv_only_int8_apart(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    assert len(float_compute_nodes(onnx.load(str(fp32)))) > 100  # FP32: everything computes in float
    quantize_onnx(fp32, tmp_path / "full.onnx", synth_data, calib=4)
    assert is_full_integer(onnx.load(str(tmp_path / "full.onnx")))
    reader = ImageReader(calibration_images(synth_data, 4), 64)
    quantize_static(str(fp32), str(tmp_path / "conv_only.onnx"), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # Ultralytics' INT8 ONNX route
    left = {n.op_type for n in float_compute_nodes(onnx.load(str(tmp_path / "conv_only.onnx")))}
    assert {"LeakyRelu", "Add", "Concat"} <= left and "Conv" not in left


def test_int16_ends_stay_integer_and_run(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    graph = onnx.load(str(fp32))
    ends = end_convs(graph)
    first = next(n for n in graph.graph.node if n.op_type == "Conv")
    assert ends[0] == first.name and len(ends) == 1 + len(graph.graph.output)  # one Conv per head output
    info = quantize_onnx(fp32, tmp_path / "i16.onnx", synth_data, calib=4, per_channel=True, ends="int16")
    assert info["int16_nodes"] == ends and info["keep_float"] == []
    q = onnx.load(str(tmp_path / "i16.onnx"))
    assert is_full_integer(q)
    inits = {i.name: i for i in q.graph.initializer}
    by_out = {o: n for n in q.graph.node for o in n.output}
    conv = next(n for n in q.graph.node if n.name == ends[0])
    dq_in, dq_w = by_out[conv.input[0]], by_out[conv.input[1]]
    assert inits[dq_in.input[2]].data_type == TensorProto.UINT16 and inits[dq_w.input[0]].data_type == TensorProto.INT16
    middle = next(n for n in q.graph.node if n.op_type == "Conv" and n.name not in ends)
    assert inits[by_out[middle.input[1]].input[0]].data_type == TensorProto.INT8  # the rest stays INT8
    out = ort.InferenceSession(str(tmp_path / "i16.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})
    assert all(np.isfinite(o).all() for o in out)
    float_ends = quantize_onnx(fp32, tmp_path / "f.onnx", synth_data, calib=4, ends="float")
    assert float_ends["keep_float"] == ends


def test_ends_follow_the_target_profile():
    ends_allowed("int16", "ethos-u55")
    ends_allowed("float", "rknn-rk3588")
    with pytest.raises(DeployError, match="edgetpu runs int8 only.*ethos-u55"):
        ends_allowed("int16", "edgetpu")
    with pytest.raises(DeployError, match="must be one of"):
        ends_allowed("int4", "hailo-8")


def test_entropy_is_real_kl_calibration_not_minmax(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")

    def act_scales(path):
        m = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return [float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1]

    quantize_onnx(fp32, tmp_path / "mm.onnx", synth_data, calib=6)
    info = quantize_onnx(fp32, tmp_path / "kl.onnx", synth_data, calib=6, method="entropy")
    mm, kl = act_scales(tmp_path / "mm.onnx"), act_scales(tmp_path / "kl.onnx")
    assert info["calibration"] == "entropy" and len(mm) == len(kl)
    assert sum(k < m * 0.99 for m, k in zip(mm, kl)) >= 1  # KL clips some ranges: not ORT's 128-bin path, which equals MinMax


def test_sweep_judges_on_held_back_train_images_never_val(synth_data, tmp_path, monkeypatch):
    import cv2

    opened: list[str] = []
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda p, *a: (opened.append(str(p)), real_imread(p, *a))[1])
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "s.onnx", synth_data, calib=6, sweep=True, holdout=4, bias_correct=True)
    assert opened and not any("/images/val/" in p for p in opened)
    assert len(info["holdout_images"]) == 4 and not set(info["holdout_images"]) & set(info["calibration_images"])
    assert all("/images/train/" in p for p in info["holdout_images"])
    labels = [r["calibration"] for r in info["sweep"]]
    assert labels == ["minmax", "percentile99.99", "percentile99.999", "entropy"]
    best = max(info["sweep"], key=lambda r: r["sqnr_db"])
    assert info["calibration"] == best["calibration"] and all(np.isfinite(r["sqnr_db"]) for r in info["sweep"])
    with pytest.raises(CalibrationError, match="lower `calib`"):
        quantize_onnx(fp32, tmp_path / "s2.onnx", synth_data, calib=10_000, sweep=True)


@pytest.mark.slow
def test_qat_fine_tunes_a_run_and_exports_full_integer_int8(synth_data, tiny_recipe, tmp_path):
    db = tmp_path / "r.db"
    train_variant(Registry(db), "L4-leaky", synth_data, tiny_recipe, verbose=False)
    result = runner.invoke(app, ["deploy", "qat", "1", "--epochs", "1", "--calib", "6", "--json", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["parent_run"] == 1 and info["qat_run"] == 2
    child = Registry(db).get_run(2)
    assert child.status == "finished" and child.recipe.ultralytics["quantize"] == 8 and child.recipe.epochs == 1
    assert child.artifact("qat/parent").meta["parent_run"] == 1
    int8 = onnx.load(info["int8"])
    assert is_full_integer(int8) and not [n for n in float_compute_nodes(int8) if n.op_type == "Conv"]
    ort.InferenceSession(info["int8"], providers=["CPUExecutionProvider"])
    evaluated = runner.invoke(app, ["deploy", "eval", info["int8"], "--data", str(synth_data), "--json", "--registry", str(db)])
    assert evaluated.exit_code == 0, evaluated.output
    r = json.loads(evaluated.stdout)
    assert r["kind"] == "int8" and "drop_pp" in r
    from npuyolo.variants.checkpoint import load_weights

    model = load_weights(child.artifact_path("weights/best"))  # plain fine-tuned weights: no fake-quantizers left
    assert not any(type(m).__name__ == "TensorQuantizer" for m in model.modules())


def test_npu_check_places_an_int8_artefact_like_its_fp32_graph(synth_data, tmp_path):
    """Q/DQ pairs are fused by NPU compilers; before folding them, an INT8 file showed 400+ 'unknown' Q/DQ ops."""
    from npuyolo.deploy.check import check_model

    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=4, per_channel=True, ends="int16")
    targets = ["ethos-u55", "edgetpu", "nxp-neutron"]
    ref = {r.target: r for r in check_model(None, str(fp32), targets).reports}
    got = {r.target: r for r in check_model(None, str(tmp_path / "q.onnx"), targets).reports}
    for t in targets:
        assert got[t].nodes_total == ref[t].nodes_total and not got[t].unknown_ops
        assert (got[t].share_nodes, got[t].fallback_ops, got[t].partitions_npu) == (ref[t].share_nodes, ref[t].fallback_ops, ref[t].partitions_npu)
        assert got[t].share_macs == pytest.approx(ref[t].share_macs)


def test_bias_correction_gives_shared_biases_their_own_copy():
    """Untrained exports share one bias tensor among many Convs; one Conv's correction must not reach the others."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (4, 4, 1, 1)).astype(np.float32)
    b = np.zeros(4, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y1"], name="c1"), helper.make_node("Conv", ["x", "w", "b"], ["y2"], name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, 2, 2]) for y in ("y1", "y2")],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert correct_biases(model, {"c1": w + 0.01}, {"c1": np.ones(4)}) == 1
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    c1, c2 = model.graph.node
    assert c1.input[2] != "b" and c2.input[2] == "b" and np.array_equal(inits["b"], b)
    np.testing.assert_allclose(inits[c1.input[2]], -0.04 * np.ones(4), atol=1e-6)


def test_convs_kept_float_keep_their_fp32_bias(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=4, auto_float=2, bias_correct=True)
    kept = [c["node"] for c in info["auto_float"]]
    assert len(kept) == 2 and info["bias_corrected"] > 0
    ref = onnx.load(str(fp32))
    ref_inits = {i.name: numpy_helper.to_array(i) for i in ref.graph.initializer}
    q = onnx.load(str(tmp_path / "q.onnx"))
    q_inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for name in kept:
        before = next(n for n in ref.graph.node if n.name == name)
        after = next(n for n in q.graph.node if n.name == name)
        np.testing.assert_array_equal(q_inits[after.input[2]], ref_inits[before.input[2]])


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_calibration_holds_a_bounded_number_of_images(synth_data, tmp_path, monkeypatch, method):
    """ORT's histogram calibrators keep every image's tensors until the reader ends: 200 images at 640 px were 20 GB
    and the process was killed for memory. npuyolo feeds them in chunks, whatever the calibration count."""
    import onnxruntime.quantization.calibrate as calibrate

    import npuyolo.deploy.int8.calibrate as npuyolo_calibrate

    held: list[int] = []
    for cls in (calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater):
        real = cls.clear_collected_data
        monkeypatch.setattr(cls, "clear_collected_data", lambda self, real=real: (held.append(len(self.intermediate_outputs)),
                                                                                 real(self))[1])
    # the one-pass calibration (calibration_ranges) hands ORT's HistogramCollector each chunk's tensors, then drops them
    real_collect = calibrate.HistogramCollector.collect
    monkeypatch.setattr(calibrate.HistogramCollector, "collect", lambda self, data, real=real_collect: (
        held.append(max(len(v) for v in data.values())), real(self, data))[1])
    monkeypatch.setattr(npuyolo_calibrate, "CALIB_CHUNK", 2)
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=5, method=method, percentile=99.99 if method == "percentile" else None)
    assert len(info["calibration_images"]) == 5
    assert held and max(held) <= 2, held


def test_minmax_calibration_reads_one_image_at_a_time(synth_data, tmp_path, monkeypatch):
    """MinMax ranges come from npuyolo's own pass (ORT's ranges to the bit, tests/test_ort_fast.py): one image per
    session call, its tensors reduced before the next is read, so memory does not grow with the calibration count."""
    import onnxruntime as ort
    import onnxruntime.quantization.calibrate as calibrate

    import npuyolo.deploy.int8.quantize as quantize

    monkeypatch.setattr(calibrate.MinMaxCalibrater, "collect_data", lambda *a: pytest.fail("ORT's calibrator collected"))
    batches: list[int] = []
    real_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, names, feed, *a, **k: (
        batches.append(next(iter(feed.values())).shape[0]), real_run(self, names, feed, *a, **k))[1])
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize.quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=5)
    assert len(info["calibration_images"]) == 5 and batches[:5] == [1] * 5


def test_chunked_percentile_ranges_match_one_pass(synth_data, tmp_path):
    """Histograms merged over chunks give the ranges of one pass over all images (quantize_static's way)."""
    from npuyolo.deploy.int8.calibrate import percentile_ranges

    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    reader = ImageReader(calibration_images(synth_data, 6), 64)
    whole = percentile_ranges(fp32, reader, tmp_path, 99.99, chunk=6)
    parts = percentile_ranges(fp32, reader, tmp_path, 99.99, chunk=2)
    assert whole.keys() == parts.keys() and len(whole) > 50
    widths = np.array([whole[k][1] - whole[k][0] for k in whole])
    diffs = np.array([max(abs(whole[k][0] - parts[k][0]), abs(whole[k][1] - parts[k][1])) for k in whole])
    assert np.median(diffs / np.maximum(widths, 1e-9)) < 0.02 and np.max(diffs / np.maximum(widths, 1e-9)) < 0.25


def test_shared_minmax_ranges_give_the_same_int8_files_with_one_calibration(synth_data, tmp_path, monkeypatch):
    """`deploy plan` quantizes one graph through several routes: with `ranges` kept per graph, MinMax calibrates once
    and every route's file is bit-identical to a fresh quantization (and the sweep's entropy ranges are kept too)."""
    from npuyolo.deploy.int8 import quantize

    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    calls = []
    real = quantize.minmax_ranges
    monkeypatch.setattr(quantize, "minmax_ranges", lambda *a: calls.append(a) or real(*a))

    def initializers(path):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}

    ranges: dict = {}
    shared_calls = 0
    for ends in (None, "int16", "float"):
        quantize_onnx(fp32, tmp_path / f"fresh-{ends}.onnx", synth_data, calib=6, ends=ends)
        before = len(calls)
        quantize_onnx(fp32, tmp_path / f"shared-{ends}.onnx", synth_data, calib=6, ends=ends, ranges=ranges)
        shared_calls += len(calls) - before
        fresh, shared = initializers(tmp_path / f"fresh-{ends}.onnx"), initializers(tmp_path / f"shared-{ends}.onnx")
        assert fresh.keys() == shared.keys() and all(np.array_equal(fresh[k], shared[k]) for k in fresh), ends
    assert shared_calls == 1 and set(ranges) == {"minmax"}  # calibrated once for the three routes
    info = quantize_onnx(fp32, tmp_path / "p.onnx", synth_data, calib=6, method="percentile", percentile=99.99, ranges=ranges)
    assert info["calibration"] == "percentile99.99" and set(ranges) == {"minmax", "percentile99.99"}


def test_quantize_static_runs_no_calibration_of_its_own(synth_data, tmp_path, monkeypatch):
    """Every range is ours (over every calibration image, in chunks); quantize_static gets them as its calibration
    cache. Before, it still built its own calibrator (a ReduceMin/ReduceMax pair per tensor) and ran one image through
    it for every INT8 file: a seventh of `deploy plan`'s time."""
    import sys

    ort_quantize = sys.modules["onnxruntime.quantization.quantize"]  # the package exports a function of that name

    def refuse(*args, **kwargs):
        raise AssertionError("quantize_static calibrated by itself")

    monkeypatch.setattr(ort_quantize, "create_calibrator", refuse)
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    for ends in (None, "int16"):
        info = quantize_onnx(fp32, tmp_path / f"q-{ends}.onnx", synth_data, calib=4, ends=ends)
        onnx.checker.check_model(onnx.load(info["int8"]))
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(info["int8"]).graph.node)
    info = quantize_onnx(fp32, tmp_path / "p.onnx", synth_data, calib=4, method="percentile", percentile=99.99)
    assert info["calibration"] == "percentile99.99"


def test_percentiles_share_one_pass_of_histograms(synth_data, tmp_path, monkeypatch):
    """The sweep's two percentiles come from one set of histograms, with the ranges each would get alone."""
    import onnxruntime.quantization.calibrate as calibrate

    from npuyolo.deploy.int8.calibrate import percentile_ranges, percentiles_ranges

    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    reader = ImageReader(calibration_images(synth_data, 4), 64)
    alone = {p: percentile_ranges(fp32, reader, tmp_path, p) for p in (99.99, 99.999)}
    passes = []
    real = calibrate.HistogramCalibrater.collect_data
    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", lambda self, r: (passes.append(1), real(self, r))[1])
    together = percentiles_ranges(fp32, reader, tmp_path, [99.99, 99.999])
    assert together == alone and len(passes) == 1
    assert any(alone[99.99][k] != alone[99.999][k] for k in alone[99.99])  # two read-outs, not one copied


def test_our_minmax_int8_file_is_onnx_runtimes_own(synth_data, tmp_path):
    """Our ranges, handed over as the calibration cache, give the file ORT's own MinMax calibration gives (fewer
    images than one chunk, so ORT holds them all at once and its ranges are exact): every initializer equal."""
    from pathlib import Path

    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "ours.onnx", synth_data, calib=6)
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    reader = ImageReader([Path(p) for p in info["calibration_images"]], 64)
    quantize_static(str(prepared), str(tmp_path / "ort.onnx"), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    ours = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "ours.onnx")).graph.initializer}
    theirs = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "ort.onnx")).graph.initializer}
    assert ours.keys() == theirs.keys() and len(ours) > 100
    assert [k for k in ours if not np.array_equal(ours[k], theirs[k])] == []


def test_the_sweep_reads_its_calibrations_from_one_pass(synth_data, tmp_path, monkeypatch):
    """`--sweep` tries four calibrations (MinMax, two percentiles, entropy): one pass of the images serves them all
    (before: a MinMax pass, then ORT's percentile and entropy calibrators, each a pass)."""
    from npuyolo.deploy.int8 import quantize

    calls = []
    real = quantize.calibration_ranges
    monkeypatch.setattr(quantize, "calibration_ranges", lambda *a, **k: calls.append([c.label for c in a[3]]) or real(*a, **k))
    monkeypatch.setattr(quantize, "minmax_ranges", lambda *a: pytest.fail("a second pass"))
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=4, sweep=True, holdout=2)
    assert [r["calibration"] for r in info["sweep"]] == ["minmax", "percentile99.99", "percentile99.999", "entropy"]
    assert calls == [["minmax", "percentile99.99", "percentile99.999", "entropy"]]


def test_quantize_takes_one_options_object_holding_each_default_once(synth_data, tmp_path):
    """`QuantizeOptions` states every quantize option's default once (issue 32): `quantize_onnx` takes it, or its
    fields as keywords (the same file either way; keywords replace the object's fields), and an unknown name is one
    line naming it, as `Recipe` refuses one."""
    import inspect

    from npuyolo.deploy.int8.options import QuantizeOptions

    assert set(inspect.signature(quantize_onnx).parameters) == {"fp32", "out", "data", "options", "ranges", "given"}
    o = QuantizeOptions()
    assert (o.calib, o.method, o.per_channel, o.keep_float, o.auto_float, o.seed, o.holdout) == (200, "minmax", False, None, 0, 0, 50)
    assert QuantizeOptions.of(calib=4, keep_float=["a"]) == QuantizeOptions(calib=4, keep_float=("a",))
    assert QuantizeOptions.of(QuantizeOptions(calib=4), per_channel=True) == QuantizeOptions(calib=4, per_channel=True)
    with pytest.raises(DeployError, match="^unknown quantize option 'calibb'; the options are calib, method,") as e:
        QuantizeOptions.of(calibb=4)
    assert e.value.param == "calibb"
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    with pytest.raises(DeployError, match="unknown quantize option 'percentil'"):
        quantize_onnx(fp32, tmp_path / "x.onnx", synth_data, percentil=99.9)
    with pytest.raises(DeployError, match="method must be one of minmax, entropy, percentile"):
        quantize_onnx(fp32, tmp_path / "x.onnx", synth_data, QuantizeOptions(calib=4), method="kl")
    by_object = quantize_onnx(fp32, tmp_path / "a.onnx", synth_data, QuantizeOptions(calib=4, per_channel=True))
    by_keywords = quantize_onnx(fp32, tmp_path / "b.onnx", synth_data, calib=4, per_channel=True)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert {k: v for k, v in by_object.items() if k != "int8"} == {k: v for k, v in by_keywords.items() if k != "int8"}
