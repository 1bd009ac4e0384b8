import pytest
from pydantic import ValidationError

from npuyolo.train.recipe import Recipe, RecipeError


def test_defaults_are_the_reports_recipe():
    r = Recipe.default()
    assert (r.epochs, r.batch, r.imgsz, r.optimizer) == (100, 16, 640, "SGD")
    assert (r.lr0, r.lr_final, r.momentum, r.weight_decay, r.warmup_epochs, r.seed, r.deterministic) == (
        0.003, 0.0001, 0.9, 0.001, 5, 0, True)
    args = r.ultralytics_args()
    assert args["lrf"] == pytest.approx(0.0001 / 0.003) and "lr_final" not in args
    assert args["workers"] == r.workers <= 8


def test_yaml_then_flags_override(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("epochs: 7\nlr0: 0.01\nultralytics: {mosaic: 0.5}\n")
    r = Recipe.load(f, epochs=3, batch=None)
    assert (r.epochs, r.lr0, r.batch) == (3, 0.01, 16)
    assert r.ultralytics_args()["mosaic"] == 0.5


def test_bad_recipes_are_rejected(tmp_path):
    with pytest.raises(RecipeError, match="imgsz: .*multiple of 32"):
        Recipe.load(imgsz=100)
    f = tmp_path / "r.yaml"
    f.write_text("epoch: 3\n")  # typo
    with pytest.raises(RecipeError, match="r.yaml: epoch: Extra inputs are not permitted"):
        Recipe.load(f)


def test_cache_and_workers_reach_ultralytics(tmp_path):
    from npuyolo.train.trainer import preflight

    f = tmp_path / "r.yaml"
    f.write_text("cache: disk\nworkers: 3\n")
    args = Recipe.load(f).ultralytics_args()
    assert (args["cache"], args["workers"]) == ("disk", 3)
    assert Recipe.load(cache="ram").ultralytics_args()["cache"] == "ram"
    assert Recipe.default().ultralytics_args()["cache"] is False  # the default reads images every epoch
    f.write_text("cache: false\n")
    assert Recipe.load(f).cache is False
    for value in ("ram", "disk", False):
        preflight({**Recipe.load(cache=value).ultralytics_args(), "model": "yolo11n.yaml"})  # Ultralytics accepts each
    with pytest.raises(RecipeError, match="cache"):
        Recipe.load(cache="nvme")
    with pytest.raises(RecipeError, match="workers"):
        Recipe.load(workers=-1)


# ------------------------------------------------------------------------------------------------ hostile recipe files and values (the former test_hostile*.py)
from npuyolo.registry.db import Registry

from .helpers import bomb_inline, cli, one_error_line, one_line_error, run_cli

def test_bad_recipe_values_are_refused(synth_data, tmp_path):
    for flags, expect in ((["--seed", "99999999999999999999"], "seed"), (["--warmup-epochs", "-3"], "warmup_epochs")):
        r = cli("train", "--variant", "L4-relu", "--data", synth_data, *flags, registry=tmp_path / "r.db")
        assert expect in one_line_error(r)
    assert Registry(tmp_path / "r.db").runs() == []


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


@pytest.mark.parametrize("text", ["1: 2\n", "name: s\ndata: d.yaml\nvariants: [L4-relu]\nrecipe: {1: 2}\n"])
def test_settings_keyed_by_a_number_are_one_line(data_copy, text):
    """`1: 2` in a recipe (or a series' recipe) reached Recipe(**values) and raised TypeError: keywords must be strings."""
    f = data_copy.parent / "k.yaml"
    f.write_text(text)
    args = ("series", "run", f) if "variants" in text else ("train", "--variant", "L4-relu", "--data", data_copy, "--recipe", f)
    result = cli(*args, registry=data_copy.parent / "r.db")
    assert result.exit_code == 2 and "setting names must be text" in result.output, (result.output, result.exception)
