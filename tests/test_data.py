import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.data.check import DataError, check_dataset
from npuyolo.data.synth import CLASSES, synthesize

runner = CliRunner()


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (".jpg", ".txt"):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic_per_seed(tmp_path):
    a = synthesize(tmp_path / "a", 6, 2, 96, seed=3)
    b = synthesize(tmp_path / "b", 6, 2, 96, seed=3)
    c = synthesize(tmp_path / "c", 6, 2, 96, seed=4)
    assert digest(a.parent) == digest(b.parent) != digest(c.parent)


def test_synth_writes_a_valid_yolo_set_with_all_sign_classes(tmp_path):
    data = synthesize(tmp_path / "s", 60, 10, 128, seed=0)
    cfg = yaml.safe_load(data.read_text())
    assert cfg["nc"] == len(CLASSES) >= 6 and set(cfg["names"].values()) == set(CLASSES)
    report = check_dataset(data)
    assert report.splits["train"].images == 60 and report.splits["val"].images == 10
    counts = report.splits["train"].instances
    assert all(counts[c] > 0 for c in CLASSES), counts
    boxes = [list(map(float, line.split()[1:])) for f in (tmp_path / "s/labels/train").glob("*.txt") for line in f.read_text().splitlines()]
    widths = [b[2] for b in boxes]
    assert min(widths) < 0.12 and max(widths) > 0.25  # varied scale
    per_image = [len(f.read_text().splitlines()) for f in (tmp_path / "s/labels/train").glob("*.txt")]
    assert max(per_image) >= 3  # several signs per image


def test_check_counts_roadsign_like_layout(synth_data):
    report = check_dataset(synth_data).as_dict()
    assert set(report["splits"]) == {"train", "val"} and report["nc"] == 6
    assert report["splits"]["train"]["images"] == 24


def _break(data_yaml: Path, how: str) -> str:
    """Apply one kind of damage; return a fragment the error must contain."""
    root = data_yaml.parent
    label = sorted((root / "labels/train").glob("*.txt"))[0]
    image = sorted((root / "images/train").glob("*.jpg"))[0]
    if how == "missing_key":
        cfg = yaml.safe_load(data_yaml.read_text())
        del cfg["val"]
        data_yaml.write_text(yaml.safe_dump(cfg))
        return "missing key(s) val"
    if how == "missing_folder":
        cfg = yaml.safe_load(data_yaml.read_text())
        cfg["val"] = "images/nowhere"
        data_yaml.write_text(yaml.safe_dump(cfg))
        return "does not exist"
    if how == "corrupt_image":
        image.write_bytes(b"not an image at all")
        return f"{image}: unreadable or corrupt image"
    if how == "truncated_image":
        image.write_bytes(image.read_bytes()[:300])
        return f"{image}: unreadable or corrupt image"
    if how == "field_count":
        label.write_text("0 0.5 0.5 0.2\n")
        return f"{label}:1: expected 5 fields"
    if how == "class_id":
        label.write_text("0 0.5 0.5 0.2 0.2\n6 0.5 0.5 0.2 0.2\n")
        return f"{label}:2: class id 6 out of range"
    if how == "coords":
        label.write_text("1 0.5 1.3 0.2 0.2\n")
        return f"{label}:1: coordinates must be normalised to [0, 1]"
    if how == "missing_label":
        label.unlink()
        return "label file missing"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing_key", "missing_folder", "corrupt_image", "truncated_image", "field_count",
                                 "class_id", "coords", "missing_label"])
def test_check_rejects_bad_input_with_file_and_line(data_copy, how):
    expected = _break(data_copy, how)
    with pytest.raises(DataError) as e:
        check_dataset(data_copy)
    assert expected in str(e.value)
    result = runner.invoke(app, ["data", "check", str(data_copy)])
    assert result.exit_code == 2
    assert "error" in result.output and expected.split(":")[-1].strip()[:20] in result.output.replace("\n", "")


def test_empty_label_file_is_a_background_image_not_an_error(data_copy):
    before = check_dataset(data_copy).splits["train"].background_images
    label = sorted((data_copy.parent / "labels/train").glob("*.txt"))
    nonempty = next(f for f in label if f.read_text().strip())
    nonempty.write_text("")
    assert check_dataset(data_copy).splits["train"].background_images == before + 1


def test_missing_yaml_and_invalid_yaml(tmp_path):
    with pytest.raises(DataError, match="not found"):
        check_dataset(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        check_dataset(bad)


def test_data_check_json(synth_data):
    result = runner.invoke(app, ["data", "check", str(synth_data), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["splits"]["val"]["images"] == 8


def test_data_synth_cli(tmp_path):
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "o"), "--train", "3", "--val", "2", "--imgsz", "64"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o/images/train").glob("*.jpg"))) == 3


def test_check_cache_reuses_clean_reports_and_notices_changes(data_copy, tmp_path):
    cache = tmp_path / "cache"
    first = check_dataset(data_copy, cache_dir=cache)
    assert len(list(cache.glob("datacheck-*.json"))) == 1
    again = check_dataset(data_copy, cache_dir=cache)
    assert again.as_dict() == first.as_dict()
    label = sorted((data_copy.parent / "labels/train").glob("*.txt"))[0]
    label.write_text("0 0.5 0.5 0.2\n")  # a change invalidates the cached report
    with pytest.raises(DataError, match="expected 5 fields"):
        check_dataset(data_copy, cache_dir=cache)


def test_synth_set_still_works_after_a_move(synth_data, tmp_path):
    import shutil

    from npuyolo.data.check import check_dataset

    moved = tmp_path / "elsewhere"
    shutil.copytree(synth_data.parent, moved)
    assert "path" not in yaml.safe_load((moved / "data.yaml").read_text())
    report = check_dataset(moved / "data.yaml")
    assert Path(report.root) == moved.resolve() and report.splits["train"].images == 24


@pytest.mark.parametrize("layout", ["relative_to_cwd", "absolute", "none"])
def test_dataset_root_is_the_one_ultralytics_reads(synth_data, tmp_path, monkeypatch, layout):
    import shutil

    from ultralytics.data.utils import check_det_dataset

    from npuyolo.data.check import load_data_yaml

    shutil.copytree(synth_data.parent, tmp_path / "sets" / "signs")
    cfg = yaml.safe_load((tmp_path / "sets" / "signs" / "data.yaml").read_text())
    if layout == "relative_to_cwd":
        cfg["path"] = "sets/signs"  # Ultralytics reads a relative path: from the working directory
    elif layout == "absolute":
        cfg["path"] = str(tmp_path / "sets" / "signs")
    (tmp_path / "cfg").mkdir()
    target = tmp_path / ("cfg" if layout != "none" else "sets/signs") / "data.yaml"
    target.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    _, root, _ = load_data_yaml(target)
    assert root == Path(check_det_dataset(str(target))["path"]).resolve() == (tmp_path / "sets" / "signs").resolve()


def test_data_synth_refuses_a_non_empty_folder_unless_forced_and_then_empties_it(tmp_path):
    """Issue 36: `data synth` re-run on its own folder with other counts left a mixed set (16 old images, 2 labels
    rewritten, a new data.yaml), and runs trained on it silently pointed at changed data."""
    out = tmp_path / "o"
    args = ["data", "synth", str(out), "--imgsz", "64"]
    assert runner.invoke(app, [*args, "--train", "6", "--val", "2"]).exit_code == 0
    (out / "notes.txt").write_text("x")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = runner.invoke(app, [*args, "--train", "2", "--val", "1", "--seed", "5"])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "--force" in result.output, result.output
    assert "not empty" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    result = runner.invoke(app, [*args, "--train", "2", "--val", "1", "--seed", "5", "--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["train_00000.jpg", "train_00001.jpg"]
    assert len(list((out / "labels" / "train").iterdir())) == 2 and len(list((out / "images" / "val").iterdir())) == 1
    assert not (out / "notes.txt").exists() and (out / ".npuyolo-synth").is_file()
    assert check_dataset(out / "data.yaml").as_dict()["splits"]["train"]["images"] == 2
    with pytest.raises(DataError, match="not empty"):  # the Python function, the same rule
        synthesize(out, 2, 1, 64, seed=5)
    assert synthesize(out, 3, 1, 64, seed=5, force=True) == out / "data.yaml"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "mine.txt").write_text("a user's file")
    result = runner.invoke(app, ["data", "synth", str(theirs), "--imgsz", "64", "--train", "1", "--val", "1", "--force"])
    assert result.exit_code == 2 and "did not write" in result.output  # --force never empties a folder npuyolo did not write
    assert (theirs / "mine.txt").read_text() == "a user's file"


def test_data_check_warns_about_duplicate_boxes_and_counts_what_training_sees(data_copy):
    """Issue 36: a box repeated 100,000 times counted as 100,027 instances, while training removes 99,999 duplicates."""
    label = sorted((data_copy.parent / "labels" / "train").glob("*.txt"))[0]
    before = check_dataset(data_copy).as_dict()["splits"]["train"]
    box = "2 0.500000 0.500000 0.200000 0.200000\n"
    label.write_text(label.read_text() + box * 100_000)
    report = check_dataset(data_copy).as_dict()
    train = report["splits"]["train"]
    assert train["instances"]["stop"] == before["instances"]["stop"] + 1 and train["duplicates"] == 99_999
    assert len(report["warnings"]) == 1 and "99999 duplicate" in report["warnings"][0] and label.name in report["warnings"][0]
    result = runner.invoke(app, ["data", "check", str(data_copy)])
    assert result.exit_code == 0 and "warning:" in result.output and "99999 duplicate" in result.output, result.output
    cache = data_copy.parent / "cache"
    assert check_dataset(data_copy, cache_dir=cache).as_dict() == report == check_dataset(data_copy, cache_dir=cache).as_dict()
    result = runner.invoke(app, ["data", "check", str(data_copy), "--json"])
    assert json.loads(result.stdout)["warnings"] == report["warnings"]


# ------------------------------------------------------------------------------------------------ hostile and careless input (the former test_hostile*.py)
import io
import os
import shutil
import time

from npuyolo.registry.db import Registry

from .helpers import (bomb_anchors, cli, data_yaml_with, leaky_onnx, one_error_line, one_line_error, run_cli,
                      sha)

@pytest.mark.parametrize("changes,expect", [
    ({"names": None}, "names must be a list"),
    ({"names": {0: "a", "one": "b", 2: "c", 3: "d", 4: "e", 5: "f"}}, "names keys must all be class ids"),
    ({"path": 5}, "path must be a folder name"),
    ({"names": "person"}, "names: [person]"),
    ({"nc": "6"}, "nc must be a whole number"),
    ({"val": ""}, "val must be a folder"),
])
def test_bad_data_yaml_is_one_clear_error(tmp_path, synth_data, changes, expect):
    r = cli("data", "check", data_yaml_with(tmp_path, synth_data, **changes))
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


def test_alias_bomb_as_train_split_is_refused_at_once(data_copy):
    bad = data_copy.parent / "bomb-train.yaml"
    bad.write_text(bomb_anchors() + "train: *l8\nval: images/val\nnames: [a, b, c, d, e, f]\n")
    assert len(bad.read_bytes()) < 600
    rc, said, took = run_cli("data", "check", bad, cwd=data_copy.parent, timeout=30)
    line = one_error_line(rc, said)
    assert "alias" in line and took < 30


def test_alias_bomb_as_names_gives_a_short_line(data_copy):
    bad = data_copy.parent / "bomb-names.yaml"
    bad.write_text(bomb_anchors(depth=7) + "train: images/train\nval: images/val\nnames: *l7\n")
    rc, said, _ = run_cli("data", "check", bad, cwd=data_copy.parent, timeout=60)
    assert "alias" in one_error_line(rc, said)


def test_recursive_alias_and_deep_nesting_are_one_line(data_copy):
    from npuyolo.data.check import DataError, load_data_yaml

    folder = data_copy.parent
    (folder / "loop.yaml").write_text("train: &t [images/train, *t]\nval: images/val\nnames: [a]\n")
    (folder / "deep.yaml").write_text("train: images/train\nval: images/val\nnames: " + "[" * 5000 + "a" + "]" * 5000 + "\n")
    for name, word in (("loop.yaml", "contains it"), ("deep.yaml", "deeper")):
        with pytest.raises(DataError) as e:
            load_data_yaml(folder / name)
        assert word in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300


def test_a_huge_value_is_quoted_short(data_copy):
    """No alias at all: one 100 kB class name list given as a bare string is quoted in at most 80 characters."""
    bad = data_copy.parent / "long-names.yaml"
    bad.write_text(f"train: images/train\nval: images/val\nnames: {'x' * 100_000}\n")
    rc, said, _ = run_cli("data", "check", bad, cwd=data_copy.parent, timeout=60)
    line = one_error_line(rc, said, limit=len(str(bad)) + 200)
    assert "x" * 81 not in line


def test_yaml_larger_than_the_cap_is_refused(data_copy):
    from npuyolo.yamlfile import MAX_YAML_BYTES, YamlFileError, load_yaml

    big = data_copy.parent / "big.yaml"
    big.write_text("train: images/train\nval: images/val\nnames: [a]\n# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(YamlFileError, match="too large"):
        load_yaml(big)
    assert load_yaml(data_copy)["train"] == "images/train"  # a normal file still loads


def test_yaml_loader_never_reads_a_fifo(tmp_path):
    from npuyolo.yamlfile import YamlFileError, load_yaml

    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(YamlFileError, match="not a regular file"):
        load_yaml(fifo)


def test_ultralytics_never_sees_a_bomb_through_validate(data_copy):
    """deploy.eval.evaluate.validate hands the yaml to Ultralytics' check_det_dataset: npuyolo's bounded parse goes first."""
    from npuyolo.data.check import DataError
    from npuyolo.deploy.eval.evaluate import validate

    bad = data_copy.parent / "bomb-val.yaml"
    bad.write_text(bomb_anchors() + "train: images/train\nval: images/val\nnames: [a, b, c, d, e, f]\nnc: *l8\n")
    t0 = time.monotonic()
    with pytest.raises(DataError, match="alias"):
        validate(lambda x: None, bad, 64, {i: str(i) for i in range(6)})
    assert time.monotonic() - t0 < 10


def test_fifo_named_like_an_image_is_refused_not_read(data_copy):
    os.mkfifo(data_copy.parent / "images" / "train" / "x.jpg")
    (data_copy.parent / "labels" / "train" / "x.txt").write_text("")
    rc, said, _ = run_cli("data", "check", data_copy, cwd=data_copy.parent, timeout=30)
    assert "x.jpg: not a regular file" in one_error_line(rc, said)


def test_fifo_label_is_refused_not_read(data_copy):
    label = sorted((data_copy.parent / "labels" / "train").iterdir())[0]
    label.unlink()
    os.mkfifo(label)
    rc, said, _ = run_cli("data", "check", data_copy, cwd=data_copy.parent, timeout=30)
    assert f"{label.name}: not a regular file" in one_error_line(rc, said)


def test_fifo_stops_train_and_eval_before_ultralytics(data_copy):
    onnx_path = data_copy.parent / "m.onnx"
    assert cli("export", "L4-relu", "--imgsz", "64", "--nc", "6", "--out", onnx_path).exit_code == 0
    os.mkfifo(data_copy.parent / "images" / "val" / "y.png")
    reg = data_copy.parent / "reg" / "r.db"
    for args in (("train", "--variant", "L4-relu", "--data", data_copy, "--epochs", "1", "--imgsz", "64", "--registry", reg),
                 ("deploy", "eval", onnx_path, "--data", data_copy, "--registry", reg)):
        rc, said, _ = run_cli(*args, cwd=data_copy.parent, timeout=120)
        assert "y.png: not a regular file" in one_error_line(rc, said)


def test_path_root_with_train_dot_is_refused_at_once(tmp_path):
    bad = tmp_path / "root.yaml"
    bad.write_text("path: /\ntrain: .\nval: .\nnames: [a]\n")
    rc, said, took = run_cli("data", "check", bad, cwd=tmp_path, timeout=30)
    assert "file system root" in one_error_line(rc, said) and took < 30


def test_home_folder_is_not_searched(tmp_path, monkeypatch):
    from npuyolo.data.check import DataError, load_data_yaml, split_images

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"path: {home}\ntrain: .\nval: .\nnames: [a]\n")
    c, root, _ = load_data_yaml(cfg)
    with pytest.raises(DataError, match="home folder"):
        split_images(root, c["train"], cfg, "train")


def test_scan_stops_after_the_folder_cap(data_copy, monkeypatch):
    from npuyolo.data import check

    deep = data_copy.parent / "images" / "train"
    for i in range(12):
        (deep / f"sub{i}").mkdir()
    monkeypatch.setattr(check, "MAX_SCAN_FOLDERS", 10)
    with pytest.raises(check.DataError, match="after 10 folders") as e:
        check.check_dataset(data_copy)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(check, "MAX_SCAN_FOLDERS", 10_000)
    assert check.check_dataset(data_copy).splits["train"].images == 24  # the same set under the real cap is fine
