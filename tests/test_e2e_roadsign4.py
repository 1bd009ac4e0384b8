"""End to end on real photos: check, train one epoch at a small size, export the L4 head, decode on the host."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.decode import decode_npu_outputs
from npuyolo.deploy.export import onnx_metadata
from npuyolo.registry.db import Registry

from .conftest import ROADSIGN4

runner = CliRunner()


@pytest.mark.skipif(not ROADSIGN4.is_dir(), reason="needs ../shared/datasets/roadsign4 beside the checkout")
def test_roadsign4_one_epoch_end_to_end(tmp_path):
    data_dir = tmp_path / "roadsign4"
    shutil.copytree(ROADSIGN4, data_dir)  # the shared copy is read-only; Ultralytics writes label caches
    data = data_dir / "data.yaml"
    checked = runner.invoke(app, ["data", "check", str(data), "--json"])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["splits"]["train"]["images"] == 702 and report["splits"]["val"]["instances"]["speedlimit"] == 161

    db = tmp_path / "reg.db"
    trained = runner.invoke(app, ["train", "--variant", "L4-leaky", "--data", str(data), "--epochs", "1", "--imgsz", "128",
                                  "--batch", "16", "--workers", "2", "--registry", str(db)])
    assert trained.exit_code == 0, trained.output
    run = Registry(db).get_run(1)
    assert run.status == "finished" and len(run.epochs) == 1
    assert run.class_names == ["trafficlight", "stop", "speedlimit", "crosswalk"]
    assert run.epochs[0].box_loss > 0

    onnx_path = tmp_path / "l4.onnx"
    exported = runner.invoke(app, ["export", "1", "--imgsz", "128", "--out", str(onnx_path), "--registry", str(db)])
    assert exported.exit_code == 0, exported.output
    meta = onnx_metadata(onnx_path)
    assert meta["npuyolo_head"] == "npu" and json.loads(meta["names"])["1"] == "stop"
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    raw = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    decoded = decode_npu_outputs(raw, json.loads(meta["strides"]), int(meta["reg_max"]))
    assert decoded.shape == (1, 4 + 4, 16 * 16 + 8 * 8 + 4 * 4)
