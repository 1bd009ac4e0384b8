"""ORT's quantizer without its quadratic Python (`deploy/int8/ort_fast.py`) writes the same bytes and finds the same
thresholds as ORT's own code: the speed-up may never change an INT8 file."""

import contextlib

import numpy as np
import pytest
from onnxruntime.quantization import qdq_quantizer
from onnxruntime.quantization.calibrate import HistogramCollector
from onnxruntime.quantization.onnx_model import ONNXModel

from npuyolo.data.calibration import calibration_images
from npuyolo.deploy.int8 import calibrate, quantize
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.int8.ort_fast import entropy_threshold, fast_qdq, find_by_name, replace_input_of_all_nodes

from .test_deploy import randomised


def _collector(arrays_per_call: list[dict]) -> HistogramCollector:
    collector = HistogramCollector("entropy", False, 512, 128, 99.999, "same")
    with contextlib.redirect_stdout(None):
        for arrays in arrays_per_call:
            collector.collect(arrays)
    return collector


def test_entropy_threshold_equals_orts_on_every_histogram_shape():
    rng = np.random.default_rng(0)
    shapes = {
        "relu": lambda n: np.maximum(rng.normal(0, 1, n), 0),
        "heavy_tail": lambda n: rng.standard_t(2, n),
        "skewed": lambda n: rng.exponential(3, n) - 0.5,
        "sparse": lambda n: np.where(rng.random(n) < 0.02, rng.normal(0, 5, n), 0.0),
        "constant": lambda n: np.full(n, 0.25),
    }
    # several calls, each with a larger spread: the histogram grows past 512 bins as ORT merges it
    calls = [{name: (f(4000) * (1 + k)).astype(np.float32) for name, f in shapes.items()} for k in range(3)]
    collector = _collector(calls)
    assert any(h[0].size > 512 for h in collector.histogram_dict.values())
    for name, histogram in collector.histogram_dict.items():
        theirs = collector.get_entropy_threshold(histogram, 128)
        ours = entropy_threshold(histogram, 128)
        assert [np.asarray(v).tobytes() for v in ours] == [np.asarray(v).tobytes() for v in theirs], name


def test_find_by_name_and_replace_inputs_do_what_orts_do():
    import onnx
    from onnx import helper

    class Named:
        def __init__(self, name):
            self.name = name

    items = [Named("a"), Named("b"), Named("a")]
    assert find_by_name("a", items) is items[0] and find_by_name("z", items) is None
    assert find_by_name("a", items) is qdq_quantizer.find_by_name("a", items)

    def graph():
        nodes = [helper.make_node("Add", ["x", "x"], ["y"], name="n0"), helper.make_node("Relu", ["y"], ["z"], name="n1"),
                 helper.make_node("Mul", ["z", "y"], ["w"], name="n2")]
        return ONNXModel(helper.make_model(helper.make_graph(nodes, "g", [], [])))

    ours, theirs = graph(), graph()
    replace_input_of_all_nodes(ours, "y", "y2")
    replace_input_of_all_nodes(ours, "x", "x2")
    theirs.replace_input_of_all_nodes("y", "y2")
    theirs.replace_input_of_all_nodes("x", "x2")
    assert onnx.printer.to_text(ours.model) == onnx.printer.to_text(theirs.model)


def test_fast_qdq_restores_orts_functions_even_after_an_error():
    before = (qdq_quantizer.find_by_name, ONNXModel.replace_input_of_all_nodes)
    with pytest.raises(RuntimeError), fast_qdq():
        assert qdq_quantizer.find_by_name is find_by_name
        raise RuntimeError("boom")
    assert (qdq_quantizer.find_by_name, ONNXModel.replace_input_of_all_nodes) == before


@pytest.mark.parametrize("ends", [None, "int16"])
def test_quantized_file_is_byte_identical_with_and_without_the_fast_path(synth_data, tmp_path, monkeypatch, ends):
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    fast = tmp_path / "fast.onnx"
    quantize.quantize_onnx(fp32, fast, synth_data, calib=8, ends=ends)
    monkeypatch.setattr(quantize, "fast_qdq", contextlib.nullcontext)
    slow = tmp_path / "slow.onnx"
    quantize.quantize_onnx(fp32, slow, synth_data, calib=8, ends=ends)
    assert fast.read_bytes() == slow.read_bytes()


def test_entropy_ranges_identical_with_and_without_the_fast_search(synth_data, tmp_path, monkeypatch):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    reader = calibrate.ImageReader(calibration_images(synth_data, 8, 0), 64)
    fast = calibrate.entropy_ranges(fp32, reader, tmp_path)
    monkeypatch.setattr(calibrate, "fast_entropy", lambda cal: None)
    slow = calibrate.entropy_ranges(fp32, reader, tmp_path)
    assert fast == slow


@pytest.mark.parametrize("variant", ["L4-leaky", "L0-silu"])
def test_minmax_ranges_equal_orts_own_calibrator_to_the_bit(synth_data, tmp_path, variant):
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = export_onnx(randomised(variant), tmp_path / "fp32.onnx", imgsz=64, head="ultralytics")
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    reader = calibrate.ImageReader(calibration_images(synth_data, 6, 0), 64)
    ours = calibrate.minmax_ranges(prepared, reader, tmp_path)
    cal = create_calibrator(str(prepared), None, str(tmp_path / "aug.onnx"), calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"symmetric": False})
    reader.rewind()
    cal.collect_data(reader)  # every image in one call: ORT's own merge, nothing dropped
    theirs = {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
              for name, td in cal.calibrate_tensors_range.data.items()}
    assert ours.keys() == theirs.keys() and len(ours) > 100
    assert ours == theirs
