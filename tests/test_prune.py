import json

import pytest
import torch
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.deploy.export import export_onnx, load_weights
from npuyolo.deploy.check import check_model
from npuyolo.prune.modules import split_c2f
from npuyolo.prune.prune import PruneError, count, prune_model
from npuyolo.registry.db import Registry
from npuyolo.train.trainer import train_variant
from npuyolo.variants.build import build_model

from .conftest import perturbed

runner = CliRunner()


def test_c2f_split_is_exact():
    model = perturbed(build_model("L4-relu", nc=4))
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        before = model(x)[0].clone()
        assert split_c2f(model) == 9
        assert torch.equal(before, model(x)[0])


def test_prune_model_shrinks_keeps_shapes_and_exports(tmp_path):
    model = build_model("L4-leaky", nc=4)
    pruned = prune_model(model, 0.3, "l1", imgsz=64)
    assert count(pruned, 64)["parameters"] < 0.7 * count(model, 64)["parameters"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert pruned.eval()(x)[0].shape == model.eval()(x)[0].shape
    assert pruned.yaml["npuyolo"]["pruned"] == {"ratio": 0.3, "method": "l1"}
    assert export_onnx(pruned, tmp_path / "p.onnx", imgsz=64, head="npu").is_file()
    gn = prune_model(model, 0.5, "group-norm", imgsz=64)
    assert count(gn, 64)["parameters"] < count(pruned, 64)["parameters"]
    with pytest.raises(PruneError, match="attention"):
        prune_model(build_model("L1-relu", nc=4), 0.3)
    with pytest.raises(PruneError, match="between 0 and 1"):
        prune_model(model, 1.5)


def test_prune_run_records_and_keeps_npu_share(synth_data, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "r.db"
    train_variant(Registry(db), "L4-relu", synth_data, tiny_recipe, verbose=False)
    result = runner.invoke(app, ["prune", "1", "--ratio", "0.3", "--finetune-epochs", "1", "--json", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["after"]["parameters"] < r["before"]["parameters"] and r["after"]["gflops"] < r["before"]["gflops"]
    assert set(r["ort_p50_ms"]) == {"parent", "pruned"} and all(v > 0 for v in r["ort_p50_ms"].values())
    run = Registry(db).get_run(r["run_id"])
    assert run.status == "finished" and len(run.epochs) == 1 and run.name == "L4-relu-1-pruned0.3-l1"
    assert any(a.kind == "prune/report" and a.meta["before"]["parameters"] for a in run.artifacts)
    tuned = load_weights(next(a.path for a in run.artifacts if a.kind == "weights/best"))
    assert sum(p.numel() for p in tuned.parameters()) == r["after"]["parameters"]  # fine-tuned the pruned net
    import numpy as np
    from ultralytics import YOLO

    plain = YOLO(r["pruned_checkpoint"])  # loadable and usable by Ultralytics itself
    assert len(plain.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)) == 1
    reg = Registry(db)
    parent = {x.target: x.share_nodes for x in check_model(reg, "1", ["relu-only", "rknn-rk3588"], imgsz=64).reports}
    child = {x.target: x.share_nodes for x in check_model(reg, str(r["run_id"]), ["relu-only", "rknn-rk3588"], imgsz=64).reports}
    assert parent == child
