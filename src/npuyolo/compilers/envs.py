"""Vendor NPU compilers in their own virtual environments, created only by `npuyolo compilers install NAME`.

RKNN-Toolkit2 pins an old torch/onnx/numpy and Vela's TFLite route needs TensorFlow: neither can share the
project's environment. Each compiler gets `<root>/<name>/venv-<time>` (root: $NPUYOLO_COMPILERS_DIR, else
~/.cache/npuyolo/compilers) and a `manifest.json` written last, atomically: a folder without a manifest is an
unfinished install and counts as not installed. Nothing here installs anything unless the user asked for it.
What each compiler installs is its `CompilerSpec` in `compilers/registry.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from npuyolo.errors import NpuyoloError
from npuyolo.paths import safe_join, write_text

__all__ = ["CompilerEnv", "CompilerError", "CompilerMissingError", "Installable", "compilers_root", "folder", "install",
           "installed", "require"]


class CompilerError(NpuyoloError):
    """A compiler install or run that failed in a way the user can act on (log file named)."""


class CompilerMissingError(CompilerError):
    """The compiler's environment is not installed: the message names the install command."""


class Installable(Protocol):
    """What `install` reads of a compiler's spec (`registry.CompilerSpec`)."""

    name: str
    distribution: str  # the PyPI distribution whose version is the compiler's version
    steps: tuple[tuple[str, ...], ...]  # pip install argument lists, run in order inside the venv
    check: str  # a Python statement that must succeed inside the venv once installed


@dataclass
class CompilerEnv:
    """An installed compiler: what `compilers list` shows and what a compile run records."""

    name: str
    version: str
    python: str
    venv: str
    installed_at: str
    pins: list[list[str]]

    @property
    def bin(self) -> Path:
        return Path(self.python).parent


def compilers_root() -> Path:
    root = os.environ.get("NPUYOLO_COMPILERS_DIR")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "npuyolo" / "compilers"
    if path.exists() and not path.is_dir():
        raise CompilerError(f"the compilers folder {path} is a file; NPUYOLO_COMPILERS_DIR must name a folder")
    return path


def folder(name: str) -> Path:
    """`<root>/<name>`: the compiler's own folder (a name that would lead out of the root is refused)."""
    root = compilers_root()
    safe_join(root, name)
    return root / name


def _manifest(name: str) -> CompilerEnv | None:
    try:
        env = CompilerEnv(**json.loads((folder(name) / "manifest.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return env if all(isinstance(v, str) for v in (env.name, env.version, env.python, env.venv)) else None


def untrusted(folder: Path, env: CompilerEnv) -> str | None:
    """Why a manifest's interpreter is not one `install` made, or None when it is.

    npuyolo runs only `<folder>/venv-*/bin/python` (and that bin folder's tools): the venv a real folder directly
    inside the compiler's folder, symlinks resolved. A manifest naming anything else was edited or forged, and
    running it would run whatever it names.
    """
    try:
        venv, home = Path(env.venv).resolve(), folder.resolve()
        bin_dir = Path(env.python).parent.resolve()
    except (OSError, RuntimeError, ValueError):
        return f"its paths cannot be resolved ({env.venv!r})"
    if venv.parent != home or not venv.name.startswith("venv") or not venv.is_dir():
        return f"its environment {env.venv} is not a folder npuyolo made in {home}"
    if bin_dir != venv / "bin" or Path(env.python).name not in ("python", "python3"):
        return f"its interpreter {env.python} is not the one in {venv / 'bin'}"
    return None


def installed(name: str) -> CompilerEnv | None:
    """The manifest of an installed compiler whose interpreter is still there, inside its own venv; else None."""
    env = _manifest(name)
    if env is None or untrusted(folder(name), env) is not None:
        return None
    return env if Path(env.python).is_file() else None


def require(name: str) -> CompilerEnv:
    env = installed(name)
    if env is None:
        forged = _manifest(name)
        why = untrusted(folder(name), forged) if forged is not None else None
        if why is not None:
            raise CompilerError(f"not running the {name} compiler: {folder(name) / 'manifest.json'} is not npuyolo's "
                                f"({why}); reinstall with `npuyolo compilers install {name} --force`")
        raise CompilerMissingError(f"the {name} compiler is not installed (looked in {folder(name)}); "
                                   f"install it with `npuyolo compilers install {name}`")
    return env


def clean_env() -> dict[str, str]:
    """The caller's environment without Python path variables: a compiler venv sees only its own packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=clean_env())
    if done.returncode != 0:
        raise CompilerError(f"`{' '.join(cmd[:4])} ...` failed (exit {done.returncode}); see {log}")


MARKER = ".npuyolo-compiler"  # written first into every folder npuyolo creates here: only such folders are ever deleted from


def install(s: Installable, force: bool = False, python: str | None = None) -> CompilerEnv:
    """Create a venv under `<root>/<name>/`, pip-install the pinned packages, verify the import, write the manifest last.

    An existing install is kept unless `force`; with `force` the old venv stays in use until the new one works. A
    folder npuyolo did not create (no marker) is never touched. Leftovers of killed installs are removed. pip
    output goes to `<root>/<name>/install.log`.
    """
    name = s.name
    home = folder(name)
    current = installed(name)
    if current is not None and not force:
        return current
    if home.exists() and not (home / MARKER).is_file() and any(home.iterdir()):
        raise CompilerError(f"{home} exists and was not made by npuyolo; move it away or set NPUYOLO_COMPILERS_DIR "
                            "to another folder")
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("made by `npuyolo compilers install`; its venvs may be replaced\n", encoding="utf-8")
    keep = Path(current.venv).name if current is not None else None
    for entry in home.iterdir():  # leftovers of killed installs (never the venv in use)
        if entry.name.startswith("venv") and entry.name != keep and entry.is_dir():
            shutil.rmtree(entry)
    log = home / "install.log"
    venv = home / f"venv-{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S%f')}"
    try:
        _run([python or sys.executable, "-m", "venv", str(venv)], log)
        py = venv / "bin" / "python"
        for step in s.steps:
            _run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *step], log)
        _run([str(py), "-c", s.check], log)
        version = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({s.distribution!r}))"],
                                 capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)  # the install in use (if any) is untouched
        raise
    env = CompilerEnv(name=name, version=version, python=str(py), venv=str(venv),
                      installed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), pins=[list(x) for x in s.steps])
    write_text(home / "manifest.json", json.dumps(asdict(env), indent=2))  # the switch to the new venv
    if keep is not None and (home / keep).is_dir():
        shutil.rmtree(home / keep)
    return env
