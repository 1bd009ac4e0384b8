"""Variant names (`L<level>-<activation>[-<scale>]`) and the level table they resolve against."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel

SCALES = ("n", "s", "m", "l", "x")
NAME_RE = re.compile(r"^L(?P<level>\d+)-(?P<body>[a-z][a-z0-9.]*?)(?:-(?P<scale>[nsmlx]))?$")


class LevelSettings(BaseModel):
    """One row of levels.yaml after inheritance: everything a builder needs to know."""

    name: str
    title: str
    summary: str
    title_ko: str
    summary_ko: str
    activation_scope: Literal["backbone", "all"]
    attention: Literal["c2psa", "none"]
    sppf_pool: Literal["5x5", "3x3x2"]
    head: Literal["ultralytics", "npu"]
    why: str
    sources: list[str]


class VariantSpec(BaseModel):
    """A parsed variant name; `name` round-trips through `parse_variant`."""

    level: int
    activation: str
    slope: float | None = None
    scale: str = "n"

    @property
    def name(self) -> str:
        act = self.activation
        if self.slope is not None and self.slope != default_slope(self.activation):
            act += f"{self.slope:g}"
        return f"L{self.level}-{act}" + ("" if self.scale == "n" else f"-{self.scale}")

    @property
    def settings(self) -> LevelSettings:
        return levels()[f"L{self.level}"]


class VariantError(ValueError):
    """A variant name that does not parse or names an unknown level/activation."""


@cache
def _table() -> dict:
    text = resources.files("npuyolo.variants").joinpath("levels.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


@cache
def levels() -> dict[str, LevelSettings]:
    """Levels with inheritance applied, in order L0, L1, ..."""
    resolved: dict[str, LevelSettings] = {}
    inherited: dict = {}
    for name, row in _table()["levels"].items():
        inherited = {**inherited, **row}
        resolved[name] = LevelSettings(name=name, **inherited)
    return resolved


def activations() -> dict[str, dict]:
    return _table()["activations"]


def default_slope(activation: str) -> float | None:
    return activations().get(activation, {}).get("default_slope")


def parse_variant(name: str) -> VariantSpec:
    m = NAME_RE.match(name.strip())
    if not m:
        raise VariantError(
            f"bad variant name {name!r}: expected L<level>-<activation>[-<scale>], e.g. L4-leaky, L2-relu6, L0-silu-s"
        )
    level, scale = int(m["level"]), m["scale"] or "n"
    act, slope = _split_activation(m["body"])
    if f"L{level}" not in levels():
        raise VariantError(f"unknown level L{level} in {name!r}; levels: {', '.join(levels())}")
    if act not in activations():
        raise VariantError(f"unknown activation {act!r} in {name!r}; activations: {', '.join(activations())}")
    if slope is not None and default_slope(act) is None:
        raise VariantError(f"activation {act!r} takes no slope (only {', '.join(a for a in activations() if default_slope(a))})")
    return VariantSpec(level=level, activation=act, slope=float(slope) if slope else default_slope(act), scale=scale)


def _split_activation(body: str) -> tuple[str, str | None]:
    """'relu6' -> ('relu6', None); 'leaky0.2' -> ('leaky', '0.2'); unknown names pass through for the error."""
    if body in activations():
        return body, None
    for act in sorted(activations(), key=len, reverse=True):
        rest = body[len(act):]
        if body.startswith(act) and re.fullmatch(r"\d+(?:\.\d+)?", rest):
            return act, rest
    return body, None


def all_variants(scale: str = "n") -> list[VariantSpec]:
    """The full level x activation grid with default slopes."""
    return [parse_variant(f"{lv}-{act}" + ("" if scale == "n" else f"-{scale}")) for lv in levels() for act in activations()]
