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


def test_no_module_of_deploy_is_over_500_lines():
    """Issue 32: deploy/ is split by stage into rooms (int8/, eval/, infer/, plan/, bundle/; ARCHITECTURE.md maps them)
    and no module of it is over 500 lines: one that grows past that is split by what it does."""
    root = REPO / "src" / "npuyolo" / "deploy"
    long = {str(p.relative_to(root)): n for p in sorted(root.rglob("*.py")) if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
    assert {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} >= {"int8", "eval", "infer", "plan", "bundle"}
