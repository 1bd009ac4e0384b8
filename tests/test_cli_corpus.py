"""The CLI's bad-input corpus: each case is a command line that must end in one `error:` line (exit 2, no traceback)
saying what is wrong. The cases come from the hostile-input rounds (the former test_hostile*.py); each failed before its
fix. A case that needs more than a command line and a few files (a damaged registry, a full disk, a forged manifest)
lives with the tests of its room instead.

Placeholders in a case's command: {tmp} (the test's folder), {data} (the synthetic data.yaml), {images} (its validation
images), {onnx} (an exported L4-relu, 6 classes, 64 px), {pt} (an L4-relu checkpoint); and odd files made on demand:
{afile} (a plain file), {folder_onnx} (a folder named x.onnx), {empty_onnx} (a 0-byte .onnx), {fifo} (a FIFO named
like an image), {loop} (a symbolic link to itself).
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from npuyolo.registry.db import Registry

from .helpers import cli, new_run, one_line_error, save_pt


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    expect: str  # a fragment of the error line
    registry: str | None = None  # None: the test's default (none exists); "new": {tmp}/r.db, not made; "run a": one run named "a"
    files: dict[str, str] = field(default_factory=dict)  # written under {tmp} first
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    forbid: tuple[str, ...] = ()  # fragments the output must not contain


NOT_MAPPINGS = {"list": "- a\n- b\n", "text": "just text\n", "number": "5\n", "unclosed": "a: [1, 2\n"}
ODD_ONNX_COMMANDS = {
    "deploy bench": ["deploy", "bench", "{f}"],
    "deploy eval": ["deploy", "eval", "{f}", "--data", "{data}"],
    "predict": ["predict", "{f}", "{images}"],
    "npu check": ["npu", "check", "{f}", "-t", "relu-only"],
}

CASES = [
    # options out of range, outputs that cannot be written
    Case("export --nc 0", ["export", "L4-relu", "--nc", "0", "--imgsz", "64", "--out", "{tmp}/x.onnx"], "--nc must be at least 1"),
    Case("variants show --nc 0", ["variants", "show", "L4-relu", "--nc", "0"], "--nc must be at least 1"),
    Case("export --out a folder", ["export", "L4-relu", "--imgsz", "64", "--out", "{tmp}"], "is a folder"),
    Case("export --out ending in /", ["export", "L4-relu", "--imgsz", "64", "--out", "{tmp}/nodir/"], "is a folder"),
    Case("export --out /proc", ["export", "L4-relu", "--imgsz", "64", "--out", "/proc/x.onnx"], "--out /proc/x.onnx"),
    Case("data synth --imgsz 0", ["data", "synth", "{tmp}/d", "--imgsz", "0"], "--imgsz must be at least 32"),
    Case("data synth --seed -5", ["data", "synth", "{tmp}/d", "--seed", "-5"], "--seed must be 0 or more"),
    Case("data synth into a file", ["data", "synth", "{afile}"], "is a file"),
    Case("variants show --imgsz 0", ["variants", "show", "L4-relu", "--imgsz", "0"], "multiple of 32"),
    *[Case(f"export --imgsz {size}", ["export", "L4-relu", "--imgsz", size, "--out", "{tmp}/m.onnx"], "multiple of 32",
           absent=("{tmp}/m.onnx",)) for size in ("0", "-32", "50")],
    Case("deploy quantize --imgsz 50", ["deploy", "quantize", "1", "--data", "{data}", "--imgsz", "50"], "multiple of 32",
         registry="new"),
    *[Case(f"deploy bench --threads {n}", ["deploy", "bench", "{onnx}", "--threads", n, "--runs", "1"], "--threads must be 1..")
      for n in ("-5", "0", "100000")],  # -5 was accepted; 100000 threads hung the machine
    # variant names
    Case("variant: a part set twice", ["variants", "show", "L4-hybrid:backbone=relu,backbone=leaky"], "twice"),
    Case("variant: a slope past 1", ["variants", "show", "L4-leaky1.5"], "slope"),
    # recipe and series files that are not mappings
    *[Case(f"train --recipe {name}", ["train", "--variant", "L4-relu", "--data", "{data}", "--recipe", "{tmp}/recipe.yaml"],
           "recipe.yaml", registry="new", files={"recipe.yaml": text}) for name, text in NOT_MAPPINGS.items()],
    *[Case(f"series run {name}", ["series", "run", "{tmp}/series.yaml"], "series.yaml", registry="new",
           files={"series.yaml": text}) for name, text in NOT_MAPPINGS.items()],
    # run references that are no run: odd digits, ids past SQLite's integers
    *[Case(f"runs show {ref}", ["runs", "show", ref], "no run", registry="run a")
      for ref in ("²", "#²", "99999999999999999999999", "#99999999999999999999999", "9223372036854775808")],
    # a folder or an empty file given as a model: was 'not found' and 'no npuyolo metadata'
    *[Case(f"{command}: {key}", [a.replace("{f}", "{" + key + "}") for a in argv], said, registry="new")
      for command, argv in ODD_ONNX_COMMANDS.items()
      for key, said in (("folder_onnx", "is a folder"), ("empty_onnx", "is empty (0 bytes)"))],
    # a FIFO, a symlink loop or a device as a source: was 'not found'
    *[Case(f"predict from {what}", ["predict", "{pt}", source, "--out", "{tmp}/o"], said, forbid=("not found",))
      for what, source, said in (("a fifo", "{fifo}", "not a regular file"), ("a symlink loop", "{loop}", "symlink loop"),
                                 ("a device", "/dev/zero", "not a regular file"))],
]

assert len({c.id for c in CASES}) == len(CASES), "two cases share a name"


def _folder_onnx(tmp: Path) -> Path:
    (tmp / "x.onnx").mkdir()
    return tmp / "x.onnx"


def _empty_onnx(tmp: Path) -> Path:
    (tmp / "empty.onnx").write_bytes(b"")
    return tmp / "empty.onnx"


def _afile(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo.jpg")
    return tmp / "fifo.jpg"


def _loop(tmp: Path) -> Path:
    (tmp / "loop.jpg").symlink_to(tmp / "loop.jpg")
    return tmp / "loop.jpg"


ODD_FILES = {"afile": _afile, "folder_onnx": _folder_onnx, "empty_onnx": _empty_onnx, "fifo": _fifo, "loop": _loop}


@pytest.fixture(scope="module")
def corpus_onnx(tmp_path_factory) -> Path:
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    return export_onnx(build_model("L4-relu", nc=6, verbose=False), tmp_path_factory.mktemp("corpus") / "m.onnx", imgsz=64)


@pytest.fixture(scope="module")
def corpus_pt(tmp_path_factory) -> Path:
    return save_pt(tmp_path_factory.mktemp("corpus") / "m.pt")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_cli_input_is_one_line_error(case: Case, tmp_path, synth_data, request):
    wanted = {name for a in case.argv for _, name, _, _ in string.Formatter().parse(a) if name}
    values = {"tmp": tmp_path, "data": synth_data, "images": synth_data.parent / "images" / "val"}
    if "onnx" in wanted:
        values["onnx"] = request.getfixturevalue("corpus_onnx")
    if "pt" in wanted:
        values["pt"] = request.getfixturevalue("corpus_pt")
    for name in wanted & set(ODD_FILES):
        values[name] = ODD_FILES[name](tmp_path)
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    registry = None
    if case.registry is not None:
        registry = tmp_path / "r.db"
        if case.registry == "run a":
            new_run(Registry(registry), name="a")
    out = one_line_error(cli(*(a.format(**values) for a in case.argv), registry=registry))
    assert case.expect in out, out
    for fragment in case.forbid:
        assert fragment not in out, out
    for path in case.absent:
        assert not Path(path.format(**values)).exists()
