"""Resolve what a user names as a model: a variant name, a run (`7`, `#7` or its name), a .pt checkpoint or an .onnx
file. `ModelRef.parse` is the one place that decides which; every command and the Python API ask it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from npuyolo.paths import default_registry_path, safe_join, slug
from npuyolo.registry.db import Registry, RegistryError
from npuyolo.variants.build import build_model
from npuyolo.variants.checkpoint import load_weights
from npuyolo.variants.spec import HYBRID_RE, NAME_RE, parse_variant

__all__ = ["DEFAULT_IMGSZ", "ModelRef", "ResolvedModel", "default_imgsz", "output_dir_for", "resolve_model"]

DEFAULT_IMGSZ = 640  # Ultralytics' default, for a model whose training size nobody recorded

RefKind = Literal["onnx", "pt", "variant", "run"]


@dataclass(frozen=True)
class ModelRef:
    """What a model argument names, decided once: a run id (`7` or `#7`: digits alone always name a run, since run
    names never are, even with a file `7` in the working folder; `./7` names the file), an .onnx file, a .pt
    checkpoint (or any other existing file, which the safe loader then judges), a variant name (built untrained),
    else a run of the registry by its name."""

    text: str
    kind: RefKind

    @classmethod
    def parse(cls, ref: str | int | Path) -> ModelRef:
        text = str(ref).strip()
        low = text.lower()
        if text.removeprefix("#").isdigit() and text.removeprefix("#").isascii():
            return cls(text, "run")
        if low.endswith(".onnx"):
            return cls(text, "onnx")
        if low.endswith(".pt") or Path(text).is_file():
            return cls(text, "pt")
        if NAME_RE.match(text) or HYBRID_RE.match(text):
            return cls(text, "variant")
        return cls(text, "run")

    @property
    def is_run(self) -> bool:
        """Only a run needs the registry; a variant or a file touches none."""
        return self.kind == "run"


@dataclass
class ResolvedModel:
    model: torch.nn.Module
    label: str  # safe as a file-name part
    run_id: int | None = None
    trained_imgsz: int | None = None  # the size it was trained at (a run's recipe, a checkpoint's args), if known


def _checkpoint_imgsz(model: torch.nn.Module) -> int | None:
    size = (getattr(model, "args", None) or {}).get("imgsz")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 32 and size % 32 == 0 else None


def default_imgsz(resolved: ResolvedModel) -> int:
    """The size a model is exported, checked, compiled and predicted at unless the user says: the size it was trained at
    (a run's recipe, a checkpoint's own args), else 640. One rule for every front door."""
    return int(resolved.trained_imgsz or DEFAULT_IMGSZ)


def output_dir_for(registry, resolved: ResolvedModel, stage: str) -> Path:
    """Where a stage writes for a model: a run's own folder; beside the registry for a variant or a file; else
    runs/<stage>/<label> under the working directory. Never outside those roots (every part goes through safe_join)."""
    if registry is not None and resolved.run_id is not None:
        return registry.run_dir(registry.get_run(resolved.run_id), stage)
    if registry is not None:
        return registry.output_dir(stage, resolved.label)
    return safe_join("runs", stage, resolved.label)


def _bare_name(ref: str) -> bool:
    """A file named like a run could be (no folder, no checkpoint suffix): `myrun`, not `./myrun` or `a.pt`."""
    return "/" not in ref and not ref.lower().endswith((".pt", ".onnx"))


def _refuse_if_also_a_run(registry: Registry | str | Path | None, ref: str) -> None:
    """A stray file in the working folder named like a run must not silently hide the run: say which was meant."""
    path = Path(registry) if isinstance(registry, (str, Path)) else None
    if isinstance(registry, Registry):
        reg = registry
    else:
        path = path or default_registry_path()
        if not path.is_file():
            return
        try:
            reg = Registry(path, readonly=True)
        except (RegistryError, OSError):
            return
    try:
        run = reg.get_run(ref)
    except (RegistryError, OSError):
        return
    raise RegistryError(f"{ref!r} names both a file in this folder and run #{run.id} ({run.name}); write ./{ref} for "
                        f"the file or #{run.id} for the run")


def resolve_model(registry: Registry | str | Path | None, ref: str | ModelRef, nc: int = 80) -> ResolvedModel:
    """A .pt is loaded safely (never runs code from the file); a variant is built untrained; anything else is a run."""
    parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    ref = parsed.text
    if parsed.kind in ("pt", "onnx"):  # an .onnx here is no checkpoint: the safe loader names the problem
        if parsed.kind == "pt" and _bare_name(ref):
            _refuse_if_also_a_run(registry, ref)
        model = load_weights(ref)
        return ResolvedModel(model, slug(Path(ref).stem, "model"), trained_imgsz=_checkpoint_imgsz(model))
    if parsed.kind == "variant":
        spec = parse_variant(ref)
        return ResolvedModel(build_model(spec, nc=nc), slug(spec.name, "model"))
    if not isinstance(registry, Registry):
        registry = Registry(registry, readonly=True)
    run = registry.get_run(ref)
    path = run.artifact_path("weights/best", "weights/last")
    if path is None:
        raise RegistryError(f"run {run.name} has no weights on disk (status {run.status})")
    return ResolvedModel(load_weights(path), slug(run.name), run.id, trained_imgsz=run.recipe.imgsz)
