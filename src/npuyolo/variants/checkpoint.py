"""Checkpoints and the `npuyolo` metadata a model carries, loaded without running code from the file.

Every .pt npuyolo opens goes through `read_checkpoint`: Ultralytics' safe-load mode (`torch.load(weights_only=True)`
against an allow-list of known model classes), with failures turned into one clear `CheckpointError`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from npuyolo.errors import CheckpointError
from npuyolo.offline import trust_npuyolo_classes
from npuyolo.ultra import is_qat, load_checkpoint, stdout_to_stderr, strip_qat, torch_safe_load

__all__ = ["default_head", "is_pruned", "load_weights", "model_meta", "read_checkpoint", "trust_npuyolo_classes"]

_SAFE_PREFIXES = ("torch.", "ultralytics.", "npuyolo.", "numpy.", "collections.", "pathlib.", "builtins.getattr", "builtins.set",
                  "_codecs.encode", "builtins.slice", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.bytearray",
                  "builtins.object", "builtins.range", "builtins.complex", "builtins.frozenset", "types.SimpleNamespace")


def _foreign_globals(path: Path) -> list[str]:
    """Globals a checkpoint's pickle would import that are not model, tensor or container types (e.g. `posix.system`)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip archive: nothing to list, the load error says what is wrong
        return []
    return [n for n in names if not n.startswith(_SAFE_PREFIXES)]


def _explain(path: Path, e: BaseException) -> CheckpointError:
    if path.stat().st_size == 0:
        return CheckpointError(f"{path}: the checkpoint is empty (0 bytes); it was cut off while being written")
    foreign = _foreign_globals(path)
    if foreign:
        return CheckpointError(f"{path}: refused to load: its pickle would run {', '.join(foreign[:3])}, which is not part of"
                               " a model. npuyolo loads checkpoints with weights_only=True and never runs code from a file")
    detail = str(e).replace("ERROR ❌️ ", "").splitlines()[0]
    if "truncated" in detail or "PytorchStreamReader" in detail or isinstance(e, EOFError):
        return CheckpointError(f"{path}: the checkpoint is truncated or corrupt; it cannot be loaded ({type(e).__name__})")
    return CheckpointError(f"{path}: not a loadable npuyolo/Ultralytics checkpoint ({detail})")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, loaded safely; a missing, corrupt or code-carrying file is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix.lower() != ".pt":
        raise CheckpointError(f"{path}: expected a .pt checkpoint")
    trust_npuyolo_classes()
    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as e:  # torch/Ultralytics raise TypeError, RuntimeError, EOFError, UnpicklingError for bad files
        raise _explain(path, e) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not an Ultralytics checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def load_weights(path: str | Path) -> torch.nn.Module:
    """A DetectionModel from a .pt checkpoint (EMA weights when present), in float32 on the CPU.

    A QAT checkpoint (`deploy qat`) comes back as its plain fine-tuned weights: Ultralytics re-applies ModelOpt's
    fake-quantizers on load, and they are stripped again here, because npuyolo's INT8 graph is made by
    `deploy quantize` (full-graph QDQ), not by ModelOpt's Conv-input Q/DQ export.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)  # the one place that explains refusals; load_checkpoint below then loads the same way
    if ckpt.get("modelopt") and importlib.util.find_spec("modelopt") is None:
        raise CheckpointError(f"{path}: a quantization-aware (QAT) checkpoint; loading it needs NVIDIA ModelOpt: "
                              "pip install 'npuyolo[qat]'")
    try:
        with stdout_to_stderr():  # ModelOpt prints how many quantizers it inserted
            model, _ = load_checkpoint(str(path), device="cpu")
    except Exception as e:
        raise _explain(path, e) from e
    if hasattr(model, "student_model"):  # a distillation checkpoint: the student is the model
        model = model.student_model
    if is_qat(model):
        strip_qat(model)
    return model.float()


def model_meta(model: torch.nn.Module) -> dict:
    """The `npuyolo` block of a model's YAML (variant, level, head, pruning...), empty for a plain Ultralytics model."""
    return dict((getattr(model, "yaml", {}) or {}).get("npuyolo") or {})


def default_head(model: torch.nn.Module) -> str:
    return model_meta(model).get("head", "ultralytics")


def is_pruned(model: torch.nn.Module) -> bool:
    return bool(model_meta(model).get("pruned"))
