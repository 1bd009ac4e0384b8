"""One base class for every failure a user can cause and fix; the CLI prints these as one line (exit 2).

Anything else is a bug in npuyolo or a library and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "NpuyoloError", "UnsafePathError"]


class NpuyoloError(Exception):
    """Bad input, a missing file, an unknown name: something the user can fix, said in one line."""


class UnsafePathError(NpuyoloError, ValueError):
    """A user-given name would put a file outside the folder it belongs in."""


class CheckpointError(NpuyoloError, ValueError):
    """A checkpoint that is corrupt, truncated, or holds code npuyolo refuses to run."""
