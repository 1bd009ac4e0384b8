"""MinMax calibration sees every calibration image (ONNX Runtime's chunked MinMax drops all but the last chunk)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.int8.calibrate import CALIB_CHUNK, minmax_ranges
from npuyolo.deploy.int8.quantize import quantize_onnx

from .test_deploy import randomised


class Arrays(CalibrationDataReader):
    def __init__(self, arrays):
        self.arrays, self.i = arrays, 0

    def get_next(self):
        if self.i >= len(self.arrays):
            return None
        self.i += 1
        return {"x": self.arrays[self.i - 1]}

    def rewind(self):
        self.i = 0


def _relu_conv(tmp_path):
    w = np.ones((2, 3, 1, 1), np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                               helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_minmax_ranges_cover_every_image_not_only_the_last_chunk(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (1, 3, 4, 4)).astype(np.float32) for _ in range(CALIB_CHUNK + 4)]
    images[2][0, 0, 0, 0] = 50.0  # the extreme value sits in the FIRST chunk
    found = minmax_ranges(_relu_conv(tmp_path), Arrays(images), tmp_path)
    assert found["x"][1] == 50.0
    assert found["y"][1] >= 50.0  # conv of ones over 3 channels: at least the 50 of that pixel


def test_minmax_ranges_of_an_exact_number_of_chunks(tmp_path):
    images = [np.full((1, 3, 4, 4), i, np.float32) for i in range(2 * CALIB_CHUNK)]
    found = minmax_ranges(_relu_conv(tmp_path), Arrays(images), tmp_path)
    assert found["x"] == (0.0, 2 * CALIB_CHUNK - 1.0)


def test_quantize_with_a_calibration_count_that_fills_whole_chunks(synth_data, tmp_path):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=CALIB_CHUNK)  # failed: "No data is collected"
    assert info["calib"] == CALIB_CHUNK and (tmp_path / "q.onnx").is_file()


def _near_constant_and_centred(tmp_path):
    """x -> Relu -> y (both near 2.0), and z = x - 2 (near 0): y's histogram of 2048 bins cannot be made in float32."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu"),
                               helper.make_node("Sub", ["x", "two"], ["z"], name="sub")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    path = tmp_path / "near.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_tensor_too_narrow_for_a_histogram_gets_minmaxs_range_not_numpys_error(tmp_path):
    """An untrained model's box outputs sit within a few float32 steps of one value (1.99997..2.00003): numpy cannot
    split that into ORT's 2048 percentile bins ("Too many bins for data range"), and the sweep stopped with that
    traceback. Such a tensor has no percentile range (the quantization gives it MinMax's); every other tensor keeps
    the one ORT's collector gives it, merged over chunks as before."""
    from npuyolo.deploy.int8.calibrate import SWEEP, calibration_ranges

    rng = np.random.default_rng(0)
    images = [(2.0 + rng.uniform(-3e-5, 3e-5, (1, 3, 4, 4))).astype(np.float32) for _ in range(5)]
    found = calibration_ranges(_near_constant_and_centred(tmp_path), Arrays(images), tmp_path, list(SWEEP), chunk=2)
    every = np.concatenate([i.ravel() for i in images])
    assert found["minmax"]["y"] == found["minmax"]["x"] == (float(every.min()), float(every.max()))
    for label in ("percentile99.99", "percentile99.999"):
        assert set(found[label]) == {"z"}, label  # x and y: too narrow for 2048 bins; z (near 0) is not
        lo, hi = found[label]["z"]
        assert lo == -hi and 0 < hi <= 3e-5 * 1.001, label
    assert set(found["entropy"]) == {"x", "y", "z"}  # entropy's histogram spans [-max|x|, max|x|]: never too narrow


def test_the_sweep_of_an_untrained_model_quantizes(synth_data, tmp_path):
    """The reported case: an untrained L4-relu, 64 px NPU head, swept (its box outputs are near-constant)."""
    from npuyolo.deploy.int8.calibrate import SWEEP
    from npuyolo.variants.build import build_model

    fp32 = export_onnx(build_model("L4-relu", nc=6), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    ranges: dict = {}
    info = quantize_onnx(fp32, tmp_path / "q.onnx", synth_data, calib=8, holdout=4, sweep=True, ranges=ranges)
    assert [r["calibration"] for r in info["sweep"]] == [c.label for c in SWEEP]
    assert all(np.isfinite(r["sqnr_db"]) for r in info["sweep"]) and (tmp_path / "q.onnx").is_file()
    narrow = ranges["minmax"].keys() - ranges["percentile99.99"].keys()
    assert "boxes_s8" in narrow  # the stride-8 box output: 1.99997..2.00003 over these images
    for name in narrow:  # each left out is narrower than 2048 float32 steps at its magnitude
        lo, hi = ranges["minmax"][name]
        assert hi - lo < 2048 * np.spacing(np.float32(max(abs(lo), abs(hi)))), name
