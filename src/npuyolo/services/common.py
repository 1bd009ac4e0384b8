"""What every service shares: the registry a door hands over, and the checks of arguments every door takes alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from npuyolo.errors import NpuyoloError

__all__ = ["path_arg", "ref_arg", "registry_of", "targets_arg"]


def registry_of(registry: Any, readonly: bool = False):
    """An open registry: the `Registry` given, or the file named (None: NPUYOLO_REGISTRY or runs/npuyolo.db), opened
    only when the service needs it, after its arguments were checked (so a refused call creates no registry file)."""
    from npuyolo.registry.db import Registry  # pydantic: not for `npuyolo --help`

    if isinstance(registry, Registry):
        return registry
    return Registry(registry, readonly=readonly)


def registry_path(registry: Any) -> Path | None:
    """The registry's file, for a stage that opens it itself (only when the model is a run)."""
    path = getattr(registry, "path", registry)
    return None if path is None else Path(path)


def targets_arg(value: Any, what: str = "targets") -> list[str]:
    """A list (or tuple) of target names; a bare str would be read letter by letter ('rknn-rk3588' as 'r', 'k', ...)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value or not all(isinstance(t, str) for t in value):
        raise NpuyoloError(f"{what} must be a list of target names, got {value!r}"[:200], param=what)
    return list(value)


def path_arg(value: Any, what: str, optional: bool = False) -> Path | None:
    """A path argument: str or os.PathLike (None only where optional); bytes, None or a number is the caller's mistake."""
    if value is None and optional:
        return None
    if isinstance(value, str) or (isinstance(value, os.PathLike) and isinstance(os.fspath(value), str)):
        if not str(value).strip():
            raise NpuyoloError(f"{what} must not be empty", param=what)
        return Path(value)
    raise NpuyoloError(f"{what} must be a path (str or pathlib.Path), got {type(value).__name__}", param=what)


def ref_arg(value: Any, what: str, optional: bool = False) -> str | None:
    """A run, model or name argument: a non-empty str, an int id, or (for files) a pathlib.Path."""
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) or (isinstance(value, os.PathLike) and isinstance(os.fspath(value), str)):
        if not str(value).strip():
            raise NpuyoloError(f"{what} must not be empty", param=what)
        return str(value)
    raise NpuyoloError(f"{what} must be a str (a name or path) or an int id, got {type(value).__name__}", param=what)
