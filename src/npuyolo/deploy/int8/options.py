"""`QuantizeOptions`: every option of a quantization with its default, stated once.

The CLI, the API and the services read their defaults (and refuse unknown names) here; `quantize_onnx` takes one of
these, or its fields as keywords. It is an `npuyolo.options.Options` (not a dataclass, whose generated methods cost
`npuyolo --help` about 1.5 ms) and imports nothing heavy, so a front door can read the defaults at start-up.
"""

from __future__ import annotations

from typing import Any

from npuyolo.deploy.errors import DeployError
from npuyolo.options import Options, check_types, opt

METHOD_NAMES = ("minmax", "entropy", "percentile")  # the calibrations `method` names (ORT's calibrators)
ENDS = {"int16": "int16", "float": "float16"}  # `ends` value -> the profile dtype a target must list to allow it


class QuantizeOptions(Options):
    """How an FP32 graph becomes INT8 QDQ (`quantize_onnx`). Frozen and hashable (a plan's settings key on it); the
    help of each flag is the command's own (`cli.deploy`)."""

    operation = "quantize"
    error = DeployError
    calib: int = opt(200, "")  # calibration images, from the data set's train split only
    method: str = opt("minmax", "")  # minmax | entropy | percentile
    per_channel: bool = opt(False, "")  # per-channel weight scales
    keep_float: tuple[str, ...] | None = opt(None, "")  # nodes kept float, by name
    auto_float: int = opt(0, "")  # the Conv nodes whose INT8 outputs drift most from float, kept float
    seed: int = opt(0, "")  # which calibration and held-back images are drawn
    cle: bool = opt(False, "")  # cross-layer equalization first
    percentile: float | None = opt(None, "")  # percentile only: the share of values the range keeps, e.g. 99.999
    bias_correct: bool = opt(False, "")  # correct each quantized Conv's bias for its weights' rounding
    ends: str | None = opt(None, "")  # int16 | float: the first and output Convs wider than INT8
    sweep: bool = opt(False, "")  # try every calibration of the sweep, keep the best on held-back train images
    holdout: int = opt(50, "")  # held-back train images the sweep scores on

    def __init__(self, **values: Any) -> None:
        unknown = [k for k in values if k not in self._fields]
        if unknown:
            raise DeployError(f"unknown quantize option {unknown[0]!r}; the options are {', '.join(self._fields)}",
                              param=unknown[0])
        super().__init__(**values)

    def __post_init__(self) -> None:
        check_types(self)
        if self.keep_float is not None and not isinstance(self.keep_float, tuple):
            object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().items()))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(cls._fields)

    @classmethod
    def of(cls, options: QuantizeOptions | None = None, /, **given: Any) -> QuantizeOptions:
        """`options` (the defaults when None) with `given` fields replaced; an unknown name is one line."""
        if options is not None and not isinstance(options, QuantizeOptions):
            raise DeployError(f"options must be QuantizeOptions, got {type(options).__name__}", param="options")
        base = options.as_dict() if options is not None else {}
        return cls(**{**base, **given}) if given or options is None else options

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
