"""The input contract between npuyolo's FP32 ONNX model and a vendor's compiled model, checked on one golden image.

A compiled model that silently reads BGR for RGB, NHWC for NCHW or 0–255 for 0–1 scores near zero on the device
while the PC looked fine (rknn_model_zoo#290, ultralytics#24223). Before any accuracy figure is trusted, one image
goes through both models and their outputs are compared tensor by tensor. When they disagree, the usual mistakes are
tried one by one, and the one that makes the outputs agree is named: one line, not a silent zero mAP.

The compiled model is any callable taking the image prepared as its declared contract says and returning its output
tensors; vendor runtimes (RKNN's simulator, the TFLite interpreter, MCT's model) are wrapped to that shape.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from npuyolo.data.calibration import letterbox
from npuyolo.data.synth import compose
from npuyolo.errors import NpuyoloError

__all__ = ["ContractError", "ContractReport", "InputContract", "OutputMatch", "check_contract", "golden_image", "match_outputs",
           "prepare"]

Runner = Callable[[np.ndarray], Sequence[np.ndarray]]
MATCH = 0.98  # cosine similarity of every output tensor for "the same model" (RKNN's accuracy_analysis measure)
# An output whose FP32 values span less than this carries too little signal for a cosine once quantized: class sigmoids
# of a scale where nothing was found sit within a step or two of INT8's 1/255 (cosine 0.4 on a model that is right).
# Such tensors are reported, not judged; when none has signal (a barely trained model), nothing is judged.
SIGNAL = 0.05


class ContractError(NpuyoloError, ValueError):
    """The compiled model's input contract is not the one declared."""


@dataclass(frozen=True)
class InputContract:
    """How an image must be laid out for a model: npuyolo's ONNX models are NCHW, RGB, 0–1, no mean/std in the graph."""

    imgsz: int
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["RGB", "BGR"] = "RGB"
    scale: Literal["0-1", "0-255"] = "0-1"  # value range fed in ("0-255": the model divides by 255 itself)
    dtype: Literal["float32", "uint8"] = "float32"

    def describe(self) -> str:
        return f"{self.layout} {self.channels} {self.scale} {self.dtype} {self.imgsz}x{self.imgsz}"


@dataclass(frozen=True)
class ContractReport:
    declared: InputContract
    cosine: list[float]  # per output tensor, compiled vs FP32
    matches: list[OutputMatch] = field(default_factory=list)  # compiled outputs in the FP32 model's order
    signal: list[bool] = field(default_factory=list)  # per output: judged (False: too little signal for a cosine)

    @property
    def worst(self) -> float:
        return min(self.cosine)

    @property
    def judged(self) -> bool:
        """False: no FP32 output varies on the golden image (a model too weak to judge), so nothing was compared."""
        return any(self.signal)


def _signal(reference: Sequence[np.ndarray]) -> list[bool]:
    return [float(np.ptp(r)) >= SIGNAL for r in reference]


def _judged(reference: Sequence[np.ndarray], scores: Sequence[float]) -> float:
    """The worst cosine over the outputs with signal (all of them when none has)."""
    judged = [c for c, s in zip(scores, _signal(reference)) if s]
    return min(judged or scores)


def golden_image(imgsz: int, seed: int = 0) -> np.ndarray:
    """[1, 3, imgsz, imgsz] RGB float32 in [0, 1]: a synthetic sign scene, letterboxed as for evaluation.

    Not symmetric in its channels (red and blue signs), so a channel swap changes the outputs.
    """

    image = compose(imgsz, np.random.default_rng(seed))[0]
    return letterbox(np.ascontiguousarray(image), imgsz)[None]


def prepare(image: np.ndarray, contract: InputContract) -> np.ndarray:
    """npuyolo's [1, 3, H, W] RGB 0–1 image as `contract` wants it."""
    x = image[:, ::-1] if contract.channels == "BGR" else image
    if contract.scale == "0-255":
        x = x * 255.0
    if contract.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    x = np.ascontiguousarray(x)
    return x.round().clip(0, 255).astype(np.uint8) if contract.dtype == "uint8" else x.astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def _perm(ref: np.ndarray, got: np.ndarray) -> tuple[int, ...] | None:
    """The axis order that turns `got` into `ref`'s shape when it is the same tensor in another layout (TFLite returns
    NHWC); the identity first, then the order that keeps the most axes in place."""
    if got.shape == ref.shape:
        return tuple(range(got.ndim))
    if got.size != ref.size or got.ndim != ref.ndim:
        return None
    for perm in itertools.permutations(range(got.ndim)):
        if tuple(got.shape[i] for i in perm) == ref.shape:
            return perm
    return None


@dataclass(frozen=True)
class OutputMatch:
    """Which compiled output (and in which axis order) is the FP32 model's output at the same position."""

    index: int
    perm: tuple[int, ...]
    cosine: float

    def take(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(outputs[self.index]).transpose(self.perm)


def match_outputs(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> list[OutputMatch]:
    """Per reference tensor, the compiled output of the same size that agrees best with it (order- and layout-free)."""
    if len(outputs) != len(reference):
        raise ContractError(f"the compiled model returns {len(outputs)} output tensor(s), the FP32 model {len(reference)}:"
                            " the graphs do not end at the same place (export head?)")
    left, matches = list(range(len(outputs))), []
    for ref in reference:
        best = None
        for i in left:
            perm = _perm(ref, np.asarray(outputs[i]))
            if perm is not None:
                score = _cosine(ref, np.asarray(outputs[i]).transpose(perm))
                if best is None or score > best.cosine:
                    best = OutputMatch(i, perm, score)
        if best is None:
            raise ContractError(f"no compiled output matches the FP32 output of shape {list(ref.shape)}: "
                                f"got {[list(np.shape(o)) for o in outputs]}")
        matches.append(best)
        left.remove(best.index)
    return matches


def compare_outputs(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> list[float]:
    """Cosine similarity per reference tensor; each is matched to the compiled output of the same size (order-free)."""
    return [m.cosine for m in match_outputs(reference, outputs)]


def _run(runner: Runner, image: np.ndarray, contract: InputContract) -> list[np.ndarray] | None:
    try:
        return [np.asarray(o) for o in runner(prepare(image, contract))]
    except Exception:  # noqa: BLE001  (a runtime refusing a layout is itself an answer: not this one)
        return None


def _variants(declared: InputContract) -> list[tuple[str, InputContract]]:
    """The usual mistakes, each one change away from the declared contract."""
    flip = {"NCHW": "NHWC", "NHWC": "NCHW", "RGB": "BGR", "BGR": "RGB", "0-1": "0-255", "0-255": "0-1"}
    out = []
    for field in ("channels", "layout", "scale"):
        value = getattr(declared, field)
        out.append((f"{field} {flip[value]} (declared {value})", dataclasses.replace(declared, **{field: flip[value]})))
    return out


def check_contract(reference: Runner, compiled: Runner, declared: InputContract, *, compiled_imgsz: int | None = None,
                   image: np.ndarray | None = None, match: float = MATCH) -> ContractReport:
    """Golden image through both models; a mismatch is one ContractError naming the difference that explains it.

    `reference` takes npuyolo's NCHW RGB 0–1 float32 image (the FP32 ONNX model); `compiled` takes the image as
    `declared` says. `compiled_imgsz` is the input size the compiled model reports, when it reports one.
    """
    if compiled_imgsz is not None and compiled_imgsz != declared.imgsz:
        raise ContractError(f"input size: the compiled model takes {compiled_imgsz}x{compiled_imgsz}, the FP32 model "
                            f"{declared.imgsz}x{declared.imgsz}; compile at the size the model was exported at")
    image = golden_image(declared.imgsz) if image is None else image
    ref = [np.asarray(o) for o in reference(image)]
    got = _run(compiled, image, declared)
    if got is not None:
        matches = match_outputs(ref, got)
        scores = [m.cosine for m in matches]
        if not any(_signal(ref)):  # a barely trained model: outputs near-constant, INT8 rounds them to a step or 0
            return ContractReport(declared, scores, matches, _signal(ref))
        worst = _judged(ref, scores)
        if worst >= match:
            return ContractReport(declared, scores, matches, _signal(ref))
    else:
        worst = None
    for what, variant in _variants(declared):
        alt = _run(compiled, image, variant)
        if alt is not None and len(alt) == len(ref):
            try:
                if _judged(ref, compare_outputs(ref, alt)) >= match:
                    raise ContractError(f"input contract: the compiled model matches FP32 only with {what}; "
                                        f"declared {declared.describe()}")
            except ContractError as e:
                if str(e).startswith("input contract:"):
                    raise
    if got is None:
        raise ContractError(f"the compiled model refuses an input laid out as declared ({declared.describe()}) and no "
                            "usual variant (channels, layout, scale) runs and matches")
    raise ContractError(f"the compiled model's outputs differ from FP32 on the golden image (worst cosine {worst:.3f} < "
                        f"{match}); no single change of channels, layout or scale explains it: check mean/std and "
                        "quantization")
