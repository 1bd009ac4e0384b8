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
