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
