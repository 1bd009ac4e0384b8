"""The built wheel carries the package's data files: report templates, the Korean font and its licence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_holds_templates_font_and_licence(tmp_path):
    src = tmp_path / "src"  # build a copy: an in-tree build would leave build/ and egg-info in the checkout
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # offline: the build must need nothing from an index
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist")], cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("npuyolo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (REPO / "src/npuyolo/report/templates").glob("*.j2")}
    assert templates and {f"npuyolo/report/templates/{t}" for t in templates} <= names
    assert {"npuyolo/report/fonts/NpuyoloKR-Regular.ttf", "npuyolo/report/fonts/OFL.txt",
            "npuyolo/variants/levels.yaml", "npuyolo/train/default_recipe.yaml"} <= names
    bundle = {p.name for p in (REPO / "src/npuyolo/deploy/bundle/templates").iterdir() if p.is_file()}  # deploy bundle's runner, C
    assert {"npuyolo_infer.py.tmpl", "postprocess.c", "postprocess.h", "README.md.j2", "README-imx500.md.j2"} <= bundle
    assert {f"npuyolo/deploy/bundle/templates/{t}" for t in bundle} <= names
