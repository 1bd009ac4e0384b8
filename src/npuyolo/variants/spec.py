"""Variant names (`L<level>-<activation>[-<scale>]`) and the level table they resolve against."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel

from npuyolo.errors import NpuyoloError

SCALES = ("n", "s", "m", "l", "x")
STAGES = ("backbone", "neck", "head")
HYBRID_RE = re.compile(r"^L(?P<level>\d+)-hybrid(?:-(?P<scale>[nsmlx]))?:(?P<map>[a-z0-9.=,]+)$")
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
    stage_activations: dict[str, tuple[str, float | None]] | None = None  # hybrid: per-stage activation

    @property
    def is_hybrid(self) -> bool:
        return self.stage_activations is not None

    @property
    def name(self) -> str:
        if self.stage_activations is not None:
            parts = [f"{stage}={_act_token(*self.stage_activations[stage])}" for stage in STAGES]
            return f"L{self.level}-hybrid" + ("" if self.scale == "n" else f"-{self.scale}") + ":" + ",".join(parts)
        act = self.activation
        if self.slope is not None and self.slope != default_slope(self.activation):
            act += f"{self.slope:g}"
        return f"L{self.level}-{act}" + ("" if self.scale == "n" else f"-{self.scale}")

    @property
    def settings(self) -> LevelSettings:
        return levels()[f"L{self.level}"]


class VariantError(NpuyoloError, ValueError):
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


def _act_token(activation: str, slope: float | None) -> str:
    return activation + (f"{slope:g}" if slope is not None and slope != default_slope(activation) else "")


def _parse_activation(token: str, name: str) -> tuple[str, float | None]:
    act, slope = _split_activation(token)
    if act not in activations():
        raise VariantError(f"unknown activation {act!r} in {name!r}; activations: {', '.join(activations())}")
    if slope is not None and default_slope(act) is None:
        raise VariantError(f"activation {act!r} takes no slope (only {', '.join(a for a in activations() if default_slope(a))})")
    value = float(slope) if slope else default_slope(act)
    if value is not None and not 0 <= value < 1:
        raise VariantError(f"slope {value:g} in {name!r} must be in [0, 1): a LeakyReLU slope of 1 or more is not an activation")
    return act, value


def parse_hybrid(name: str, m: re.Match) -> VariantSpec:
    """`L4-hybrid:backbone=relu,neck=leaky,head=leaky`; a stage left out keeps SiLU (stock)."""
    level = _check_level(int(m["level"]), name)
    stages: dict[str, tuple[str, float | None]] = {stage: ("silu", None) for stage in STAGES}
    seen: set[str] = set()
    for item in m["map"].split(","):
        stage, _, token = item.partition("=")
        if stage not in STAGES or not token:
            raise VariantError(f"bad hybrid map item {item!r} in {name!r}: expected <stage>=<activation>, stages {', '.join(STAGES)}")
        if stage in seen:
            raise VariantError(f"stage {stage!r} is given twice in {name!r}; give each stage once")
        seen.add(stage)
        stages[stage] = _parse_activation(token, name)
    return VariantSpec(level=level, activation="hybrid", slope=None, scale=m["scale"] or "n", stage_activations=stages)


def parse_variant(name: str) -> VariantSpec:
    if (h := HYBRID_RE.match(name.strip())) is not None:
        return parse_hybrid(name, h)
    m = NAME_RE.match(name.strip())
    if not m:
        raise VariantError(
            f"bad variant name {name!r}: expected L<level>-<activation>[-<scale>], e.g. L4-leaky, L2-relu6, L0-silu-s,"
            " or L<level>-hybrid:backbone=<act>,neck=<act>,head=<act>"
        )
    level = _check_level(int(m["level"]), name)
    act, slope = _parse_activation(m["body"], name)
    return VariantSpec(level=level, activation=act, slope=slope, scale=m["scale"] or "n")


def _check_level(level: int, name: str) -> int:
    if f"L{level}" not in levels():
        raise VariantError(f"unknown level L{level} in {name!r}; levels: {', '.join(levels())}")
    return level


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
