"""Hostile input, round 4 (issue 21), severe items 5-8: YAML alias bombs, an MLflow server that is down (and the
registry given as MLflow's store), a FIFO among the images, and `path: /`. Each reproducer failed before its fix.

Everything that hung or exploded before runs in a child process with a timeout, so on the old code the test
fails instead of hanging the suite or filling its memory.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from npuyolo.registry.db import Registry

from .test_hostile import cli, new_run


def run_cli(*args, cwd: Path, timeout: float = 60) -> tuple[int, str, float]:
    """The real CLI in its own process: exit code, everything it said, seconds. A hang is a failure, not a wait."""
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "npuyolo.cli", *map(str, args)], cwd=cwd, capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"npuyolo {' '.join(map(str, args))} still running after {timeout} s")
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def one_error_line(rc: int, said: str, limit: int = 300) -> str:
    """Exit 2, exactly one short `error:` line, no traceback."""
    lines = [line for line in said.splitlines() if line.strip()]
    assert rc == 2, (rc, said[:2000])
    assert "Traceback" not in said, said[:2000]
    assert len(lines) == 1 and lines[0].startswith("error:"), said[:2000]
    assert len(lines[0]) <= limit, f"{len(lines[0])} characters: {lines[0][:300]}"
    return lines[0]


def bomb_anchors(depth: int = 8, width: int = 9) -> str:
    """Top-level keys l0..l<depth>, each `width` aliases of the one before: width**(depth+1) values, ~450 bytes."""
    rows = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    rows += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "\n".join(rows) + "\n"


def bomb_inline(depth: int = 7, width: int = 9) -> str:
    """The same bomb as one flow value (a list whose last item is the big one), to nest inside any key."""
    items = [f"&b0 [{', '.join(['lol'] * width)}]"]
    items += [f"&b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "[" + ", ".join(items) + "]"


@pytest.fixture
def data_yaml(data_copy) -> dict:
    return yaml.safe_load(data_copy.read_text())


# ------------------------------------------------------------------------------------------ 5. YAML alias bombs
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


def test_alias_bomb_in_a_recipe_is_refused_before_training(data_copy):
    recipe = data_copy.parent / "bomb-recipe.yaml"
    recipe.write_text(f"ultralytics: {{mosaic: {bomb_inline()}}}\n")
    assert len(recipe.read_bytes()) < 600
    rc, said, _ = run_cli("train", "--variant", "L4-relu", "--data", data_copy, "--recipe", recipe, "--epochs", "1",
                          "--imgsz", "64", "--registry", data_copy.parent / "reg" / "r.db", cwd=data_copy.parent, timeout=120)
    assert "alias" in one_error_line(rc, said)


def test_alias_bomb_in_a_series_recipe_is_refused(data_copy):
    series = data_copy.parent / "bomb-series.yaml"
    series.write_text(f"name: s\ndata: {data_copy}\nvariants: [L4-relu]\nrecipe: {{ultralytics: {{mosaic: {bomb_inline()}}}}}\n")
    rc, said, _ = run_cli("series", "run", series, "--registry", data_copy.parent / "reg" / "r.db", cwd=data_copy.parent, timeout=120)
    assert "alias" in one_error_line(rc, said)


def test_ultralytics_never_sees_a_bomb_through_validate(data_copy):
    """deploy.evaluate.validate hands the yaml to Ultralytics' check_det_dataset: npuyolo's bounded parse goes first."""
    from npuyolo.data.check import DataError
    from npuyolo.deploy.evaluate import validate

    bad = data_copy.parent / "bomb-val.yaml"
    bad.write_text(bomb_anchors() + "train: images/train\nval: images/val\nnames: [a, b, c, d, e, f]\nnc: *l8\n")
    t0 = time.monotonic()
    with pytest.raises(DataError, match="alias"):
        validate(lambda x: None, bad, 64, {i: str(i) for i in range(6)})
    assert time.monotonic() - t0 < 10


# ------------------------------------------------------------------------------------------ 6. MLflow stores
def test_mlflow_export_to_a_dead_server_fails_fast(tmp_path):
    reg = Registry(tmp_path / "r" / "npuyolo.db")
    new_run(reg, name="one")
    reg.close()
    rc, said, took = run_cli("runs", "export", "--mlflow", "http://127.0.0.1:9", "--registry", tmp_path / "r" / "npuyolo.db",
                             cwd=tmp_path, timeout=60)
    assert "cannot be reached" in one_error_line(rc, said)
    assert took < 30


def test_mlflow_export_to_a_stalled_server_times_out(tmp_path, monkeypatch):
    """A server that accepts the connection but never answers: MLflow's own timeout, shortened, ends it."""
    from npuyolo.registry import mlflow_export
    from npuyolo.registry.mlflow_export import MlflowExportError, export_runs

    for k in mlflow_export.HTTP_DEFAULTS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setitem(mlflow_export.HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    reg = Registry(tmp_path / "npuyolo.db")
    new_run(reg, name="one")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        t0 = time.monotonic()
        with pytest.raises(MlflowExportError) as e:
            export_runs(reg, f"http://127.0.0.1:{server.getsockname()[1]}")
        assert time.monotonic() - t0 < 15
    assert "\n" not in str(e.value)
    assert not any(k in os.environ for k in mlflow_export.HTTP_DEFAULTS)  # the defaults were only lent


def test_mlflow_export_into_the_registry_itself_is_refused(tmp_path):
    db = tmp_path / "r" / "npuyolo.db"
    reg = Registry(db)
    new_run(reg, name="one")
    reg.close()
    (tmp_path / "r" / "alias.db").symlink_to("npuyolo.db")
    tables = lambda: sorted(r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'"))  # noqa: E731
    before = tables()
    for uri in (f"sqlite:///{db}", f"sqlite:///{tmp_path / 'r' / 'alias.db'}"):
        result = cli("runs", "export", "--mlflow", uri, registry=db)
        assert result.exit_code == 2 and "registry itself" in result.output, result.output
    assert tables() == before


# ------------------------------------------------------------------------------------------ 7. FIFOs
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


# ------------------------------------------------------------------------------------------ 8. unbounded scans
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


# ------------------------------------------------------------------------------------------ found on the way
@pytest.mark.parametrize("text", ["1: 2\n", "name: s\ndata: d.yaml\nvariants: [L4-relu]\nrecipe: {1: 2}\n"])
def test_settings_keyed_by_a_number_are_one_line(data_copy, text):
    """`1: 2` in a recipe (or a series' recipe) reached Recipe(**values) and raised TypeError: keywords must be strings."""
    f = data_copy.parent / "k.yaml"
    f.write_text(text)
    args = ("series", "run", f) if "variants" in text else ("train", "--variant", "L4-relu", "--data", data_copy, "--recipe", f)
    result = cli(*args, registry=data_copy.parent / "r.db")
    assert result.exit_code == 2 and "setting names must be text" in result.output, (result.output, result.exception)
