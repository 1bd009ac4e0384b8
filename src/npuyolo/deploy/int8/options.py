"""`QuantizeOptions`: every option of a quantization with its default, stated once.

The CLI, the API and the services read their defaults (and refuse unknown names) here; `quantize_onnx` takes one of
these, or its fields as keywords. Nothing heavy is imported, so a front door can read the defaults at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from npuyolo.deploy.errors import DeployError

METHOD_NAMES = ("minmax", "entropy", "percentile")  # the calibrations `method` names (ORT's calibrators)
ENDS = {"int16": "int16", "float": "float16"}  # `ends` value -> the profile dtype a target must list to allow it


@dataclass(frozen=True)
class QuantizeOptions:
    """How an FP32 graph becomes INT8 QDQ (`quantize_onnx`)."""

    calib: int = 200  # calibration images, from the data set's train split only
    method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = False  # per-channel weight scales
    keep_float: tuple[str, ...] | None = None  # nodes kept float, by name
    auto_float: int = 0  # the Conv nodes whose INT8 outputs drift most from float, kept float
    seed: int = 0  # which calibration and held-back images are drawn
    cle: bool = False  # cross-layer equalization first
    percentile: float | None = None  # percentile only: the share of values the range keeps, e.g. 99.999
    bias_correct: bool = False  # correct each quantized Conv's bias for its weights' rounding
    ends: str | None = None  # int16 | float: the first and output Convs wider than INT8
    sweep: bool = False  # try every calibration of the sweep, keep the best on held-back train images
    holdout: int = 50  # held-back train images the sweep scores on

    def __post_init__(self):
        if self.keep_float is not None and not isinstance(self.keep_float, tuple):
            object.__setattr__(self, "keep_float", tuple(self.keep_float))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, options: QuantizeOptions | None = None, /, **given) -> QuantizeOptions:
        """`options` (the defaults when None) with `given` fields replaced; an unknown name is one line."""
        unknown = [k for k in given if k not in cls.names()]
        if unknown:
            raise DeployError(f"unknown quantize option {unknown[0]!r}; the options are {', '.join(cls.names())}",
                              param=unknown[0])
        if options is not None and not isinstance(options, QuantizeOptions):
            raise DeployError(f"options must be QuantizeOptions, got {type(options).__name__}", param="options")
        base = options if options is not None else cls()
        return replace(base, **given) if given else base

    def check(self) -> None:
        """The values no quantization can take, each one line naming its parameter (before any file is read)."""
        if self.method not in METHOD_NAMES:
            raise DeployError(f"method must be one of {', '.join(METHOD_NAMES)}", param="method")
        if self.percentile is not None and not (50.0 < self.percentile <= 100.0):
            raise DeployError(f"percentile must be in (50, 100], got {self.percentile:g}", param="percentile")
        if self.ends is not None and self.ends not in ENDS:
            raise DeployError(f"ends must be one of {', '.join(ENDS)}, got {self.ends!r}", param="ends")
        if self.auto_float < 0:
            raise DeployError(f"auto_float must be 0 or more Conv nodes, got {self.auto_float}", param="auto_float")
        if self.sweep and self.holdout < 1:
            raise DeployError(f"holdout must be at least 1 training image, got {self.holdout}", param="holdout")
