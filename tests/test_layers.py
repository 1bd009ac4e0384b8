"""The layers of pyproject.toml's [tool.importlinter] hold (issue 23 point 2), and the check bites when one is broken."""

import os
import shutil
import subprocess
import sys

from .conftest import REPO


def lint(root, extra_env=None):
    env = {**os.environ, "PYTHONPATH": str(root / "src"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['lint-imports', '--no-cache']; from importlinter.cli import lint_imports_command; lint_imports_command()"],
                          cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_the_import_layers_are_kept():
    done = lint(REPO)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The npu layer importing the exporter (deploy) again, as npu/check.py once did: the check must fail."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    graph = copy / "src" / "npuyolo" / "npu" / "graph.py"
    graph.write_text(graph.read_text() + "\n\ndef _upward():\n    from npuyolo.deploy.export import export_onnx  # noqa\n")
    done = lint(copy)
    assert done.returncode != 0 and "npuyolo.npu.graph -> npuyolo.deploy.export" in done.stdout, done.stdout[-2000:]
