"""Quantization-aware fine-tuning of a trained run, then the same full-graph INT8 export as post-training quantization.

The fake-quantization is NVIDIA ModelOpt's INT8 (per-channel weights, per-tensor activations), wired into training by
Ultralytics itself (`quantize=8`): ModelOpt is maintained, Ultralytics already saves, resumes and strips its state in
checkpoints, so npuyolo adds no observers of its own. The fine-tuned float weights are then quantized by
`deploy quantize`'s route (ONNX Runtime QDQ over the whole graph, NPU head cut), so the QAT artefact is
full-integer and is taken by `deploy eval/bench`, `predict` and `npu check` like any other. As for `deploy quantize`,
this only computes: `services.deploy.qat` records the parent (`qat/parent`) and the INT8 files on the QAT run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from npuyolo.deploy.runtime import DeployError
from npuyolo.deploy.int8.run import QuantizeResult, quantize_run
from npuyolo.registry.schema import RunStatus
from npuyolo.resolve import resolve_model
from npuyolo.train.recipe import Recipe
from npuyolo.train.trainer import train_variant

__all__ = ["QatResult", "qat_run"]

FAKE_QUANT = "nvidia-modelopt INT8 (Ultralytics quantize=8)"


@dataclass(frozen=True)
class QatResult:
    """A QAT run (the weights it was fine-tuned from and how) and its INT8 QDQ export, quantized as `deploy quantize`
    does."""

    parent_run: int
    qat_run: int
    qat_name: str
    quantized: QuantizeResult
    parent_name: str
    parent_weights: str  # the parent's best weights the QAT run started from
    epochs: int
    lr0: float

    def as_dict(self) -> dict:
        """The shape `deploy qat` has always returned: the runs, then the quantize result's keys."""
        return {"parent_run": self.parent_run, "qat_run": self.qat_run, "qat_name": self.qat_name, **self.quantized.as_dict()}

    def parent_artefact(self) -> tuple[str, Path, dict]:
        """(kind, file, meta) the QAT run records of its parent (`services.deploy.qat`), before its INT8 files."""
        return parent_artefact(self.parent_run, self.parent_name, self.parent_weights, self.epochs, self.lr0)


def parent_artefact(parent_run: int, parent_name: str, weights: str | Path, epochs: int, lr0: float) -> tuple[str, Path, dict]:
    return "qat/parent", Path(weights), {"parent_run": parent_run, "parent_name": parent_name, "epochs": epochs, "lr0": lr0,
                                         "fake_quant": FAKE_QUANT}


def qat_run(registry, ref: str, data: str | Path | None = None, *, epochs: int = 5, lr0: float | None = None,
            calib: int = 200, per_channel: bool = True, bias_correct: bool = False, ends: str | None = None,
            verbose: bool = True, on_trained: Callable[[int, tuple[str, Path, dict]], None] | None = None) -> QatResult:
    """Fine-tune run `ref` with INT8 fake-quantization as a new run, then export its INT8 QDQ (the caller records the
    parent and those files on the new run, `services.deploy.qat`). `on_trained(qat_run_id, parent_row)` is called
    once the training finished, before the quantization: the caller records the parent there, so a quantization that
    fails leaves a QAT run that still says what it was fine-tuned from."""

    if importlib.util.find_spec("modelopt") is None:
        raise DeployError("deploy qat needs NVIDIA ModelOpt (the fake-quantization Ultralytics trains with): "
                          "pip install 'npuyolo[qat]'")
    if epochs < 1:
        raise DeployError(f"epochs must be at least 1, got {epochs}", param="epochs")
    if lr0 is not None and not lr0 > 0:
        raise DeployError(f"lr0 must be positive, got {lr0:g}", param="lr0")
    if registry.readonly:
        raise DeployError("qat records a new run; open the registry writable")
    resolved = resolve_model(registry, ref)
    if resolved.run_id is None:
        raise DeployError(f"{ref!r} is not a run; qat fine-tunes a trained run (id or name)")
    parent = registry.get_run(resolved.run_id)
    best = parent.artifact_path("weights/best")
    if best is None:
        raise DeployError(f"run {parent.name} has no best weights on disk (status {parent.status})")
    data = Path(data or parent.data_path)
    base = Recipe.recorded(parent)
    lr0 = lr0 if lr0 is not None else base.lr0 * 0.1  # fine-tuning near a minimum: a tenth of the parent's start
    recipe = Recipe.recorded(parent, **{"epochs": epochs, "warmup_epochs": 0, "lr0": lr0, "lr_final": min(base.lr_final, lr0),
                       "distill": None, "act_anneal": None, "ultralytics": {**base.ultralytics, "quantize": 8}})
    result = train_variant(registry, parent.variant, data, recipe, name=registry.unique_name(f"{parent.name[:80]}-qat"),
                           weights=best, verbose=verbose)
    if result.status != RunStatus.FINISHED:
        raise DeployError(f"QAT run {result.name} ended {result.status}; resume it with `npuyolo train --resume {result.run_id}`")
    if on_trained is not None:
        on_trained(result.run_id, parent_artefact(parent.id, parent.name, best, epochs, lr0))
    quantized = quantize_run(registry, str(result.run_id), data, calib=calib, per_channel=per_channel,
                             bias_correct=bias_correct, ends=ends)
    return QatResult(parent.id, result.run_id, result.name, quantized, parent_name=parent.name, parent_weights=str(best),
                     epochs=epochs, lr0=lr0)
