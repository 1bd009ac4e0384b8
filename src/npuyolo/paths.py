"""Every path built from a user-given name goes through here: it cannot leave its root, and writes are atomic.

- `slug(name)` keeps a name readable (Unicode letters stay) but safe as one path component;
- `safe_join(root, *parts)` refuses anything that would resolve outside `root`;
- `claim_dir(parent, stem)` creates a folder no one else owns (exclusive mkdir, suffix on collision);
- `atomic_path(dst)` / `write_text` / `write_bytes`: write under a temporary name, `os.replace` on success,
  so a killed process never leaves a half-written artefact under the final name;
- `check_output_file(path, ...)`: the one rule for a user-named output *file* (never the registry, never a
  file npuyolo did not write or a symlink unless forced).
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from npuyolo.errors import NpuyoloError, UnsafePathError, storage_error

__all__ = ["DEFAULT_REGISTRY", "MAX_COMPONENT_BYTES", "FileReadError", "atomic_path", "check_output_file", "claim_dir", "default_registry_path", "file_problem", "make_dir", "out_of_space", "read_regular_file", "safe_join",
           "slug", "unique_slug", "write_bytes", "write_text"]

MAX_COMPONENT_BYTES = 96  # well under every file system's 255-byte limit, leaving room for suffixes


def slug(name: str, fallback: str = "run") -> str:
    """`name` as one path component: letters and digits of any script, '.', '-', '_'; anything else -> '_'.

    Leading and trailing dots and underscores are dropped (no hidden files, no '..'), and the result is cut to
    MAX_COMPONENT_BYTES of UTF-8.
    """
    name = unicodedata.normalize("NFC", str(name))
    out = "".join(c if (c.isalnum() or c in "._-") else "_" for c in name).strip("._")
    while len(out.encode("utf-8")) > MAX_COMPONENT_BYTES:
        out = out[:-1].rstrip("._")
    return out or fallback


def unique_slug(name: str, fallback: str = "run") -> str:
    """`slug(name)`, plus a short hash of the exact name when slugging changed it: 'a/b' and 'a_b' stay apart."""
    import hashlib

    s = slug(name, fallback)
    if s == unicodedata.normalize("NFC", str(name)):
        return s
    return f"{s[:MAX_COMPONENT_BYTES - 8]}-{hashlib.sha1(str(name).encode('utf-8')).hexdigest()[:6]}"


def safe_join(root: str | Path, *parts: str | Path) -> Path:
    """`root / parts...`, refused if the result (links resolved) is not inside `root`."""
    base = Path(root).resolve()
    path = base.joinpath(*(str(p) for p in parts)).resolve()
    if path != base and base not in path.parents:
        raise UnsafePathError(f"{'/'.join(str(p) for p in parts)!r} would write outside {base}")
    return path


def claim_dir(parent: str | Path, stem: str) -> Path:
    """A new folder `parent/stem` (or `stem-2`, `stem-3`...) created by this call alone: never shared, never reused."""
    parent = Path(parent)
    make_dir(parent)
    for i in range(1, 10_000):
        candidate = safe_join(parent, stem if i == 1 else f"{stem}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise (storage_error(e, candidate, writing=True) or e) from None
    raise UnsafePathError(f"no free folder name for {stem!r} in {parent}")


LOW_SPACE_BYTES = 1 << 20  # under this, a failed write is taken for a full disk


def out_of_space(path: str | Path) -> bool:
    """Whether the file system holding `path` (or its nearest existing parent) is full: for errors that do not
    say so themselves (SQLite's "disk I/O error", OpenCV's False)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks too
    return free * st.f_frsize < LOW_SPACE_BYTES


def file_problem(path: str | Path, empty_ok: bool = True) -> str | None:
    """Why `path` is not a regular file to read, as words after its name ('not found', 'is a folder, not a file', 'is a
    symlink loop', 'is not a regular file (...)', 'is empty (0 bytes)'), or None when it is one.

    A FIFO or a device would block or never end when read; a folder named like a file is not "missing".
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop"
        if e.errno == errno.ENOENT:
            return "is a symbolic link to a missing file" if p.is_symlink() else "not found"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device); only regular files are read"
    if not empty_ok and st.st_size == 0:
        return "is empty (0 bytes)"
    return None


class FileReadError(NpuyoloError, ValueError):
    """A file to read that is not a regular file (a FIFO, a device, a folder), cannot be opened, or is too large."""


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of `path`, read only when it is a regular file of at most `max_bytes` (links followed, then checked
    again on the open file, so a FIFO or a device swapped in never blocks or reads for ever); else `FileReadError`."""
    problem = file_problem(path)
    if problem is not None:
        raise FileReadError(f"{path} {problem}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileReadError(f"{path} cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileReadError(f"{path} is not a regular file (a FIFO, socket or device); only regular files are read")
        if st.st_size > max_bytes:
            raise FileReadError(f"{path} is larger than {max_bytes} bytes")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)  # it may have grown since
    except OSError as e:
        raise FileReadError(f"{path} cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise FileReadError(f"{path} is larger than {max_bytes} bytes")
    return data


def make_dir(path: str | Path) -> Path:
    """`mkdir -p path`; a full disk, read-only or forbidden place is one `StorageError` line naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (storage_error(e, path, writing=True) or e) from None
    return path


@contextmanager
def atomic_path(dst: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `dst`; on success it replaces `dst` in one step, on failure it is removed.

    A full disk or a read-only folder is one `StorageError` naming `dst`; the cleanup never replaces the first error
    (on a read-only file system even unlinking a missing file fails).
    """
    dst = Path(dst)
    make_dir(dst.parent)
    _remove_stale_partials(dst)
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        mapped = storage_error(e, dst, writing=True)
        if mapped is not None and mapped is not e:
            raise mapped from None
        raise


def _remove_stale_partials(dst: Path) -> None:
    """Temporary files of writers that were killed (their pid is gone) are garbage: remove them (when one can)."""
    for stale in dst.parent.glob(f".{dst.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            with suppress(OSError):
                stale.unlink(missing_ok=True)


def write_text(dst: str | Path, text: str) -> Path:
    with atomic_path(dst) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dst)


def write_bytes(dst: str | Path, data: bytes) -> Path:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
    return Path(dst)


def check_output_file(path: str | Path, *, registry_path: str | Path | None = None, force: bool = False,
                      ours: Callable[[Path], bool] | None = None, label: str = "output",
                      error: type[Exception] = UnsafePathError) -> Path:
    """`path` as a file npuyolo may write (then through `atomic_path`), its folder created; else one-line `error`.

    `label`: how the message names the path, a parameter's name (`out`) or "output".

    Always refused: a folder (or a name ending in '/'), anything that is not a regular file (a FIFO, a device),
    the registry (`registry_path`, and the default one) with its journal files, a folder that cannot be created or
    written. Refused unless `force`: a symlink (forced, the link itself is replaced, never its target, because
    the write renames over it) and an existing file that `ours(path)` does not recognise as npuyolo's own.
    Why: an output name is one typo away from the registry or a user's file, and a rename cannot be undone.
    """
    text = str(path)
    path = Path(path)
    hint = "; choose another name, or `force` to overwrite it"
    param = None if label == "output" else label  # a parameter's name: the CLI shows its flag
    if text.endswith(("/", "\\")) or path.is_dir():
        raise error(f"{label} {text} is a folder; name the file to write", param=param)
    if _is_registry(path, registry_path):
        raise error(f"{label} {text} is the npuyolo registry; every run's record is in it", param=param)
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):  # new, or under a file: the folder check below says which
        st = None
    except OSError as e:
        raise error(f"{label} {text}: cannot use this path ({e.strerror or e})", param=param) from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        if not force:
            raise error(f"{label} {text} is a symbolic link{hint}", param=param)
    elif st is not None and not stat.S_ISREG(st.st_mode):
        raise error(f"{label} {text} is not a regular file; name a file to write", param=param)
    elif st is not None and not force and not (ours is not None and ours(path)):
        raise error(f"{label} {text} already exists and npuyolo did not write it{hint}", param=param)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{label} {text}: cannot create {path.parent} ({e.strerror or e})", param=param) from None
    if not os.access(path.parent, os.W_OK):
        raise error(f"{label} {text}: {path.parent} is not writable", param=param)
    return path


DEFAULT_REGISTRY = Path("runs") / "npuyolo.db"


def default_registry_path() -> Path:
    """The registry a command uses when none is named: $NPUYOLO_REGISTRY, else runs/npuyolo.db."""
    return Path(os.environ.get("NPUYOLO_REGISTRY") or DEFAULT_REGISTRY)


def _is_registry(path: Path, registry_path: str | Path | None) -> bool:
    """`path` names the registry this command uses or the default one, or one of their SQLite journal files."""
    default_path = default_registry_path

    def canonical(p: Path) -> Path:  # the folder resolved, the last component as written (a link is not followed)
        try:
            return p.parent.resolve() / p.name
        except (OSError, RuntimeError):
            return p.absolute()

    target = canonical(path)
    for db in {Path(registry_path), default_path()} if registry_path else {default_path()}:
        for name in (db.name, f"{db.name}-journal", f"{db.name}-wal", f"{db.name}-shm"):
            candidate = db.with_name(name)
            if canonical(candidate) == target:
                return True
            try:
                if candidate.exists() and path.exists() and os.path.samefile(candidate, path):
                    return True  # a hard or symbolic link to it
            except OSError:
                continue
    return False


def sha256_file(path: str | Path) -> str:
    """A file's sha256 (hex), read in 1 MiB chunks: what names a model's content (caches, plan folders, manifests)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
