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
