"""The training recipe: the report's defaults, overridable by YAML and flags, mapped to Ultralytics args."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=1)
    batch: int = Field(16, ge=1)
    imgsz: int = Field(640, ge=32)
    optimizer: str = "SGD"
    lr0: float = Field(0.003, gt=0)
    lr_final: float = Field(0.0001, gt=0)
    momentum: float = 0.9
    weight_decay: float = 0.001
    warmup_epochs: float = 5
    seed: int = 0
    deterministic: bool = True
    workers: int = Field(default_factory=default_workers, ge=0)
    patience: int = 100
    close_mosaic: int = 10
    device: str | None = None
    plots: bool = False
    fraction: float = Field(1.0, gt=0, le=1)
    ultralytics: dict[str, Any] = Field(default_factory=dict, description="any other Ultralytics train argument")
    distill: dict[str, Any] | None = Field(None, description="teacher and loss weights of a distillation run")

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (the model's largest stride), got {v}")
        return v

    @property
    def lrf(self) -> float:
        return self.lr_final / self.lr0

    @classmethod
    def default(cls) -> Recipe:
        text = resources.files("npuyolo.train").joinpath("default_recipe.yaml").read_text(encoding="utf-8")
        return cls(**yaml.safe_load(text))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Recipe:
        """Defaults, then the YAML file, then non-None overrides (CLI flags)."""
        values = cls.default().model_dump()
        if path:
            values.update(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def ultralytics_args(self) -> dict[str, Any]:
        args = self.model_dump(exclude={"lr_final", "ultralytics", "distill"})
        args["lrf"] = self.lrf
        if args["device"] is None:
            args.pop("device")
        return {**args, **self.ultralytics}
