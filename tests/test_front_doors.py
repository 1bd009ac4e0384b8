"""The CLI and the Python API are two front doors onto the same services: the same operation through either writes
the same files at the same size and records the same artefacts (issue 23, point 1)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from npuyolo import Workspace
from npuyolo.cli import app
from npuyolo.registry.db import Registry
from npuyolo.resolve import ModelRef
from npuyolo.variants.build import build_model

NAMES = ["stop", "speedlimit"]


def cli(*args) -> dict | list:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # stdout alone: Ultralytics' training log goes to stderr


def input_side(path: str | Path) -> int:
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An L4-relu .pt that says it was trained at 64 px (its args, as Ultralytics saves them)."""
    model = build_model("L4-relu", nc=len(NAMES), names=NAMES)
    model.args = {"imgsz": 64}
    path = tmp_path_factory.mktemp("front-doors") / "signs64.pt"
    torch.save({"model": None, "ema": model.half(), "epoch": -1, "train_args": {"imgsz": 64}}, path)
    return path


def finished_run(db: Path, checkpoint: Path, imgsz: int = 96) -> int:
    reg = Registry(db)
    run_id = reg.create_run(name="signs", variant="L4-relu", recipe={"imgsz": imgsz}, data_path="x", data_hash="0",
                            class_names=NAMES, weights_source=None, device="cpu", versions={})
    reg.add_artifact(run_id, "weights/best", checkpoint.resolve())
    reg.set_status(run_id, "finished")
    return run_id


def test_a_model_reference_is_parsed_in_one_place(tmp_path, checkpoint):
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    kinds = {ref: ModelRef.parse(ref).kind for ref in
             ("m.onnx", "M.ONNX", str(checkpoint), "missing.pt", str(odd), "L4-leaky", "L2-leaky0.1015625", "7", "#7", "signs")}
    assert kinds == {"m.onnx": "onnx", "M.ONNX": "onnx", str(checkpoint): "pt", "missing.pt": "pt", str(odd): "pt",
                     "L4-leaky": "variant", "L2-leaky0.1015625": "variant", "7": "run", "#7": "run", "signs": "run"}
    assert [ModelRef.parse(r).is_run for r in ("7", "L4-relu", "a.pt")] == [True, False, False]


def test_export_of_a_run_records_the_same_artefact_through_either_door(tmp_path, checkpoint):
    """`npuyolo export` recorded the run's onnx/<head> artefact; `Workspace.export` wrote the file and recorded nothing."""
    written = {}
    for door in ("cli", "api"):
        db = tmp_path / door / "npuyolo.db"
        run_id = finished_run(db, checkpoint)
        out = tmp_path / door / "signs.onnx"
        if door == "cli":
            path = Path(cli("export", "signs", "--out", out, "--head", "npu", "--registry", db, "--json")["onnx"])
        else:
            path = Workspace(db).export("signs", out, head="npu")
        run = Registry(db, readonly=True).get_run(run_id)
        onnx_rows = [(a.kind, a.path, a.meta) for a in run.artifacts if a.kind.startswith("onnx/")]
        written[door] = (path, onnx_rows)
    for door, (path, rows) in written.items():
        assert path == (tmp_path / door / "signs.onnx").resolve() and input_side(path) == 96  # the run's recipe size
        assert rows == [("onnx/npu", str(path), {"imgsz": 96})], door


def test_a_checkpoint_is_exported_and_checked_at_the_size_it_was_trained_at(tmp_path, checkpoint, monkeypatch):
    """export took 640 for a .pt while check took the checkpoint's own 64: the same file, two default sizes."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "npuyolo.db"
    sides = {
        "cli export": input_side(cli("export", checkpoint, "--registry", db, "--json")["onnx"]),
        "api export": input_side(Workspace(db).export(str(checkpoint), tmp_path / "api.onnx")),
        "cli check": input_side(cli("npu", "check", checkpoint, "-t", "relu-only", "--registry", db, "--json")[0]["onnx"]),
        "api check": input_side(Workspace(db).check(str(checkpoint), ["relu-only"]).onnx_paths["relu-only"]),
    }
    assert set(sides.values()) == {64}, sides


def test_train_through_either_door_records_the_same_run(tmp_path, synth_data):
    """The CLI and Workspace.train wired recipe, anneal options and registry each on their own; both now go through
    npuyolo.services.train_model, so the same request records the same recipe, epochs and artefact kinds."""
    args = dict(epochs=1, imgsz=64, batch=8, workers=0, plots=False)
    recorded = {}
    for door in ("cli", "api"):
        db = tmp_path / door / "npuyolo.db"
        if door == "cli":
            flags = [x for k, v in args.items() for x in ((f"--{k}", v) if not isinstance(v, bool) else (f"--{'' if v else 'no-'}{k}",))]
            run_id = cli("train", "--variant", "L4-relu", "--data", synth_data, "--name", "signs", *flags, "--registry", db, "--json")["run_id"]
        else:
            run_id = Workspace(db).train("L4-relu", synth_data, name="signs", verbose=False, **args).id
        run = Registry(db, readonly=True).get_run(run_id)
        recorded[door] = (run.status, run.recipe, [e.epoch for e in run.epochs], sorted(a.kind for a in run.artifacts))
    assert recorded["cli"] == recorded["api"] and recorded["cli"][0] == "finished"


def test_a_stray_file_named_like_a_run_id_does_not_hide_the_run(tmp_path, checkpoint, monkeypatch):
    """Issue 36: with a file `1` in the working folder, `export 1`, `deploy plan 1` and `deploy quantize 1` said
    "expected a .pt checkpoint". An all-digit reference (or `#1`) names a run; `./1` still names the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "1").write_text("notes")
    (tmp_path / "#2").write_text("notes")
    assert [ModelRef.parse(r).kind for r in ("1", "#2", " 1 ", "./1")] == ["run", "run", "run", "pt"]
    db = tmp_path / "reg" / "npuyolo.db"
    run_id = finished_run(db, checkpoint)
    assert run_id == 1
    out = tmp_path / "one.onnx"
    assert Path(cli("export", "1", "--out", out, "--registry", db, "--json")["onnx"]) == out.resolve()
    assert Workspace(db).export(1, tmp_path / "two.onnx") == (tmp_path / "two.onnx").resolve()
    # a file named like a run's *name* (not its id): which one was meant is said, not guessed
    (tmp_path / "signs").write_text("notes")
    for args in (["export", "signs", "--out", str(tmp_path / "three.onnx")], ["npu", "check", "signs", "-t", "relu-only"]):
        result = CliRunner().invoke(app, [*args, "--registry", str(db)])
        assert result.exit_code == 2 and "names both a file in this folder and run #1" in result.output, result.output
