"""`npuyolo distill`: train a student variant against a trained teacher run."""

from __future__ import annotations

from pathlib import Path

from npuyolo.errors import NpuyoloError
from npuyolo.train.recipe import DistillConfig, Recipe
from npuyolo.train.trainer import train_variant
from npuyolo.variants.spec import parse_variant


class DistillError(NpuyoloError, ValueError):
    """A teacher or student the distillation cannot use."""


def distill(registry, teacher: str, student_variant: str, data: str | Path, recipe: Recipe, *, alpha: float = 1.0,
            beta: float = 1.0, gamma: float = 0.0, temperature: float = 2.0, name: str | None = None, verbose: bool = True,
            series: str | None = None, on_created=None):

    if str(teacher).lower().endswith(".pt"):  # a checkpoint from elsewhere (e.g. another registry or machine)
        if not Path(teacher).is_file():
            raise DistillError(f"teacher checkpoint not found: {teacher}")
        from npuyolo.variants.checkpoint import load_weights, model_meta

        variant = model_meta(load_weights(teacher)).get("variant", "ultralytics")
        t, weights = {"id": None, "variant": variant, "name": Path(teacher).stem}, teacher
    else:
        run = registry.get_run(teacher)
        weights = run.artifact_path("weights/best")
        if weights is None:
            raise DistillError(f"teacher run {run.name} has no best weights on disk (status {run.status})")
        t = {"id": run.id, "variant": run.variant, "name": run.name}
    if temperature <= 0 or min(alpha, beta, gamma) < 0:
        raise DistillError("`temperature` must be > 0 and `alpha`, `beta`, `gamma` >= 0")
    spec = parse_variant(student_variant)
    recipe = recipe.model_copy(update={"distill": DistillConfig(
        teacher_run=t["id"], teacher_variant=t["variant"], teacher_weights=str(Path(weights).resolve()), alpha=alpha,
        beta=beta, gamma=gamma, temperature=temperature)})
    name = name or registry.unique_name(f"{spec.name}-distilled-from-{t['id'] or t['name'][:60]}")
    return train_variant(registry, spec.name, data, recipe, name=name, verbose=verbose, series=series, on_created=on_created)
