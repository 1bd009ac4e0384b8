"""Seams of a signature (issue 32, item 5): wherever a function takes the registry, it takes it first.

Below the CLI a parameter named `registry` is the registry (a `Registry`, or what opens one: its path, None for the
default); a path that only names the file not to overwrite is `registry_path`. The CLI's commands are left out: there
`registry` is the `--registry` flag, whose place among the parameters orders `--help`, and each command hands it on
to its service as the first argument."""

from __future__ import annotations

import ast
from pathlib import Path

import npuyolo

SRC = Path(npuyolo.__file__).resolve().parent


def functions(tree: ast.AST):
    return (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def misplaced(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every function with a `registry` parameter that is not its first (after self/cls)."""
    found = []
    for fn in functions(tree):
        a = fn.args
        positional = [p.arg for p in a.posonlyargs + a.args]
        if "registry" not in positional + [p.arg for p in a.kwonlyargs]:
            continue
        own = positional[1:] if positional[:1] in (["self"], ["cls"]) else positional
        if own[:1] != ["registry"]:
            found.append((fn.lineno, fn.name))
    return found


def test_registry_is_the_first_parameter_wherever_one_is_taken():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):
            continue
        found += [f"{rel}:{line}: {name}" for line, name in misplaced(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, "functions that take the registry elsewhere than first:\n" + "\n".join(found)


def test_the_scan_sees_a_misplaced_registry():
    tree = ast.parse("def a(registry, ref): ...\n"
                     "def b(ref, registry=None): ...\n"
                     "def c(ref, *, registry): ...\n"
                     "class K:\n"
                     "    def run(self, registry, jobs): ...\n"
                     "    def go(self, jobs, registry): ...\n"
                     "def d(ref, registry_path=None): ...\n")
    assert [name for _, name in misplaced(tree)] == ["b", "c", "go"]


def test_the_two_plan_commands_take_the_one_plan_options():
    """`deploy plan` and `series plan` state none of PlanOptions' fields: `with_options` makes them flags from the class
    (the same flags, defaults and help as every other command's, `tests/test_options.py`), handed over as one object."""
    from npuyolo.services.options import PlanOptions, fields_of

    fields = {f.name for f in fields_of(PlanOptions)}
    for rel, name in (("cli/deploy.py", "deploy_plan"), ("cli/training.py", "series_plan")):
        (fn,) = [f for f in functions(ast.parse((SRC / rel).read_text(encoding="utf-8"))) if f.name == name]
        params = {p.arg for p in fn.args.args + fn.args.kwonlyargs}
        assert "options" in params and not params & fields, (rel, sorted(params & fields))
        assert any(isinstance(d, ast.Call) and getattr(d.func, "id", None) == "with_options" for d in fn.decorator_list)
