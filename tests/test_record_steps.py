"""A stage computes and returns its typed result; its service records it ("check, then record", ARCHITECTURE.md).
Prune's `prune/report` and QAT's `qat/parent` rows are written by `services.training.prune` and `services.deploy.qat`,
never by `prune_run` / `qat_run` themselves (issue 32). The stages' heavy steps (training, validation, export,
latency, quantization) are stood in; what is checked is who writes the row, and that the row is the one the stage used
to write."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.train.recipe import Recipe
from npuyolo.train.trainer import RunResult


class Net:
    """A stand-in model: what the stages read of one (its class names)."""

    names = {0: "stop"}


def parent_run(db: Path, tmp_path: Path) -> int:
    reg = Registry(db)
    rid = reg.create_run(name="parent", variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump(),
                         data_path=str(tmp_path / "d.yaml"), data_hash="h", class_names=["stop"], weights_source=None,
                         device="cpu", versions={})
    best = tmp_path / "parent-best.pt"
    best.write_bytes(b"weights")
    reg.add_artifact(rid, "weights/best", best.resolve())
    reg.set_status(rid, "finished")
    return rid


def fake_training(tmp_path: Path):
    """`train_variant` as the stages call it: a new finished run with best weights on disk, nothing else recorded."""

    def train(registry, variant, data, recipe, *, name=None, weights=None, series=None, verbose=True):
        rid = registry.create_run(name=name, variant=variant, recipe=recipe.model_dump(), data_path=str(data), data_hash="h",
                                  class_names=["stop"], weights_source=str(weights), device="cpu", versions={})
        best = tmp_path / f"run{rid}-best.pt"
        best.write_bytes(b"tuned")
        registry.add_artifact(rid, "weights/best", best.resolve())
        registry.set_status(rid, "finished")
        return RunResult(rid, name, RunStatus.FINISHED, tmp_path)

    return train


def kinds(db: Path, run_id: int) -> list[str]:
    return [a.kind for a in Registry(db).get_run(run_id).artifacts]


def test_prune_run_alone_records_no_report_its_service_does(tmp_path, monkeypatch):
    import npuyolo.prune.prune as stage
    from npuyolo.services import training
    from npuyolo.services.options import PruneOptions

    db = tmp_path / "r.db"
    rid = parent_run(db, tmp_path)
    scores = {"map50": 0.5, "map50_95": 0.3, "precision": 0.6, "recall": 0.4}
    monkeypatch.setattr(stage, "check_dataset", lambda data, cache_dir: None)
    monkeypatch.setattr(stage, "load_weights", lambda path: Net())
    monkeypatch.setattr(stage, "prune_model", lambda model, ratio, method, imgsz: Net())
    monkeypatch.setattr(stage, "save_checkpoint", lambda model, path, extra: (path.write_bytes(b"pruned"), path)[1])
    monkeypatch.setattr(stage, "count", lambda model, imgsz: {"parameters": 100, "gflops": 0.5})
    monkeypatch.setattr(stage, "torch_predictor", lambda model: model)
    monkeypatch.setattr(stage, "validate", lambda predictor, data, imgsz, names: dict(scores, extra=1))
    monkeypatch.setattr(stage, "train_variant", fake_training(tmp_path))
    monkeypatch.setattr(stage, "export_onnx", lambda model, path, imgsz: path)
    monkeypatch.setattr(stage, "bench_onnx", lambda path, runs, warmup: {"model": {"p50_ms": 2.0}})

    alone = stage.prune_run(Registry(db), str(rid), ratio=0.3, finetune_epochs=1)
    assert kinds(db, alone.run_id) == ["weights/best"]  # the stage trained a run and recorded nothing of its own

    served = training.prune(db, str(rid), PruneOptions(ratio=0.3, finetune_epochs=1))
    assert served.run_id != alone.run_id
    report = Registry(db).get_run(served.run_id).artifact("prune/report")
    assert report.path == served.pruned_checkpoint and Path(report.path).is_file()
    assert json.dumps(report.meta) == json.dumps(served.report())  # the row the stage wrote before, key for key
    assert list(report.meta) == ["parent_run", "ratio", "method", "finetune_epochs", "before", "pruned_before_finetune",
                                 "after", "ort_p50_ms", "pruned_checkpoint"]
    assert report.meta["before"] == {"parameters": 100, "gflops": 0.5, **scores}
    assert "prune/report" not in kinds(db, alone.run_id)


def test_qat_run_alone_records_no_parent_its_service_records_it_before_the_int8_files(tmp_path, monkeypatch):
    import importlib.util

    import npuyolo.deploy.qat as stage
    from npuyolo.deploy.int8.run import QuantizeResult
    from npuyolo.services import deploy
    from npuyolo.services.options import QatOptions

    db = tmp_path / "r.db"
    rid = parent_run(db, tmp_path)
    best = str((tmp_path / "parent-best.pt").resolve())

    def quantize(registry, ref, data, *, calib, per_channel, bias_correct, ends):
        return QuantizeResult(run_id=int(ref), fp32=str(tmp_path / "f.onnx"), int8=str(tmp_path / "q.onnx"),
                              calibration_images=["a.jpg"], holdout_images=[], auto_float=[], calibration="minmax",
                              method="minmax", percentile=None, calib=calib, per_channel=per_channel, keep_float=[],
                              float_tail=[], cle_pairs=0, bias_corrected=0, ends=ends, int16_nodes=[], sweep=[], holdout=0,
                              imgsz=64, head="npu")

    find_spec = importlib.util.find_spec  # ModelOpt is only what the stood-in training would use
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "modelopt" else find_spec(name, *a))
    monkeypatch.setattr(stage, "resolve_model", lambda registry, ref: SimpleNamespace(run_id=registry.resolve(ref)))
    monkeypatch.setattr(stage, "train_variant", fake_training(tmp_path))
    monkeypatch.setattr(stage, "quantize_run", quantize)

    alone = stage.qat_run(Registry(db), str(rid), tmp_path / "d.yaml", epochs=2, lr0=0.001, calib=4)
    assert kinds(db, alone.qat_run) == ["weights/best"]  # trained, quantized, nothing recorded of its own

    served = deploy.qat(db, str(rid), tmp_path / "d.yaml", QatOptions(epochs=2, lr0=0.001, calib=4), verbose=False)
    run = Registry(db).get_run(served.qat_run)
    assert [a.kind for a in run.artifacts] == ["weights/best", "qat/parent", "onnx/fp32", "onnx/int8"]
    parent = run.artifact("qat/parent")
    assert parent.path == best
    assert json.dumps(parent.meta) == json.dumps({"parent_run": rid, "parent_name": "parent", "epochs": 2, "lr0": 0.001,
                                                  "fake_quant": "nvidia-modelopt INT8 (Ultralytics quantize=8)"})
    assert served.as_dict() == {"parent_run": rid, "qat_run": served.qat_run, "qat_name": served.qat_name,
                                **served.quantized.as_dict()}


def test_a_qat_run_whose_quantization_fails_still_records_its_parent(tmp_path, monkeypatch):
    """The fine-tuning is the hours; a quantization error after it must not leave a QAT run that no longer says what
    it was fine-tuned from (the service records the parent as soon as the training finished)."""
    import importlib.util

    import npuyolo.deploy.qat as stage
    from npuyolo.deploy.runtime import DeployError
    from npuyolo.services import deploy
    from npuyolo.services.options import QatOptions

    db = tmp_path / "r.db"
    rid = parent_run(db, tmp_path)

    def quantize(registry, ref, data, **_):
        raise DeployError("no calibration image")

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "modelopt" else find_spec(name, *a))
    monkeypatch.setattr(stage, "resolve_model", lambda registry, ref: SimpleNamespace(run_id=registry.resolve(ref)))
    monkeypatch.setattr(stage, "train_variant", fake_training(tmp_path))
    monkeypatch.setattr(stage, "quantize_run", quantize)

    with pytest.raises(DeployError, match="no calibration image"):
        deploy.qat(db, str(rid), tmp_path / "d.yaml", QatOptions(epochs=2, lr0=0.001, calib=4), verbose=False)
    qat = [r for r in Registry(db).runs() if r.id != rid]
    assert len(qat) == 1 and kinds(db, qat[0].id) == ["weights/best", "qat/parent"]
    assert Registry(db).get_run(qat[0].id).artifact("qat/parent").meta["parent_run"] == rid
