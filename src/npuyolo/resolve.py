"""Resolve what a user names as a model: a variant name, a run (`7`, `#7` or its name), or a .pt checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from npuyolo.paths import slug


@dataclass
class ResolvedModel:
    model: torch.nn.Module
    label: str  # safe as a file-name part
    run_id: int | None = None
    trained_imgsz: int | None = None  # the size it was trained at (a run's recipe, a checkpoint's args), if known


def _checkpoint_imgsz(model: torch.nn.Module) -> int | None:
    size = (getattr(model, "args", None) or {}).get("imgsz")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 32 and size % 32 == 0 else None


def resolve_model(ref: str, registry=None, nc: int = 80) -> ResolvedModel:
    """A .pt is loaded safely (never runs code from the file); a variant is built untrained; anything else is a run."""
    from npuyolo.registry.db import Registry, RegistryError
    from npuyolo.variants.build import build_model
    from npuyolo.variants.checkpoint import load_weights
    from npuyolo.variants.spec import HYBRID_RE, NAME_RE, parse_variant

    if ref.lower().endswith(".pt") or Path(ref).is_file():
        model = load_weights(ref)
        return ResolvedModel(model, slug(Path(ref).stem, "model"), trained_imgsz=_checkpoint_imgsz(model))
    if NAME_RE.match(ref) or HYBRID_RE.match(ref):
        spec = parse_variant(ref)
        return ResolvedModel(build_model(spec, nc=nc), slug(spec.name, "model"))
    if not isinstance(registry, Registry):
        registry = Registry(registry, readonly=True)
    run = registry.run(ref)
    path = run.artifact_path("weights/best", "weights/last")
    if path is None:
        raise RegistryError(f"run {run.name} has no weights on disk (status {run.status})")
    return ResolvedModel(load_weights(path), slug(run.name), run.id, trained_imgsz=run.recipe.get("imgsz"))
