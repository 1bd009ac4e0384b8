"""Activation annealing: train a ReLU variant through LeakyReLU whose slope falls to exactly 0, no teacher needed.

Every ReLU of the model trains as LeakyReLU(a) with `a` following a schedule over epochs; from the epoch where
`a` reaches 0 on, the modules *are* `nn.ReLU` again, so every checkpoint after that, best.pt included, is a true
ReLU network that exports to the same graph as the plain variant. best.pt is chosen among those ReLU epochs only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from torch import nn

from npuyolo.errors import NpuyoloError
from npuyolo.ultra import Conv
from npuyolo.variants.spec import VariantError, _parse_activation

__all__ = ["AnnealError", "AnnealSchedule", "annealed_relus", "parse_anneal", "set_slope", "with_anneal"]

SHAPES = ("linear", "cosine")
MARK = "npuyolo_annealed"  # set on the LeakyReLU modules annealing put in place of a ReLU


class AnnealError(NpuyoloError, ValueError):
    """An annealing option that cannot produce a ReLU model (bad source, window, schedule)."""


@dataclass(frozen=True)
class AnnealSchedule:
    """Slope `slope` up to epoch `start`, then down to exactly 0 at epoch `end` (epochs count from 1, like the registry)."""

    source: str
    slope: float
    start: int
    end: int
    shape: Literal["linear", "cosine"] = "linear"

    def slope_at(self, epoch: int) -> float:
        if epoch <= self.start:
            return self.slope
        if epoch >= self.end:
            return 0.0
        t = (epoch - self.start) / (self.end - self.start)
        return self.slope * ((1.0 - t) if self.shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * t)))

    def as_dict(self) -> dict:
        return asdict(self)


def parse_anneal(source: str, epochs: int, window: str | None = None, shape: str = "linear") -> AnnealSchedule:
    """`leaky0.1` + `S:E` (default: from epoch 1 to half of training) + linear|cosine -> a checked schedule."""

    try:
        activation, slope = _parse_activation(source.strip(), source)
    except VariantError as e:
        raise AnnealError(f"act_anneal: {e}", param="act_anneal") from None
    if activation != "leaky" or not slope:
        raise AnnealError(f"act_anneal anneals from a LeakyReLU with a slope > 0 (e.g. leaky0.1), got {source!r}", param="act_anneal")
    if shape not in SHAPES:
        raise AnnealError(f"anneal_schedule must be one of {', '.join(SHAPES)}, got {shape!r}", param="anneal_schedule")
    if epochs < 2:
        raise AnnealError("annealing needs at least 2 epochs: one or more with LeakyReLU, then ReLU")
    if window:
        try:
            start, end = (int(x) for x in window.split(":"))
        except ValueError:
            raise AnnealError(f"anneal_epochs takes START:END (epochs, from 1), got {window!r}", param="anneal_epochs") from None
    else:
        start, end = 1, max(2, math.ceil(epochs / 2))
    if not 1 <= start < end <= epochs:
        raise AnnealError(f"anneal_epochs {start}:{end} must satisfy 1 <= START < END <= epochs ({epochs}); "
                          "the slope is exactly 0 from END on, so the final model is a ReLU network", param="anneal_epochs")
    return AnnealSchedule(activation, float(slope), start, end, shape)  # type: ignore[arg-type]


def annealed_relus(model: nn.Module) -> list[Conv]:
    """The Convs annealing controls: those whose activation is a ReLU, or a LeakyReLU annealing put there."""
    return [m for m in model.modules() if isinstance(m, Conv)
            and (type(m.act) is nn.ReLU or (isinstance(m.act, nn.LeakyReLU) and getattr(m.act, MARK, False)))]


def set_slope(model: nn.Module, slope: float) -> int:
    """LeakyReLU(slope) in every annealed position, or plain nn.ReLU once the slope is 0; returns how many."""
    convs = annealed_relus(model)
    for m in convs:
        if slope == 0.0:
            if type(m.act) is not nn.ReLU:
                m.act = nn.ReLU()
        elif isinstance(m.act, nn.LeakyReLU):
            m.act.negative_slope = slope
        else:
            act = nn.LeakyReLU(slope)
            setattr(act, MARK, True)
            m.act = act
    return len(convs)


def with_anneal(recipe, source: str | None, window: str | None = None, shape: str = "linear"):
    """The recipe with its annealing schedule (checked against the recipe's epochs); unchanged without a source."""
    if not source:
        if window or shape != "linear":
            raise AnnealError("`anneal_epochs` and `anneal_schedule` need `act_anneal` (e.g. leaky0.1)")
        return recipe
    return recipe.model_copy(update={"act_anneal": parse_anneal(source, recipe.epochs, window, shape).as_dict()})
