"""Errors name parameters, the CLI names flags; recipe defaults live only in default_recipe.yaml (issue 23, point 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from npuyolo import NpuyoloError, Workspace
from npuyolo.cli import app
from npuyolo.train.defaults import recipe_defaults
from npuyolo.train.recipe import Recipe, default_workers


def cli_error(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    return result.output.strip()


def test_the_api_names_the_parameter_and_the_cli_its_flag(tmp_path):
    """A Python API user was told about `--imgsz` and `--force`, flags of a command they never ran."""
    with pytest.raises(NpuyoloError) as e:
        Workspace(tmp_path / "r.db").export("L4-relu", tmp_path / "x.onnx", imgsz=65)
    assert str(e.value).startswith("imgsz must be a positive multiple of 32") and e.value.param == "imgsz"
    assert "error: --imgsz must be a positive multiple of 32" in cli_error("export", "L4-relu", "--imgsz", 65, "--out", tmp_path / "x.onnx")

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's own file")
    with pytest.raises(NpuyoloError) as e:
        Workspace(tmp_path / "r.db").export("L4-relu", mine, imgsz=64)
    assert str(e.value).startswith(f"out {mine} already exists") and "`force` to overwrite" in str(e.value)
    said = cli_error("export", "L4-relu", "--imgsz", 64, "--out", mine)
    assert f"--out {mine} already exists" in said and "--force to overwrite" in said and "`" not in said
    assert mine.read_bytes() == b"the user's own file"


def test_recipe_defaults_live_only_in_default_recipe_yaml():
    defaults = recipe_defaults()
    assert {"epochs", "batch", "imgsz", "lr0", "lr_final", "momentum", "weight_decay", "warmup_epochs", "seed"} <= set(defaults)
    for key, value in defaults.items():
        assert Recipe.model_fields[key].is_required(), f"{key} has a default in recipe.py as well"
        # `workers: null` is this machine's min(8, CPU count), filled in when the recipe is made
        assert getattr(Recipe(), key) == (default_workers() if key == "workers" and value is None else value), key
    # every setting of the recipe has its default in the yaml, except the containers of other tools' options
    assert set(Recipe.model_fields) - set(defaults) == {"ultralytics", "distill", "act_anneal"}
    assert Recipe(epochs=3).epochs == 3 and Recipe(epochs=3).lr0 == defaults["lr0"]
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    for key in ("epochs", "batch", "imgsz", "lr0", "lr_final", "momentum", "weight_decay", "warmup_epochs", "seed"):
        assert f"[default: {defaults[key]}" in help_text, key


def test_top_level_help_does_not_load_the_recipe_defaults():
    """Issue 23: start-up must not grow; PyYAML (10 ms) is loaded only for `train --help` or a training run."""
    probe = ("import sys; sys.argv = ['npuyolo', '--help']\n"
             "from npuyolo.cli import app\n"
             "try:\n    app()\nexcept SystemExit:\n    pass\n"
             "print('LOADED', 'yaml' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "LOADED False" in done.stderr and "Train a variant" in done.stdout
