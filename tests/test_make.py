"""`make` works on a stock Debian/Ubuntu Python that refuses system-wide pip installs (PEP 668)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PICK = REPO / "scripts" / "pick_python.sh"


def externally_managed(python: str) -> bool:
    code = "import os, sys, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip() == "True"
    except OSError:
        return False


def pick(cwd: Path, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.run(["bash", str(PICK)], cwd=cwd, env={**base, **env}, capture_output=True, text=True, check=True).stdout.strip()


def test_a_pep668_system_python_gets_a_project_venv(tmp_path):
    system = "/usr/bin/python3"
    if not externally_managed(system):
        pytest.skip("this machine has no externally managed system Python to try")  # the project's machines do
    chosen = pick(tmp_path, PY=system)
    assert chosen == ".venv/bin/python" and (tmp_path / ".venv" / "bin" / "python").is_file()
    # the venv accepts pip installs (no PEP 668 marker applies inside it) and sees the system's packages
    out = subprocess.run([str(tmp_path / chosen), "-c", "import sys; print(sys.prefix != sys.base_prefix)"],
                         capture_output=True, text=True).stdout.strip()
    assert out == "True"
    assert pick(tmp_path, PY=system) == ".venv/bin/python"  # created once, reused


def test_an_active_venv_or_a_managed_python_is_used_as_it_is(tmp_path):
    if not externally_managed(sys.executable):
        assert pick(tmp_path, PY=sys.executable) == sys.executable and not (tmp_path / ".venv").exists()
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert pick(tmp_path, VIRTUAL_ENV=str(venv)) == f"{venv}/bin/python"
