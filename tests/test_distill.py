import math

import pytest
import torch
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.train.kd import KD_TERMS, KDDistillationModel
from npuyolo.registry.db import Registry
from npuyolo.train.trainer import train_variant
from npuyolo.variants.build import build_model

from .conftest import perturbed

runner = CliRunner()


def _models():
    from ultralytics.cfg import get_cfg

    teacher = perturbed(build_model("L4-leaky", nc=3))
    student = build_model("L4-relu", nc=3)
    student.args = get_cfg(overrides={"imgsz": 64})
    return teacher, student


def _batch():
    torch.manual_seed(1)
    return {"img": torch.rand(2, 3, 64, 64), "cls": torch.tensor([[0.0], [2.0]]), "batch_idx": torch.tensor([0.0, 1.0]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2]])}


def test_kd_terms_are_finite_and_training_closes_the_gap():
    teacher, student = _models()
    kd = KDDistillationModel(teacher_model=teacher, student_model=student, alpha=1.0, beta=1.0, gamma=0.5, temperature=2.0)
    kd.train()
    batch = _batch()
    loss, items = kd.loss(batch)
    assert all(k in items and math.isfinite(float(items[k])) for k in KD_TERMS) and torch.isfinite(loss).all()
    assert float(items["kd_feat"]) > 0  # feature imitation on when gamma > 0

    def terms() -> dict:
        """KD terms with BatchNorm frozen (eval mode), so only the weights move the gap."""
        kd._teacher_feats.clear()
        with torch.no_grad():
            kd.teacher_model(batch["img"])
        t_head = kd.decouple_outputs(kd._teacher_feats[len(kd.feats_idx) - 1], branch="one2many")
        s_head = kd.decouple_outputs(kd.student_model(batch["img"]), branch="one2many")
        return kd.kd_terms(s_head, t_head)

    kd.eval()
    with torch.no_grad():
        before = {k: float(v) for k, v in terms().items()}
    params = [p for p in kd.student_model.parameters() if p.requires_grad]
    assert params and not any(p.requires_grad for p in kd.teacher_model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    for _ in range(20):
        opt.zero_grad()
        t = terms()
        (kd.alpha * t["kd_cls"] + kd.beta * t["kd_box"]).backward()
        opt.step()
    with torch.no_grad():
        after = {k: float(v) for k, v in terms().items()}
    assert all(math.isfinite(v) for v in after.values())
    assert after["kd_cls"] < before["kd_cls"] and after["kd_box"] < before["kd_box"]


def test_distill_run_records_teacher_and_terms(synth_data, tiny_recipe, tmp_path):
    db = tmp_path / "r.db"
    teacher = train_variant(Registry(db), "L4-leaky", synth_data, tiny_recipe, verbose=False)
    result = runner.invoke(app, ["distill", "--teacher", str(teacher.run_id), "--student-variant", "L4-relu", "--data",
                                 str(synth_data), "--epochs", "2", "--imgsz", "64", "--batch", "8", "--workers", "0",
                                 "--gamma", "0.5", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    run = Registry(db).get_run(2)
    assert run.status == "finished" and run.variant == "L4-relu" and len(run.epochs) == 2
    d = run.recipe.distill
    assert d["teacher_run"] == teacher.run_id and (d["alpha"], d["beta"], d["gamma"], d["temperature"]) == (1.0, 1.0, 0.5, 2.0)
    for e in run.epochs:
        assert set(KD_TERMS) <= set(e.extra) and all(math.isfinite(e.extra[k]) for k in KD_TERMS)
    from npuyolo.deploy.export import load_weights
    from npuyolo.variants.build import activation_census

    student = load_weights(next(a.path for a in run.artifacts if a.kind == "weights/best"))
    assert set(activation_census(student)) == {"ReLU"}  # the deployable student, not the teacher
    missing = runner.invoke(app, ["distill", "--teacher", "99", "--student-variant", "L4-relu", "--data", str(synth_data),
                                  "--registry", str(db)])
    assert missing.exit_code == 2 and "no run '99'" in missing.output


def test_distill_run_resumes_after_sigkill(synth_data, tiny_recipe, tmp_path):
    import sys

    from .conftest import kill_after_first_epoch

    db = tmp_path / "kd" / "npuyolo.db"
    teacher = train_variant(Registry(db), "L4-leaky", synth_data, tiny_recipe, verbose=False)
    kill_after_first_epoch([sys.executable, "-m", "npuyolo.cli", "distill", "--teacher", str(teacher.run_id),
                            "--student-variant", "L4-relu", "--data", str(synth_data), "--epochs", "4", "--imgsz", "64",
                            "--batch", "8", "--workers", "0"], db, run_id=2)
    assert Registry(db).get_run(2).status == "interrupted"
    result = runner.invoke(app, ["train", "--resume", "2", "--registry", str(db)])
    assert result.exit_code == 0, result.output
    run = Registry(db).get_run(2)
    assert run.status == "finished" and [e.epoch for e in run.epochs] == [1, 2, 3, 4]
    assert all("kd_cls" in e.extra for e in run.epochs)  # resumed with npuyolo's KD terms, not Ultralytics' own
