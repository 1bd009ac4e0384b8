"""The report's recipe defaults, read from `default_recipe.yaml`, the one place they are written: `Recipe` fills
missing settings from here and the CLI's help quotes them (a light module: the help must not import pydantic)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["recipe_defaults"]


@cache
def recipe_defaults() -> dict[str, Any]:
    text = resources.files("npuyolo.train").joinpath("default_recipe.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text))
