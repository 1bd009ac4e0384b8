"""One base class for every failure a user can cause and fix; the CLI prints these as one line (exit 2).

Anything else is a bug in npuyolo or a library and keeps its traceback.
"""

from __future__ import annotations

import errno
import os

__all__ = ["USER_OS_ERRNOS", "CheckpointError", "NpuyoloError", "StorageError", "UnsafePathError", "storage_error"]

# OS errors a user fixes (space, permissions, read-only media, a name too long): one line, never a traceback
USER_OS_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG})
_REASONS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "name too long"}


class NpuyoloError(Exception):
    """Bad input, a missing file, an unknown name: something the user can fix, said in one line.

    `param`: the parameter the message is about, named in it as the Python API spells it (`max_parallel must be at
    least 1`); the CLI shows the same message with its flag instead (`--max-parallel must be at least 1`), so no layer
    below the CLI speaks in flags."""

    param: str | None = None

    def __init__(self, *args: object, param: str | None = None):
        super().__init__(*args)
        if param is not None:
            self.param = param


class UnsafePathError(NpuyoloError, ValueError):
    """A user-given name would put a file outside the folder it belongs in."""


class CheckpointError(NpuyoloError, ValueError):
    """A checkpoint that is corrupt, truncated, or holds code npuyolo refuses to run."""


class StorageError(NpuyoloError, OSError):
    """A write the file system refused (full disk, read-only folder, no permission): one line naming the place.

    Still an OSError (errno, strerror and filename kept), so code that handles OSError keeps working.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def storage_error(e: BaseException, path: str | os.PathLike | None = None, writing: bool = False) -> StorageError | None:
    """`e` as one line naming `path` (else the file the OS named) when it is an OS error a user fixes; else None.

    `writing`: the failed operation was a write of `path` (the line says so)."""
    if isinstance(e, StorageError):
        return e
    if not isinstance(e, OSError) or e.errno not in USER_OS_ERRNOS:
        return None
    where = path if path is not None else e.filename
    reason = _REASONS[e.errno]
    said = f"{'cannot write ' if writing else ''}{_shown(where)}: {reason}" if where is not None else reason
    err = StorageError(said)
    err.errno, err.strerror, err.filename = e.errno, e.strerror, e.filename
    return err


def _shown(path) -> str:
    """A temporary `.name.partial-PID` (see `npuyolo.paths.atomic_path`) is shown as the file it stands for."""
    text = os.fsdecode(path)
    head, _, tail = text.rpartition("/")
    if tail.startswith(".") and ".partial-" in tail:
        text = f"{head}/{tail[1:].rsplit('.partial-', 1)[0]}" if head else tail[1:].rsplit(".partial-", 1)[0]
    return text
