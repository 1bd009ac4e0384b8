"""Fourth hostile round (issue 21), severe items 1-4: data sets that run code, outputs that overwrite the registry
or a user's file, non-atomic rewrites, `data synth` over someone's data set. Each reproducer failed before its fix."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from npuyolo import NpuyoloError, Workspace
from npuyolo.registry.db import Registry

from .test_hostile import cli, new_run, one_line_error


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leaky_onnx(path: Path, meta: dict[str, str] | None = None) -> Path:
    """A one-node LeakyRelu graph with a static shape: what `npu rewrite` takes, written in milliseconds."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1, name="n")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------- 1. a data set's download: script
def hostile_set(tmp_path: Path, synth_data: Path, val, marker: Path, download: str | None = None) -> Path:
    """The issue's set: images under dl/set/, a val that Ultralytics does not find, a `download:` that writes `marker`."""
    folder = tmp_path / "dl" / "set"
    folder.mkdir(parents=True)
    for sub in ("images", "labels"):
        shutil.copytree(synth_data.parent / sub, folder / sub)
    cfg = {"train": "images/train", "val": val, "names": [f"c{i}" for i in range(6)],
           "download": download or f"open({str(marker)!r}, 'w').write('ran')\n"}
    (folder / "data.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "data.yaml"


@pytest.mark.parametrize("kind", ["python", "bash", "url"])
def test_ultralytics_never_acts_on_download(tmp_path, synth_data, monkeypatch, kind):
    """Whatever reaches Ultralytics' check_det_dataset (trainer, validator, exporter all call it by name), a missing
    val raises instead of fetching, `bash`-running or `exec`-ing the yaml's download: value."""
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.exporter as exporter
    import ultralytics.engine.trainer as trainer
    import ultralytics.engine.validator as validator

    import npuyolo.ultra  # noqa: F401  (installs the guards)

    marker = tmp_path / "PWNED"
    fetched = []
    monkeypatch.setattr(data_utils, "safe_download", lambda *a, **k: fetched.append(a or k))
    download = {"python": None, "bash": f"bash -c 'touch {marker}'", "url": "http://127.0.0.1:9/set.zip"}[kind]
    data = hostile_set(tmp_path, synth_data, "nowhere/val", marker, download)
    for module in (data_utils, trainer, validator, exporter):
        with pytest.raises(FileNotFoundError, match="images not found"):
            module.check_det_dataset(str(data))
        with pytest.raises(FileNotFoundError, match="images not found"):
            module.check_det_dataset(str(data), split="val")
    assert not marker.exists() and fetched == []


def test_deploy_eval_and_train_refuse_a_list_val_ultralytics_would_not_find(tmp_path, synth_data):
    """The issue's reproducer: `val: ["../images/val"]` passed npuyolo's check (a '../' fallback Ultralytics applies
    to a single string only), then Ultralytics ran the download: script. Now: one error line, nothing ran."""
    marker = tmp_path / "PWNED"
    data = hostile_set(tmp_path, synth_data, ["../images/val"], marker)
    model = leaky_onnx(tmp_path / "base.onnx", {"npuyolo_head": "npu", "imgsz": "[64, 64]"})
    db = tmp_path / "r.db"
    assert "val" in one_line_error(cli("deploy", "eval", model, "--data", data, registry=db))
    assert "val" in one_line_error(cli("train", "--variant", "L4-relu", "--data", data, "--epochs", "1", "--imgsz", "64",
                                       registry=db))
    assert not marker.exists()
    assert Registry(db, readonly=True).runs() == []  # refused before a run exists


def yaml_forms(root: Path) -> dict[str, tuple[dict, Path]]:
    """data.yaml spellings (strings and lists, with and without `path:`, relative and absolute): name -> (cfg, where)."""
    s, sub = root / "set", root / "set" / "sub"
    abs_val = str(s / "images" / "val")
    return {
        "str": ({"train": "images/train", "val": "images/val"}, s),
        "str ../ fallback": ({"train": "images/train", "val": "../images/val"}, s),
        "list": ({"train": ["images/train"], "val": ["images/val"]}, s),
        "list ../ (no fallback)": ({"train": "images/train", "val": ["../images/val"]}, s),
        "list mixed": ({"train": "images/train", "val": [abs_val, "../images/val"]}, s),
        "absolute": ({"train": str(s / "images" / "train"), "val": abs_val}, sub),
        "yaml in sub, ../": ({"train": "../images/train", "val": ["../images/val"]}, sub),
        "path absolute": ({"path": str(s), "train": "images/train", "val": ["images/val"]}, sub),
        "path relative to cwd": ({"path": "set", "train": "images/train", "val": "images/val"}, sub),
        "path relative, list ../": ({"path": "set/sub", "train": "../images/train", "val": ["../images/val"]}, root),
        "path relative, str ../": ({"path": "set/sub", "train": "../images/train", "val": "../images/val"}, root),
        "path missing": ({"path": "no-such-set-npuyolo", "train": "images/train", "val": "images/val"}, s),
        "path ..": ({"path": "..", "train": "images/train", "val": "images/val"}, sub),
    }


@pytest.mark.parametrize("form", list(yaml_forms(Path("/"))))
def test_the_data_check_resolves_splits_as_ultralytics_does(tmp_path, synth_data, monkeypatch, form):
    """npuyolo's check passes exactly when Ultralytics finds the split, and reads the same folders."""
    from npuyolo.data.check import DataError, check_dataset, load_data_yaml, split_paths
    from npuyolo.ultra import check_det_dataset

    monkeypatch.chdir(tmp_path)
    for sub in ("images", "labels"):
        shutil.copytree(synth_data.parent / sub, tmp_path / "set" / sub)
    (tmp_path / "set" / "sub").mkdir()
    cfg, where = yaml_forms(tmp_path)[form]
    data = where / "data.yaml"
    data.write_text(yaml.safe_dump({**cfg, "names": [f"c{i}" for i in range(6)]}))
    try:
        theirs = check_det_dataset(str(data))
    except FileNotFoundError:
        theirs = None
    try:
        check_dataset(data)
        ours = True
    except DataError as e:
        assert len(str(e).splitlines()) == 1, str(e)
        ours = False
    assert ours == (theirs is not None), (form, theirs)
    if theirs is not None:
        c, root, _ = load_data_yaml(data)
        for split in ("train", "val"):
            expect = theirs[split] if isinstance(theirs[split], list) else [theirs[split]]
            assert [str(p) for p in split_paths(root, c[split], data, split)] == expect


# ------------------------------------------------------------------------------- 2. --out never clobbers
@pytest.fixture
def registry_db(tmp_path) -> Path:
    db = tmp_path / "runs" / "npuyolo.db"
    reg = Registry(db)
    new_run(reg, name="precious")
    reg.close()
    return db


def test_export_never_overwrites_the_registry(tmp_path, registry_db):
    before = sha(registry_db)
    for extra in ([], ["--force"]):  # not even forced: nothing useful can come of it
        r = cli("export", "L4-relu", "--imgsz", "64", "--out", registry_db, *extra, registry=registry_db)
        assert "registry" in one_line_error(r)
    journal = registry_db.with_name("npuyolo.db-wal")
    assert "registry" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", journal, registry=registry_db))
    link = tmp_path / "hard.onnx"
    os.link(registry_db, link)  # another name for the same file
    assert "registry" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", link, "--force", registry=registry_db))
    assert sha(registry_db) == before and [r.name for r in Registry(registry_db, readonly=True).runs()] == ["precious"]
    with pytest.raises(NpuyoloError, match="registry"):
        Workspace(registry_db).export("L4-relu", registry_db, imgsz=64, force=True)
    assert sha(registry_db) == before


def test_export_refuses_a_foreign_file_and_a_symlink_unless_forced(tmp_path):
    mine = tmp_path / "notes.onnx"
    mine.write_text("my notes")
    target = tmp_path / "target.txt"
    target.write_text("keep")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    assert "did not write" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", mine))
    assert "symbolic link" in one_line_error(cli("export", "L4-relu", "--imgsz", "64", "--out", link))
    assert mine.read_text() == "my notes" and target.read_text() == "keep"
    r = cli("export", "L4-relu", "--imgsz", "64", "--out", link, "--force")
    assert r.exit_code == 0, r.output
    assert target.read_text() == "keep" and not link.is_symlink()  # the link is replaced, never written through
    r = cli("export", "L4-relu", "--imgsz", "64", "--out", link)  # now a file npuyolo wrote: replaced freely
    assert r.exit_code == 0, r.output


def test_rewrite_output_rules(tmp_path, monkeypatch):
    src = leaky_onnx(tmp_path / "m.onnx")
    foreign = tmp_path / "data.yaml"
    foreign.write_text("train: images\n")
    target = tmp_path / "target.onnx"
    target.write_text("keep")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    db = tmp_path / "reg" / "npuyolo.db"
    Registry(db).close()
    monkeypatch.setenv("NPUYOLO_REGISTRY", str(db))
    before = sha(db)
    assert "did not write" in one_line_error(cli("npu", "rewrite", src, "--out", foreign))
    assert "symbolic link" in one_line_error(cli("npu", "rewrite", src, "--out", link))
    assert "registry" in one_line_error(cli("npu", "rewrite", src, "--out", db, "--force"))
    assert "not a regular file" in one_line_error(cli("npu", "rewrite", src, "--out", "/dev/null", "--force"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert foreign.read_text() == "train: images\n" and target.read_text() == "keep" and sha(db) == before
    out = tmp_path / "r.onnx"
    for _ in range(2):  # its own output may be written again
        assert cli("npu", "rewrite", src, "--out", out).exit_code == 0
    assert cli("npu", "rewrite", src, "--out", foreign, "--force").exit_code == 0
    assert onnx.load(str(foreign)).graph.node[0].op_type != "LeakyRelu"


def test_check_output_file_unit(tmp_path):
    from npuyolo.errors import UnsafePathError
    from npuyolo.paths import check_output_file

    db = tmp_path / "r.db"
    db.write_bytes(b"SQLite format 3\x00")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="registry"):
        check_output_file(tmp_path / "dirlink" / "r.db", registry=db, force=True)  # through a linked folder
    assert check_output_file(tmp_path / "new" / "x.onnx", registry=db) == tmp_path / "new" / "x.onnx"
    assert (tmp_path / "new").is_dir()
    (tmp_path / "ours.onnx").write_text("x")
    assert check_output_file(tmp_path / "ours.onnx", registry=db, ours=lambda p: True)
    with pytest.raises(UnsafePathError, match="did not write"):
        check_output_file(tmp_path / "ours.onnx", registry=db, ours=lambda p: False)


# ------------------------------------------------------------------------------- 3. npu rewrite writes atomically
def test_rewrite_bad_places_are_one_line(tmp_path):
    src = leaky_onnx(tmp_path / "m.onnx")
    assert "is a folder" in one_line_error(cli("npu", "rewrite", src, "--out", tmp_path))
    assert "is a folder" in one_line_error(cli("npu", "rewrite", src, "--out", f"{tmp_path}/nodir/"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "cannot create" in one_line_error(cli("npu", "rewrite", src, "--out", blocker / "sub" / "x.onnx"))
    assert "cannot write" in one_line_error(cli("npu", "rewrite", src, "--out", "/proc/x.onnx"))
    r = cli("npu", "rewrite", src, "--out", tmp_path / "new" / "deeper" / "x.onnx")  # a missing folder is made
    assert r.exit_code == 0 and (tmp_path / "new" / "deeper" / "x.onnx").is_file(), r.output


def test_rewrite_on_a_full_disk_leaves_the_old_file_whole(tmp_path, monkeypatch):
    src = leaky_onnx(tmp_path / "m.onnx")
    out = tmp_path / "m.relu-decomp.onnx"
    assert cli("npu", "rewrite", src).exit_code == 0
    before = sha(out)

    def full_disk(model, path, *args, **kwargs):
        Path(path).write_bytes(b"\x08\x07half")  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save", full_disk)
    assert "No space left on device" in one_line_error(cli("npu", "rewrite", src))
    assert sha(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.relu-decomp.onnx"]  # no partial file left


# ------------------------------------------------------------------------------- 4. data synth over a data set
def test_data_synth_refuses_a_folder_it_did_not_write(tmp_path, synth_data):
    theirs = tmp_path / "theirs"
    shutil.copytree(synth_data.parent, theirs)
    (theirs / ".npuyolo-synth").unlink(missing_ok=True)  # as if another tool had written it
    (theirs / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [mine]\n")
    before = {p: sha(p) for p in theirs.rglob("*") if p.is_file()}
    assert "did not write" in one_line_error(cli("data", "synth", theirs, "--train", "2", "--val", "1", "--imgsz", "64"))
    assert {p: sha(p) for p in theirs.rglob("*") if p.is_file()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    for force in ([], ["--force"]):  # an empty folder, then the folder it wrote itself (issue 36: only with --force)
        r = cli("data", "synth", empty, "--train", "2", "--val", "1", "--imgsz", "64", *force)
        assert r.exit_code == 0, r.output
    assert (empty / ".npuyolo-synth").is_file() and (empty / "data.yaml").is_file()
