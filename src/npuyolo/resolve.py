"""Resolve what a user names as a model: a variant name, a run id/name, or a .pt checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ResolvedModel:
    model: torch.nn.Module
    label: str
    run_id: int | None = None


def resolve_model(ref: str, registry_path: Path | None = None, nc: int = 80) -> ResolvedModel:
    from npuyolo.deploy.export import load_weights
    from npuyolo.registry.db import Registry, RegistryError
    from npuyolo.variants.build import build_model
    from npuyolo.variants.spec import NAME_RE, parse_variant

    if ref.endswith(".pt") or Path(ref).is_file():
        return ResolvedModel(load_weights(ref), Path(ref).stem)
    if NAME_RE.match(ref):
        spec = parse_variant(ref)
        return ResolvedModel(build_model(spec, nc=nc), spec.name)
    registry = Registry(registry_path)
    run = registry.run(ref)
    weights = {a["kind"]: a["path"] for a in run["artifacts"]}
    path = weights.get("weights/best") or weights.get("weights/last")
    if not path or not Path(path).is_file():
        raise RegistryError(f"run {run['name']} has no weights on disk (status {run['status']})")
    return ResolvedModel(load_weights(path), run["name"], run["id"])
