"""`DeployError`, in a module of its own: the options a front door reads at start-up (`int8/options.py`) refuse a
value with it without loading ONNX Runtime."""

from __future__ import annotations

from npuyolo.errors import NpuyoloError


class DeployError(NpuyoloError, ValueError):
    """An artefact or data set the deploy tools cannot use."""
