"""The KD model moved to `npuyolo.train.kd` (train must not import distill); this name stays because checkpoints
written during a distillation before the move name the class by this module path."""

from npuyolo.train.kd import KD_TERMS, KDDistillationModel

__all__ = ["KD_TERMS", "KDDistillationModel"]
