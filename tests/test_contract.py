"""The input-contract check: a compiled model fed the wrong channels, layout, scale or size is named in one line."""

import numpy as np
import onnxruntime as ort
import pytest

from npuyolo.deploy.eval.contract import ContractError, InputContract, check_contract, golden_image, prepare
from npuyolo.deploy.export import export_onnx
from npuyolo.variants.checkpoint import load_weights

from .conftest import REPO

TRAINED = REPO / "bench" / "seed_experiment" / "640" / "L4-leaky" / "best.pt"  # committed with the repository


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The committed seed-experiment L4-leaky as ONNX through ONNX Runtime: the FP32 reference. A trained model, because
    random weights barely depend on their input and would hide a channel swap."""
    path = export_onnx(load_weights(TRAINED), tmp_path_factory.mktemp("contract") / "m.onnx", imgsz=64, head="npu")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"images": np.asarray(x, np.float32)})


DECLARED = InputContract(imgsz=64)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and len(text) < 300
    return text


def test_the_same_model_passes_and_outputs_may_come_back_nhwc(fp32):
    assert check_contract(fp32, fp32, DECLARED).worst > 0.9999
    nhwc_outputs = lambda x: [o.transpose(0, 2, 1) if o.ndim == 3 else o for o in fp32(x)]  # TFLite-style layouts
    assert check_contract(fp32, nhwc_outputs, DECLARED).worst > 0.9999


def test_a_model_that_reads_bgr_is_named(fp32):
    bgr_model = lambda x: fp32(x[:, ::-1])  # converts what it is given from BGR to RGB
    with pytest.raises(ContractError) as e:
        check_contract(fp32, bgr_model, DECLARED)
    assert "channels BGR (declared RGB)" in one_line(e)
    assert check_contract(fp32, bgr_model, InputContract(imgsz=64, channels="BGR")).worst > 0.9999


def test_a_model_that_wants_nhwc_is_named(fp32):
    nhwc_model = lambda x: fp32(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
    with pytest.raises(ContractError) as e:
        check_contract(fp32, nhwc_model, DECLARED)
    assert "layout NHWC (declared NCHW)" in one_line(e)


def test_a_model_with_mean_std_baked_in_is_named(fp32):
    baked = lambda x: fp32(np.asarray(x, np.float32) / 255.0)  # RKNN-style std 255 in the graph: wants 0-255
    with pytest.raises(ContractError) as e:
        check_contract(fp32, baked, DECLARED)
    assert "scale 0-255 (declared 0-1)" in one_line(e)
    uint8 = InputContract(imgsz=64, scale="0-255", dtype="uint8")
    assert prepare(golden_image(64), uint8).dtype == np.uint8
    assert check_contract(fp32, baked, uint8).worst > 0.999  # uint8 rounding only


def test_a_size_mismatch_and_a_different_model_are_one_line_each(fp32):
    with pytest.raises(ContractError) as e:
        check_contract(fp32, fp32, DECLARED, compiled_imgsz=128)
    assert "128x128" in one_line(e) and "64x64" in str(e.value)
    wrong = lambda x: fp32(np.full((1, 3, 64, 64), 0.5, np.float32))  # a model blind to its input
    with pytest.raises(ContractError) as e:
        check_contract(fp32, wrong, DECLARED)
    assert "no single change" in one_line(e)


def test_a_model_too_weak_to_judge_is_not_refused():
    """Issue 36: a barely trained model's outputs hardly vary (box logits within 1e-4, class sigmoids near 1e-4); the
    vendor's INT8 rounds its class tensors to 0. Nothing carries signal, so nothing is judged: no "check mean/std"."""
    from npuyolo.variants.build import build_model

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(build_model("L4-leaky", nc=4, verbose=False), Path(tmp) / "weak.onnx", imgsz=64, head="npu")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    weak = lambda x: sess.run(None, {"images": np.asarray(x, np.float32)})
    quantized = lambda x: [o if o.shape[1] == 64 else np.zeros_like(o) for o in weak(x)]  # class scores -> 0
    report = check_contract(weak, quantized, DECLARED)
    assert not report.judged and not any(report.signal)
    blind = lambda x: [np.full_like(o, 7.0) for o in weak(x)]  # still nothing to judge against: not a contract error
    assert not check_contract(weak, blind, DECLARED).judged
