"""Hostile and careless input: every reproducer from the safety audit, each failing before its fix.

Nothing here trains a model; checkpoints are built from untrained variants, so the corpus runs in seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.errors import CheckpointError, NpuyoloError
from npuyolo.registry.db import Registry, RegistryError
from npuyolo.train.recipe import Recipe

RUN_ARGS = dict(variant="L4-relu", recipe=Recipe.load(epochs=2, imgsz=64, batch=8, workers=0).model_dump(),
                data_path="/data/d.yaml", data_hash="h", class_names=["stop", "yield"], weights_source=None, device="cpu",
                versions={})


def cli(*args: str, registry: Path | None = None):
    env = {"NPUYOLO_REGISTRY": str(registry)} if registry else {}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.output
    return result.output


def new_run(reg: Registry, **kw) -> int:
    return reg.create_run(**{**RUN_ARGS, "name": None, **kw})


def save_ultralytics_checkpoint(path: Path, epoch: int = 0, nc: int = 2) -> Path:
    """A checkpoint shaped like Ultralytics' (EMA model, epoch, args), from an untrained variant."""
    from npuyolo.variants.build import build_model

    model = build_model("L4-relu", nc=nc, names=["stop", "yield"], verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "best_fitness": 0.1, "model": None, "ema": model.half(), "updates": 1,
                "optimizer": None, "train_args": {"imgsz": 64}}, path)
    return path


class Payload:
    """Pickles to os.system(<touch marker>): what a hostile checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil_pt(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "model": Payload(marker), "ema": None, "train_args": {}}, path)
    return path, marker


# ------------------------------------------------------------------------------------------------ 1. run folders
@pytest.mark.parametrize("first,second", [("한국어 런", "테스트"), ("a/b", "a_b"), ("..", "x")])
def test_every_run_owns_its_folder(tmp_path, first, second):
    reg = Registry(tmp_path / "r.db")
    a, b = reg.get_run(new_run(reg, name=first)), reg.get_run(new_run(reg, name=second))
    train = (tmp_path / "train").resolve()
    assert a.save_dir != b.save_dir
    for run in (a, b):
        folder = Path(run.save_dir)
        assert folder.is_dir() and folder.parent == train  # inside train/, never above it
    if first == "한국어 런":
        assert "한국어" in Path(a.save_dir).name and "테스트" in Path(b.save_dir).name  # Unicode stays readable


def test_two_registries_in_one_folder_never_share_a_run_folder(tmp_path):
    one, two = Registry(tmp_path / "a.db"), Registry(tmp_path / "b.db")
    r1, r2 = one.get_run(new_run(one)), two.get_run(new_run(two))
    assert r1.name == r2.name == "L4-relu-1"
    assert r1.save_dir != r2.save_dir


def test_traversal_names_cannot_leave_the_registry_folder(tmp_path):
    reg = Registry(tmp_path / "r.db")
    run = reg.get_run(new_run(reg, name="../../etc/x"))
    deploy = reg.run_dir(run, "deploy")
    assert tmp_path.resolve() in deploy.parents
    assert not (tmp_path.parent / "etc").exists()


def test_series_report_of_a_traversal_name_stays_under_reports(tmp_path):
    work = tmp_path / "a" / "b"  # ../../../X from the registry's folder would land beside tmp_path
    db = work / "r.db"
    reg = Registry(db)
    name = "../../../X"
    reg.upsert_series(name, {"variants": ["L4-relu"], "name": name})
    rid = new_run(reg, name="member", series=name)
    reg.set_series_member(name, "L4-relu", rid)
    reg.record_epoch(rid, 1, map50=0.2, map50_95=0.1, precision=0.3, recall=0.2, box_loss=1.0, cls_loss=1.0, dfl_loss=1.0)
    reg.set_status(rid, "finished")
    r = cli("series", "report", name, registry=db)
    assert r.exit_code == 0, r.output
    written = Path(r.output.split("wrote ", 1)[1].strip())
    assert written.is_file() and (work / "reports").resolve() in written.resolve().parents
    assert not (tmp_path / "X").exists() and not (tmp_path.parent / "X").exists()


# ------------------------------------------------------------------------------------------------ 2. untrusted .pt
def test_a_checkpoint_that_runs_code_is_refused(evil_pt):
    from npuyolo.variants.checkpoint import load_weights

    path, marker = evil_pt
    with pytest.raises(CheckpointError, match="refused to load"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["export", "{pt}", "--imgsz", "64"],
    ["npu", "check", "{pt}", "-t", "relu-only", "--imgsz", "64"],
    ["train", "--variant", "L4-relu", "--data", "{data}", "--weights", "{pt}", "--epochs", "1", "--imgsz", "64"],
    ["distill", "--teacher", "{pt}", "--student-variant", "L4-relu", "--data", "{data}", "--epochs", "1", "--imgsz", "64"],
])
def test_cli_never_runs_a_checkpoints_code(tmp_path, evil_pt, synth_data, command):
    path, marker = evil_pt
    r = cli(*(c.format(pt=path, data=synth_data) for c in command), registry=tmp_path / "reg" / "r.db")
    out = one_line_error(r)
    assert "refused to load" in out and not marker.exists()
    if (tmp_path / "reg" / "r.db").exists():
        assert Registry(tmp_path / "reg" / "r.db").runs() == []  # refused before a run was created


def test_resume_refuses_a_planted_last_pt(tmp_path, evil_pt):
    from npuyolo.train.trainer import TrainError, resume_run

    path, marker = evil_pt
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    planted = Path(reg.get_run(rid).save_dir) / "weights" / "last.pt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(path.read_bytes())
    with pytest.raises(TrainError, match="refused to load"):
        resume_run(rid, reg)
    assert not marker.exists()
    assert reg.get_run(rid).status == "interrupted"  # not claimed, not left running


def test_real_checkpoints_still_load(tmp_path):
    from npuyolo.variants.checkpoint import load_weights

    model = load_weights(save_ultralytics_checkpoint(tmp_path / "good.pt"))
    assert model.names == {0: "stop", 1: "yield"}


# ------------------------------------------------------------------------------------------------ 3. XSS
HOSTILE = "<script>alert(1)</script>"


def test_html_report_keeps_hostile_names_as_text(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name='<img src=x onerror=alert(1)> [x](javascript:alert(2))', class_names=[HOSTILE, "ok"])
    for e in (1, 2):
        reg.record_epoch(rid, e, map50=0.1 * e, map50_95=0.05 * e, precision=0.2, recall=0.1 * e, box_loss=2.0 / e,
                         cls_loss=2.0 / e, dfl_loss=1.5 / e, lr=0.003)
    reg.set_status(rid, "finished")
    from npuyolo.report.render import render_run

    for lang in ("en", "ko"):
        html = render_run(reg, rid, tmp_path / "out", lang=lang, fmt="html").read_text()
        assert "<script>" not in html
        assert "<img src=x" not in html
        assert 'href="javascript:' not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html.split("</title>")[0]  # the title too


# ------------------------------------------------------------------------------------------------ 5. atomic artefacts
def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    import npuyolo.deploy.export as export
    from npuyolo.variants.build import build_model

    def boom(*a, **k):
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(export.onnx.checker, "check_model", boom)
    out = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError, match="killed"):
        export.export_onnx(build_model("L4-relu", nc=2, verbose=False), out, imgsz=64)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_failed_quantize_leaves_no_untagged_int8(tmp_path, monkeypatch, synth_data):
    import npuyolo.deploy.quantize as quantize
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    fp32 = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "m.onnx", imgsz=64)

    def boom(*a, **k):
        raise RuntimeError("killed mid-quantize")

    monkeypatch.setattr(quantize.onnx.checker, "check_model", boom)
    out = tmp_path / "m-int8.onnx"
    with pytest.raises(RuntimeError, match="killed"):
        quantize.quantize_onnx(fp32, out, synth_data, calib=2)
    assert not out.exists() and not list(tmp_path.glob("*partial*"))


def test_save_model_keeps_the_previous_checkpoint(tmp_path):
    from npuyolo.train.trainer import PREVIOUS, keep_previous

    last = tmp_path / "last.pt"
    last.write_bytes(b"epoch 3")
    keep_previous(last)
    assert last.read_bytes() == b"epoch 3" and (tmp_path / PREVIOUS).read_bytes() == b"epoch 3"


# ------------------------------------------------------------------------------------------------ 6. phantom runs
@pytest.mark.parametrize("extra", [["--device", "cuda:7"], ["--recipe", "{bad_key}"], ["--name", "x" * 300]])
def test_errors_before_training_leave_no_phantom_run(tmp_path, synth_data, extra):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ultralytics: {no_such_key: 1}\n")
    db = tmp_path / "r.db"
    r = cli("train", "--variant", "L4-relu", "--data", synth_data, "--epochs", "1", "--imgsz", "64",
            *(e.format(bad_key=bad) for e in extra), registry=db)
    one_line_error(r)
    assert Registry(db).runs() == []


def test_a_failure_while_the_trainer_is_built_is_recorded_failed(tmp_path, synth_data, tiny_recipe, monkeypatch):
    import errno

    import npuyolo.train.trainer as trainer
    from npuyolo.train.trainer import TrainError, train_variant

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "trainer_for", lambda recipe: disk_full)
    reg = Registry(tmp_path / "r.db")
    with pytest.raises(TrainError, match="No space left"):
        train_variant("L4-relu", synth_data, tiny_recipe, reg, verbose=False)
    run = reg.get_run(1)
    assert run.status == "failed" and "No space left on device" in run.error


def test_a_failed_resume_does_not_stay_running(tmp_path, monkeypatch):
    import npuyolo.train.trainer as trainer

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    yaml_path = Path(reg.get_run(rid).save_dir) / "model.yaml"
    yaml_path.write_text("nc: 2\n")
    reg.add_artifact(rid, "model_yaml", yaml_path)

    class Broken:
        def __init__(self, **kw):
            raise RuntimeError("device vanished")

    monkeypatch.setattr(trainer, "trainer_for", lambda recipe: Broken)
    with pytest.raises(RuntimeError, match="vanished"):
        trainer.resume_run(rid, reg)
    assert reg.get_run(rid).status == "failed" and "device vanished" in reg.get_run(rid).error


# ------------------------------------------------------------------------------------------------ 7. corrupt last.pt
@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_corrupt_last_pt_is_explained_and_offers_good_checkpoints(tmp_path, damage):
    from npuyolo.train.trainer import PREVIOUS, TrainError, _resume_checkpoint

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    wdir = Path(reg.get_run(rid).save_dir) / "weights"
    last = save_ultralytics_checkpoint(wdir / "last.pt", epoch=4)
    save_ultralytics_checkpoint(wdir / PREVIOUS, epoch=3)
    save_ultralytics_checkpoint(wdir / "best.pt", epoch=2)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    run = reg.get_run(rid)
    with pytest.raises(TrainError) as e:
        _resume_checkpoint(run, wdir.parent, "last")
    msg = str(e.value)
    assert ("truncated" in msg if damage == "truncate" else "empty" in msg)
    assert "--from previous` (epoch 4)" in msg and "--from best` (epoch 3)" in msg
    assert _resume_checkpoint(run, wdir.parent, "best") == (wdir / "best.pt", 2)
    r = cli("train", "--resume", rid, registry=tmp_path / "r.db")
    assert "--from best" in one_line_error(r)


# ------------------------------------------------------------------------------------------------ 8. names
def test_auto_names_skip_taken_names(tmp_path):
    reg = Registry(tmp_path / "r.db")
    new_run(reg, name="L4-relu-2")
    rid = new_run(reg)  # would be L4-relu-2
    assert reg.get_run(rid).name == "L4-relu-2-2"


def test_ids_and_names_cannot_be_confused(tmp_path):
    reg = Registry(tmp_path / "r.db")
    for bad in ("1", "#1", "", "x\ny"):
        with pytest.raises(RegistryError):
            new_run(reg, name=bad)
    rid = new_run(reg, name="first")
    assert reg.resolve(f"#{rid}") == reg.resolve(str(rid)) == reg.resolve("first") == rid


# ------------------------------------------------------------------------------------------------ 9. registry files
def test_listing_runs_writes_nothing(tmp_path):
    db = tmp_path / "r.db"
    reg = Registry(db)
    rid = new_run(reg)
    reg.update_run(rid, pid=2 ** 22 + 12345)  # a process that does not exist: reaping would write
    reg.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = cli("runs", "--json", registry=db)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["status"] == "interrupted"  # shown as it is...
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # ...without writing it
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "running"


def test_read_commands_never_create_a_registry(tmp_path):
    db = tmp_path / "typo" / "r.db"
    for args in (["runs"], ["runs", "show", "1"], ["series", "rank", "v3"], ["report", "1"]):
        one_line_error(cli(*args, registry=db))
    assert not db.exists() and not db.parent.exists()


@pytest.mark.parametrize("kind", ["garbage", "directory", "negative_version", "foreign"])
def test_broken_registry_files_are_one_line_errors(tmp_path, kind):
    db = tmp_path / "r.db"
    if kind == "garbage":
        db.write_bytes(b"this is not sqlite" * 100)
    elif kind == "directory":
        db.mkdir()
    elif kind == "negative_version":
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = -1")
        con.close()
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (x)")
        con.close()
    for args in (["runs"], ["train", "--resume", "1"]):
        one_line_error(cli(*args, registry=db))
    if kind == "negative_version":  # no migration was run over it
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


# ------------------------------------------------------------------------------------------------ low: clear errors
def _data_yaml(tmp_path, synth_data, **changes) -> Path:
    cfg = {**yaml.safe_load(synth_data.read_text()), "path": str(synth_data.parent)}
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p = tmp_path / "data.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize("changes,expect", [
    ({"names": None}, "names must be a list"),
    ({"names": {0: "a", "one": "b", 2: "c", 3: "d", 4: "e", 5: "f"}}, "names keys must all be class ids"),
    ({"path": 5}, "path must be a folder name"),
    ({"names": "person"}, "names: [person]"),
    ({"nc": "6"}, "nc must be a whole number"),
    ({"val": ""}, "val must be a folder"),
])
def test_bad_data_yaml_is_one_clear_error(tmp_path, synth_data, changes, expect):
    r = cli("data", "check", _data_yaml(tmp_path, synth_data, **changes))
    assert expect in one_line_error(r)


def test_decompression_bomb_image_is_reported(tmp_path, synth_data):
    import shutil

    from PIL import Image

    root = tmp_path / "d"
    shutil.copytree(synth_data.parent, root)
    cfg = yaml.safe_load(synth_data.read_text())
    cfg["path"] = str(root)
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    image = next((root / "images" / "train").iterdir())
    bomb = Image.new("1", (20000, 20000))  # ~50 KB as PNG, 400 M pixels when decoded
    buf = io.BytesIO()
    bomb.save(buf, format="PNG")
    image.with_suffix(".png").write_bytes(buf.getvalue())
    if image.suffix != ".png":
        image.unlink()
    out = one_line_error(cli("data", "check", root / "data.yaml"))
    assert "decompression bomb" in out.lower()


@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n", "5\n", "a: [1, 2\n"])
@pytest.mark.parametrize("kind", ["recipe", "series"])
def test_recipe_and_series_files_that_are_not_mappings(tmp_path, synth_data, content, kind):
    f = tmp_path / f"{kind}.yaml"
    f.write_text(content)
    if kind == "recipe":
        r = cli("train", "--variant", "L4-relu", "--data", synth_data, "--recipe", f, registry=tmp_path / "r.db")
    else:
        r = cli("series", "run", f, registry=tmp_path / "r.db")
    out = one_line_error(r)
    assert str(f.name) in out


@pytest.mark.parametrize("imgsz", ["0", "-32", "50"])
def test_bad_image_sizes(tmp_path, imgsz):
    assert "multiple of 32" in one_line_error(cli("export", "L4-relu", "--imgsz", imgsz, "--out", tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


def test_quantize_rejects_a_bad_imgsz(tmp_path, synth_data):
    assert "multiple of 32" in one_line_error(cli("deploy", "quantize", "1", "--data", synth_data, "--imgsz", "50",
                                                  registry=tmp_path / "r.db"))


def test_garbage_and_metadata_less_onnx_in_deploy(tmp_path, synth_data):
    import onnx

    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not onnx" * 50)
    bare = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "bare.onnx", imgsz=64)
    proto = onnx.load(str(bare))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    for f in (garbage, bare):
        one_line_error(cli("deploy", "eval", f, "--data", synth_data, registry=tmp_path / "r.db"))
        one_line_error(cli("deploy", "bench", f, "--runs", "1"))


def test_deploy_eval_runs_the_data_check(tmp_path, synth_data):
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    m = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "m.onnx", imgsz=64)
    broken = _data_yaml(tmp_path, synth_data, names=["only", "two"], nc=...)
    assert "class id" in one_line_error(cli("deploy", "eval", m, "--data", broken, registry=tmp_path / "r.db"))


def test_unwritable_report_out(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    reg.set_status(rid, "finished")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "--out" in one_line_error(cli("report", rid, "--out", blocker / "sub", registry=tmp_path / "r.db"))


def test_compare_with_itself(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    assert "itself" in one_line_error(cli("report", rid, "--compare", rid, registry=tmp_path / "r.db"))


@pytest.mark.parametrize("variant,expect", [("L4-hybrid:backbone=relu,backbone=leaky", "twice"), ("L4-leaky1.5", "slope")])
def test_bad_variant_names(variant, expect):
    assert expect in one_line_error(cli("variants", "show", variant))


# ------------------------------------------------------------------------------------------------ code health
def test_real_bugs_keep_their_traceback(monkeypatch):
    import npuyolo.variants.spec as spec

    def bug(name):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(spec, "parse_variant", bug)
    r = cli("variants", "show", "L4-relu")
    assert r.exit_code != 2 and isinstance(r.exception, ValueError)


def test_every_error_class_is_an_npuyolo_error():
    from npuyolo.data.check import DataError
    from npuyolo.deploy.evaluate import DeployError
    from npuyolo.distill.run import DistillError
    from npuyolo.npu.graph import GraphError
    from npuyolo.npu.profiles import TargetError
    from npuyolo.npu.rewrite import RewriteError
    from npuyolo.prune.prune import PruneError
    from npuyolo.report.facts import ReportError
    from npuyolo.train.recipe import RecipeError
    from npuyolo.train.trainer import TrainError
    from npuyolo.variants.spec import VariantError

    for cls in (DataError, DeployError, DistillError, GraphError, TargetError, RewriteError, PruneError, ReportError,
                RecipeError, TrainError, VariantError, RegistryError, CheckpointError):
        assert issubclass(cls, NpuyoloError)


# ------------------------------------------------------------------------------------------------ second round (hostile tester)
def test_resume_refuses_a_planted_best_pt_that_ultralytics_would_open_at_the_end(tmp_path, evil_pt):
    from npuyolo.train.trainer import TrainError, resume_run

    path, marker = evil_pt
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.set_status(rid, "interrupted")
    wdir = Path(reg.get_run(rid).save_dir) / "weights"
    save_ultralytics_checkpoint(wdir / "last.pt", epoch=0)
    (wdir / "best.pt").write_bytes(path.read_bytes())
    with pytest.raises(TrainError, match="best.pt: refused to load"):
        resume_run(rid, reg)
    assert not marker.exists() and reg.get_run(rid).status == "interrupted"


def test_ultralytics_own_checkpoint_loads_are_weights_only(tmp_path, evil_pt):
    import npuyolo.ultra  # noqa: F401  (installs the guards)
    from ultralytics.utils.torch_utils import strip_optimizer

    path, marker = evil_pt
    strip_optimizer(path)  # called by Ultralytics' final_eval on best.pt / last.pt; it logs and skips what it cannot load
    assert not marker.exists()


def test_names_that_look_like_markup_stay_text_in_tables(tmp_path):
    reg = Registry(tmp_path / "r.db")
    new_run(reg, name="[/bold] oops [link=https://evil.example]x[/link]")
    r = cli("runs", registry=tmp_path / "r.db")
    assert r.exit_code == 0 and "[/bold] oops" in " ".join(r.output.split())


def test_markdown_tricks_in_names_stay_text(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name="x ![p](https://evil.example/name.gif)",
                  class_names=["![t](https://evil.example/pixel.gif)", "![j](javascript:alert(1))", "a|b|c", "last"])
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    reg.set_status(rid, "finished")
    from npuyolo.report.render import render_run

    html = render_run(reg, rid, tmp_path / "out", lang="en", fmt="html").read_text()
    assert "evil.example" not in "".join(html.split("<img")[1:]).split(">")[0]
    assert not [tag for tag in html.split("<img")[1:] if 'src="data:image/png' not in tag.split(">")[0]]
    assert "a|b|c, last" in html  # the pipe did not end the table cell
    md = render_run(reg, rid, tmp_path / "md", lang="en").read_text()
    assert "a\\|b\\|c" in md and "!\\[t\\](https://evil.example/pixel.gif)" in md


def test_series_names_that_slug_alike_get_their_own_folders(tmp_path):
    from npuyolo.paths import unique_slug

    assert unique_slug("a/b") != unique_slug("a_b") and unique_slug("a_b") == "a_b"


def test_read_commands_leave_no_wal_or_shm_behind(tmp_path):
    db = tmp_path / "r.db"
    reg = Registry(db)
    new_run(reg)
    reg.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    for args in (["runs"], ["runs", "show", "1"], ["series", "rank", "nope"]):
        cli(*args, registry=db)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.db")) == ["r.db"]


def test_exporting_a_variant_creates_no_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["export", "L4-relu", "--imgsz", "64", "--out", str(tmp_path / "x.onnx")],
                           env={"NPUYOLO_REGISTRY": ""})
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,expect", [
    (["export", "L4-relu", "--nc", "0", "--imgsz", "64", "--out", "{tmp}/x.onnx"], "--nc must be at least 1"),
    (["variants", "show", "L4-relu", "--nc", "0"], "--nc must be at least 1"),
    (["export", "L4-relu", "--imgsz", "64", "--out", "{tmp}"], "is a folder"),
    (["export", "L4-relu", "--imgsz", "64", "--out", "{tmp}/nodir/"], "is a folder"),
    (["export", "L4-relu", "--imgsz", "64", "--out", "/proc/x.onnx"], "--out /proc/x.onnx"),
    (["data", "synth", "{tmp}/d", "--imgsz", "0"], "--imgsz must be at least 32"),
    (["data", "synth", "{tmp}/d", "--seed", "-5"], "--seed must be 0 or more"),
    (["data", "synth", "{tmp}/afile"], "is a file"),
    (["variants", "show", "L4-relu", "--imgsz", "0"], "multiple of 32"),
])
def test_more_bad_inputs_are_one_line_errors(tmp_path, args, expect):
    (tmp_path / "afile").write_text("x")
    assert expect in one_line_error(cli(*(a.format(tmp=tmp_path) for a in args)))


def test_bad_recipe_values_are_refused(synth_data, tmp_path):
    for flags, expect in ((["--seed", "99999999999999999999"], "seed"), (["--warmup-epochs", "-3"], "warmup_epochs")):
        r = cli("train", "--variant", "L4-relu", "--data", synth_data, *flags, registry=tmp_path / "r.db")
        assert expect in one_line_error(r)
    assert Registry(tmp_path / "r.db").runs() == []


def test_quantize_refuses_negative_auto_float(tmp_path, synth_data):
    from npuyolo.deploy.evaluate import DeployError
    from npuyolo.deploy.quantize import quantize_onnx

    with pytest.raises(DeployError, match="auto_float") as e:
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", synth_data, auto_float=-1)
    assert e.value.param == "auto_float" and "--" not in str(e.value)  # the API names its parameter; the CLI, its flag


def test_a_run_cannot_be_named_like_a_variant(tmp_path):
    reg = Registry(tmp_path / "r.db")
    with pytest.raises(RegistryError, match="reads as a variant"):
        new_run(reg, name="L4-leaky")


def test_partial_files_of_killed_writers_are_cleaned_up(tmp_path):
    from npuyolo.paths import write_text

    stale = tmp_path / ".report.md.partial-4194000"  # a pid that does not exist
    stale.write_text("half")
    write_text(tmp_path / "report.md", "whole")
    assert not stale.exists() and (tmp_path / "report.md").read_text() == "whole"
