"""The training recipe: the report's defaults, overridable by YAML and flags, mapped to Ultralytics args."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from npuyolo.errors import NpuyoloError
from npuyolo.train.defaults import recipe_defaults
from npuyolo.yamlfile import SHORT_CHARS, YamlFileError, load_yaml, short


class RecipeError(NpuyoloError, ValueError):
    """A recipe or series file that is not a mapping of known settings."""


def load_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping (recipe, series): anything else is one clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{what} file not found: {path}")
    try:
        value = load_yaml(path)  # bounded: an alias bomb in a recipe or series is refused, never expanded
    except YamlFileError as e:
        raise RecipeError(str(e)) from e
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: a {what} file must be a mapping of settings (key: value), not a {type(value).__name__}")
    refuse_unnamed_keys(value, str(path))
    return value


def refuse_unnamed_keys(mapping: dict, source: str) -> None:
    """Settings are named: a key like `1:` or `[a]:` would reach Python as a keyword argument and raise TypeError."""
    bad = next((k for k in mapping if not isinstance(k, str)), None)
    if bad is not None:
        raise RecipeError(f"{source}: setting names must be text, got {short(bad)} ({type(bad).__name__})")


def validation_message(e: ValidationError, source: str) -> str:
    """Pydantic's errors as one line: `source: field: message; field: message`."""
    parts = [f"{_clip('.'.join(str(x) for x in err['loc'])) or 'value'}: {_clip(err['msg'])}" for err in e.errors()[:5]]
    more = f"; ... and {e.error_count() - 5} more" if e.error_count() > 5 else ""
    return f"{source}: " + "; ".join(parts) + more


def _clip(text: str) -> str:
    """A key or message from a user's file, cut short: a 100 kB key must not make the error line 100 kB."""
    return text if len(text) <= SHORT_CHARS else text[:SHORT_CHARS - 3] + "..."


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


class DistillConfig(BaseModel):
    """The teacher and loss weights of a distillation run (`npuyolo distill`), kept in its recipe."""

    model_config = ConfigDict(extra="forbid")

    teacher_run: int | None  # None: a checkpoint from elsewhere
    teacher_variant: str
    teacher_weights: str
    alpha: float = Field(1.0, ge=0)  # box/DFL distillation weight
    beta: float = Field(1.0, ge=0)  # class-logit distillation weight
    gamma: float = Field(0.0, ge=0)  # feature distillation weight
    temperature: float = Field(2.0, gt=0)

    def loss_weights(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "temperature": self.temperature}


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the report's recipe: no defaults here, they come from default_recipe.yaml (see _report_defaults)
    epochs: int = Field(ge=1)
    batch: int = Field(ge=1)
    imgsz: int = Field(ge=32)
    optimizer: str
    lr0: float = Field(gt=0)
    lr_final: float = Field(gt=0)
    momentum: float
    weight_decay: float
    warmup_epochs: float = Field(ge=0)
    seed: int = Field(ge=0, lt=2**32)
    deterministic: bool
    # the rest of the settings: their defaults are in default_recipe.yaml too, with why
    workers: int | None = Field(ge=0)  # None: min(8, CPU count), filled in below
    threads: int | None = Field(ge=1)  # torch threads of a CPU run; None: every core (the count changes the numbers)
    cache: Literal["ram", "disk"] | bool
    patience: int
    close_mosaic: int
    device: str | None
    plots: bool  # Ultralytics' own plots: confusion matrix, PR/F1 curves, labelled val batches (shown in reports)
    fraction: float = Field(gt=0, le=1)
    trackers: list[Literal["tensorboard", "mlflow", "wandb", "clearml", "comet", "dvc", "neptune"]] = Field(
        description="experiment trackers to let Ultralytics feed (off unless named; the registry is always on)")
    ultralytics: dict[str, Any] = Field(default_factory=dict, description="any other Ultralytics train argument")
    distill: DistillConfig | None = Field(None, description="teacher and loss weights of a distillation run")
    act_anneal: dict[str, Any] | None = Field(None, description="LeakyReLU -> ReLU slope schedule (train/anneal.py)")

    @model_validator(mode="before")
    @classmethod
    def _report_defaults(cls, data: Any) -> Any:
        """Settings not given take the report's values from default_recipe.yaml (their only home)."""
        return {**recipe_defaults(), **data} if isinstance(data, dict) else data

    @field_validator("workers")
    @classmethod
    def _workers_of_this_machine(cls, v: int | None) -> int:
        return default_workers() if v is None else v

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (the model's largest stride), got {v}")
        return v

    @model_validator(mode="after")
    def _anneal_schedule_checked(self) -> Recipe:
        """A schedule from a recipe file gets the same checks as --act-anneal (slope, window within epochs)."""
        if self.act_anneal is not None:
            from npuyolo.train.anneal import AnnealError, parse_anneal

            keys = {"source", "slope", "start", "end", "shape"}
            a = self.act_anneal
            if set(a) != keys:
                raise ValueError(f"act_anneal needs exactly {sorted(keys)}, got {sorted(a)}")
            try:
                checked = parse_anneal(f"{a['source']}{a['slope']}", self.epochs, f"{a['start']}:{a['end']}", a["shape"])
            except (AnnealError, TypeError) as e:
                raise ValueError(str(e)) from None
            self.act_anneal = checked.as_dict()
        return self

    @property
    def lrf(self) -> float:
        return self.lr_final / self.lr0

    @classmethod
    def default(cls) -> Recipe:
        return cls()

    @classmethod
    def recorded(cls, run: Any, **overrides: Any) -> Recipe:
        """The recipe a run recorded (`run.recipe`, a `RunRecipe`), with `overrides` over it, under today's checks: a
        setting this npuyolo no longer has (the row keeps it) or a value it refuses is one RecipeError naming the run,
        for what trains from a recorded run again (resume, QAT, prune, a series member)."""
        try:
            return cls(**{**run.recipe.as_dict(), **overrides})
        except ValidationError as e:
            raise RecipeError(validation_message(e, f"run {run.name}'s recorded recipe")) from None

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Recipe:
        """Defaults, then the YAML file, then non-None overrides (CLI flags)."""
        values = cls.default().model_dump()
        if path:
            values.update(load_mapping(path, "recipe"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as e:
            raise RecipeError(validation_message(e, str(path) if path else "recipe")) from e

    def ultralytics_args(self) -> dict[str, Any]:
        args = self.model_dump(exclude={"lr_final", "ultralytics", "distill", "act_anneal", "trackers", "threads"})
        args["lrf"] = self.lrf
        if args["device"] is None:
            args.pop("device")
        return {**args, **self.ultralytics}
