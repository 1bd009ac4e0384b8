"""Fourth hostile round (issue 21), the environment: read-only and full disks, forged compiler manifests, huge
declared inputs, odd files and API arguments. Each reproducer failed before its fix.

Tests run as root, where chmod stops nothing: a read-only or full file system is simulated by refusing, under one
folder, exactly the calls that a read-only bind mount or a full tmpfs refuses (opening for writing, mkdir, touch,
unlink, rename; OpenCV's imwrite returns False), with the errno the kernel gives.
"""

from __future__ import annotations

import builtins
import errno
import functools
import io
import json
import os
import sqlite3
import sys
from pathlib import Path

import cv2
import pytest

from npuyolo.registry.db import Registry

from .test_hostile import cli, new_run, one_line_error, save_ultralytics_checkpoint


def finished_run(db: Path, name: str = "base", data: Path | None = None) -> tuple[Registry, int]:
    """A finished run with best weights (an untrained L4-relu) and one recorded epoch, as a 1-epoch train leaves it."""
    reg = Registry(db)
    rid = new_run(reg, name=name, **({"data_path": str(data)} if data else {}))
    best = save_ultralytics_checkpoint(Path(reg.get_run(rid).save_dir) / "weights" / "best.pt")
    reg.add_artifact(rid, "weights/best", best)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
    reg.set_status(rid, "finished")
    return reg, rid


def refuse_writes(monkeypatch, folder: Path, code: int) -> None:
    """Under `folder`, every write fails with `code` (EROFS: a read-only mount; ENOSPC: a full disk, statvfs 0 free)."""
    root = str(folder.resolve())
    under = lambda p: str(Path(os.fsdecode(p)).absolute()).startswith(root)  # noqa: E731
    fail = lambda p: OSError(code, os.strerror(code), os.fsdecode(p))  # noqa: E731
    real_open = builtins.open

    def guarded_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and under(file):
            raise fail(file)
        return real_open(file, mode, *a, **k)

    def guard(method):
        def refused(self, *a, **k):
            if under(self) and not (method.__name__ == "mkdir" and self.is_dir()):
                raise fail(self)
            return method(self, *a, **k)
        return refused

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    for name in ("mkdir", "touch", "unlink", "rmdir"):
        monkeypatch.setattr(Path, name, guard(getattr(Path, name)))
    real_replace, real_imwrite = os.replace, cv2.imwrite
    monkeypatch.setattr(os, "replace", lambda a, b, **k: (_ for _ in ()).throw(fail(b)) if under(b) else real_replace(a, b, **k))
    monkeypatch.setattr(cv2, "imwrite", lambda p, *a, **k: False if under(p) else real_imwrite(p, *a, **k))
    if code == errno.ENOSPC:
        real_statvfs = os.statvfs
        full = os.statvfs_result((4096, 4096, 1000, 0, 0, 1000, 0, 0, 0, 255))
        monkeypatch.setattr(os, "statvfs", lambda p: full if under(p) else real_statvfs(p))


# ------------------------------------------------------------------------------------ a read-only run folder
@pytest.mark.parametrize("command,made", [
    (["report", "base"], "reports"),  # the write fails, then the cleanup's unlink failed too and hid it
    (["report", "base", "--format", "html"], "reports"),
    (["predict", "base", "{images}"], "predict"),
    (["npu", "check", "base", "-t", "relu-only", "--imgsz", "64"], None),
    (["prune", "base", "--epochs", "1"], "prune"),
])
def test_a_read_only_run_folder_is_one_line_naming_it(tmp_path, synth_data, monkeypatch, command, made):
    db = tmp_path / "r.db"
    reg, rid = finished_run(db, data=synth_data)
    folder = Path(reg.get_run(rid).save_dir)
    if made:
        (folder / made).mkdir()
    before = sorted(p.name for p in folder.rglob("*"))
    refuse_writes(monkeypatch, folder, errno.EROFS)
    images = synth_data.parent / "images" / "val"
    out = one_line_error(cli(*(a.format(images=images) for a in command), registry=db))
    assert str(folder) in out and "read-only" in out, out
    monkeypatch.undo()
    assert sorted(p.name for p in folder.rglob("*")) == before


# ------------------------------------------------------------------------------------ a full disk
@pytest.mark.parametrize("message", ["database or disk is full", "disk I/O error"])
@pytest.mark.parametrize("command", [["runs"], ["train", "--variant", "L4-relu", "--data", "{data}", "--epochs", "1"]])
def test_a_registry_on_a_full_disk_says_disk_full(tmp_path, synth_data, monkeypatch, message, command):
    """Seen on a full tmpfs: SQLite cannot grow the -shm ('disk I/O error', SQLITE_IOERR_SHMSIZE) and npuyolo said
    'not an npuyolo registry', although the file is fine and works again once space is freed."""
    db = tmp_path / "reg" / "r.db"
    finished_run(db)[0].close()

    class FullDisk(sqlite3.Connection):
        def execute(self, *a, **k):
            raise sqlite3.OperationalError(message)

    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=FullDisk))
    refuse_writes(monkeypatch, db.parent, errno.ENOSPC)
    out = one_line_error(cli(*(a.format(data=synth_data) for a in command), registry=db))
    assert "disk full" in out and "not an npuyolo registry" not in out, out
    monkeypatch.undo()
    assert cli("runs", registry=db).exit_code == 0


def test_predict_report_and_synth_on_a_full_disk_are_one_line(tmp_path, synth_data, monkeypatch):
    db = tmp_path / "r.db"
    reg, rid = finished_run(db)
    folder = Path(reg.get_run(rid).save_dir)
    (folder / "reports").mkdir()
    refuse_writes(monkeypatch, tmp_path, errno.ENOSPC)
    assert "disk full" in one_line_error(cli("report", "base", registry=db))
    assert "disk full" in one_line_error(cli("predict", "base", synth_data.parent / "images" / "val", "--out",
                                             tmp_path / "pred", registry=db))
    out = one_line_error(cli("data", "synth", tmp_path / "set", "--train", "2", "--val", "1", "--imgsz", "64"))
    assert "disk full" in out and str(tmp_path / "set") in out
    monkeypatch.undo()
    assert not (tmp_path / "pred").exists()  # a failed predict leaves no (empty) output folder behind


# ------------------------------------------------------------------------------------ vendor compilers
def fake_install(compilers_dir: Path, name: str = "rknn", python: str | None = None, venv: Path | None = None) -> dict:
    """A manifest as `compilers install` writes it (venv-*/bin/python inside the compiler's folder), or a forged one."""
    home = compilers_dir / name
    own = home / "venv-20260101000000000000"
    (own / "bin").mkdir(parents=True, exist_ok=True)
    if not (own / "bin" / "python").exists():
        (own / "bin" / "python").symlink_to(sys.executable)  # a venv's python links to its base interpreter
    manifest = {"name": name, "version": "2.5.0", "python": python or str(own / "bin" / "python"), "venv": str(venv or own),
                "installed_at": "t", "pins": []}
    (home / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("forgery", ["outside", "python-outside-its-venv", "venv-linked-outside"])
def test_a_forged_compiler_manifest_is_never_run(compilers_dir, tmp_path, synth_data, forgery):
    from npuyolo.compilers import envs

    marker = tmp_path / "PWNED"
    evil = tmp_path / "elsewhere" / "bin" / "python"
    evil.parent.mkdir(parents=True)
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    if forgery == "outside":
        fake_install(compilers_dir, python=str(evil), venv=evil.parent.parent)
    elif forgery == "python-outside-its-venv":
        fake_install(compilers_dir, python=str(evil))
    else:
        linked = compilers_dir / "rknn" / "venv-linked"
        fake_install(compilers_dir)
        linked.symlink_to(evil.parent.parent)
        fake_install(compilers_dir, python=str(linked / "bin" / "python"), venv=linked)
    assert envs.installed("rknn") is None
    out = one_line_error(cli("npu", "compile", "L4-relu", "--compiler", "rknn", "--target", "rk3588", "--imgsz", "64",
                             "--data", synth_data, registry=tmp_path / "r.db"))
    assert "not npuyolo's" in out and not marker.exists(), out
    listed = json.loads(cli("compilers", "list", "--json").stdout)["compilers"]
    assert not next(c for c in listed if c["name"] == "rknn")["installed"]
    r = cli("compilers", "install", "rknn", "--json")  # before: reported the forged entry as installed (exit 0)
    assert "not made by npuyolo" in one_line_error(r) and not marker.exists()


def test_a_compilers_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("NPUYOLO_COMPILERS_DIR", str(tmp_path / "afile"))
    for command in (["compilers", "install", "rknn", "--json"], ["compilers", "list"]):
        assert "is a file" in one_line_error(cli(*command))


def test_npu_compile_refuses_a_huge_declared_input_before_allocating(compilers_dir, tmp_path, synth_data, monkeypatch):
    """An ONNX file declaring a 100000 x 100000 input: calibration images were made at that size (30 GB)."""
    import onnx
    from onnx import TensorProto, helper

    import npuyolo.deploy.compile as compile_mod

    fake_install(compilers_dir)
    side = 100000
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, side, side])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["out"], name="act")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")

    def allocates(*a, **k):
        raise AssertionError("calibration images were made at the declared size")

    monkeypatch.setattr(compile_mod, "write_calibration", allocates)
    monkeypatch.setattr(compile_mod, "calibration_arrays", allocates)
    out = one_line_error(cli("npu", "compile", tmp_path / "big.onnx", "--compiler", "rknn", "--target", "rk3588",
                             "--data", synth_data, registry=tmp_path / "r.db"))
    assert "4096" in out
    assert "4096" in one_line_error(cli("npu", "compile", "L4-relu", "--imgsz", "100000", "--compiler", "rknn", "--target",
                                        "rk3588", "--data", synth_data, registry=tmp_path / "r.db"))


# ------------------------------------------------------------------------------------ odd files, clear words
def test_a_registry_that_is_not_a_regular_file_is_refused(tmp_path):
    """--registry /dev/null made SQLite create /dev/null-journal."""
    journal = Path("/dev/null-journal")
    existed = journal.exists()
    try:
        for command in (["runs"], ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", "64"]):
            assert "not a regular file" in one_line_error(cli(*command, registry=Path("/dev/null")))
        assert journal.exists() == existed
    finally:
        if journal.exists() and not existed:
            journal.unlink()


@pytest.fixture
def odd_files(tmp_path) -> dict[str, Path]:
    (tmp_path / "x.onnx").mkdir()
    (tmp_path / "empty.onnx").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    return {"folder": tmp_path / "x.onnx", "empty": tmp_path / "empty.onnx", "fifo": tmp_path / "fifo.jpg",
            "loop": tmp_path / "loop.jpg", "zero": Path("/dev/zero")}


@pytest.mark.parametrize("command", [["deploy", "bench", "{f}"], ["deploy", "eval", "{f}", "--data", "{data}"],
                                     ["predict", "{f}", "{images}"], ["npu", "check", "{f}", "-t", "relu-only"]])
def test_a_folder_or_an_empty_file_given_as_onnx_says_so(tmp_path, odd_files, synth_data, command):
    """Before: a folder named x.onnx was 'not found', a 0-byte file had 'no npuyolo metadata'."""
    fill = dict(data=synth_data, images=synth_data.parent / "images" / "val")
    for key, said in (("folder", "is a folder"), ("empty", "is empty (0 bytes)")):
        out = one_line_error(cli(*(a.format(f=odd_files[key], **fill) for a in command), registry=tmp_path / "r.db"))
        assert said in out, out


@pytest.mark.parametrize("key,said", [("fifo", "not a regular file"), ("loop", "symlink loop"), ("zero", "not a regular file")])
def test_a_fifo_a_symlink_loop_or_a_device_as_a_source_says_so(tmp_path, odd_files, key, said):
    from .test_hostile2 import save_pt

    out = one_line_error(cli("predict", save_pt(tmp_path / "m.pt"), odd_files[key], "--out", tmp_path / "o"))
    assert said in out and "not found" not in out, out


def test_upper_case_suffixes_are_the_same_files(tmp_path, synth_data):
    """`npu check X.ONNX` said 'expected a .pt checkpoint'; a .PT checkpoint was refused as well."""
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    from .test_hostile2 import save_pt

    onnx_path = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "M.ONNX", imgsz=64)
    r = cli("npu", "check", onnx_path, "-t", "relu-only", "--json", registry=tmp_path / "r.db")
    assert r.exit_code == 0, r.output
    pt = save_pt(tmp_path / "m.pt", imgsz=64).rename(tmp_path / "M.PT")
    r = cli("export", pt, "--out", tmp_path / "e.onnx", registry=tmp_path / "r.db")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("threads", ["-5", "0", "100000"])
def test_bench_threads_are_bounded(tmp_path, threads):
    """-5 was accepted; 100000 threads hung the machine."""
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    onnx_path = export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path / "m.onnx", imgsz=64)
    assert "--threads must be 1.." in one_line_error(cli("deploy", "bench", onnx_path, "--threads", threads, "--runs", "1"))


# ------------------------------------------------------------------------------------ the API's edge
API_CALLS = {
    "Workspace(bytes)": lambda ws, d: type(ws)(b"/tmp/x.db"),
    "train(data=None)": lambda ws, d: ws.train("L4-relu", None, epochs=1),
    "train(data=bytes)": lambda ws, d: ws.train("L4-relu", b"d.yaml", epochs=1),
    "train(variant=None)": lambda ws, d: ws.train(None, d, epochs=1),
    "series(None)": lambda ws, d: ws.series(None),
    "study_relu_gap(None)": lambda ws, d: ws.study_relu_gap(None),
    "check(targets=None)": lambda ws, d: ws.check("L4-relu", None, imgsz=64),
    "check(targets=str)": lambda ws, d: ws.check("L4-relu", "relu-only", imgsz=64),
    "export(out=None)": lambda ws, d: ws.export("L4-relu", None, imgsz=64),
    "export(out=bytes)": lambda ws, d: ws.export("L4-relu", b"x.onnx", imgsz=64),
    "export(imgsz='64')": lambda ws, d: ws.export("L4-relu", "x.onnx", imgsz="64"),
    "evaluate(None)": lambda ws, d: ws.evaluate(None, d),
    "evaluate(bytes)": lambda ws, d: ws.evaluate(b"x.onnx", d),
    "bench(None)": lambda ws, d: ws.bench(None),
    "predict(source=bytes)": lambda ws, d: ws.predict("x.pt", b"img.jpg"),
    "predict(conf='0.5')": lambda ws, d: ws.predict("x.pt", "img.jpg", conf="0.5"),
    "report(out=bytes)": lambda ws, d: ws.report("1", out=b"o"),
}


@pytest.mark.parametrize("call", list(API_CALLS))
def test_api_arguments_of_the_wrong_type_are_one_npuyolo_error(tmp_path, synth_data, call):
    """None, bytes or a str number raised a raw TypeError/AttributeError, or were shown as if right ('got 64')."""
    from npuyolo import NpuyoloError, Workspace

    with pytest.raises(NpuyoloError) as e:
        API_CALLS[call](Workspace(tmp_path / "r.db"), synth_data)
    said = str(e.value)
    assert "must be" in said and "\n" not in said, said


# ------------------------------------------------------------------------------------ the registry's own folders
def test_a_read_command_never_writes_into_an_edited_save_dir(tmp_path):
    """A registry whose save_dir was edited made `report` (a read command) write into that outside folder."""
    db = tmp_path / "reg" / "r.db"
    reg, rid = finished_run(db)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET save_dir = ? WHERE id = ?", (str(outside), rid))
    con.commit()
    con.close()
    assert "outside the registry's folder" in one_line_error(cli("report", "base", registry=db))
    assert list(outside.iterdir()) == []
    r = cli("report", "base", "--out", tmp_path / "mine", registry=db)  # the user's own --out is still fine
    assert r.exit_code == 0, r.output


def test_deleting_the_registry_folder_during_a_train_fails_the_train(tmp_path, synth_data, monkeypatch):
    """It ended with exit 0 and status 'finished', with nothing on disk."""
    import shutil

    import npuyolo.train.trainer as trainer

    folder = tmp_path / "reg"
    real = trainer.trainer_for

    def deleting(recipe):
        class Deleting(real(recipe)):
            def train(self):
                shutil.rmtree(folder)  # what `rm -rf runs/` does while the run trains

        return Deleting

    monkeypatch.setattr(trainer, "trainer_for", deleting)
    out = one_line_error(cli("train", "--variant", "L4-relu", "--data", synth_data, "--epochs", "1", "--imgsz", "64",
                             "--workers", "0", registry=folder / "r.db"))
    assert "deleted" in out, out


def test_a_second_series_run_at_once_does_not_talk_about_name(tmp_path, synth_data):
    """The parallel `series run` that lost the race said "choose another --name"; series has no --name."""
    db = tmp_path / "r.db"
    reg = Registry(db)
    new_run(reg, name="s-L4-relu")  # what the other `series run` registered a moment before this one
    reg.close()
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\ndata: {synth_data}\nvariants: [L4-relu]\nrecipe: {{epochs: 1, imgsz: 64, workers: 0}}\n")
    r = cli("series", "run", spec, registry=db)  # a member banner comes first, then the one error line
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert "--name" not in errors[0] and "another run of this series" in errors[0], r.output
