"""Helpers shared by the rooms' tests of hostile and careless input (the former test_hostile*.py rounds): a CLI
invocation, the one-line-error check, runs and checkpoints built without training, a simulated read-only or full disk;
and the executors' tests' series file and registry content.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.registry.db import Registry
from npuyolo.train.recipe import Recipe

RUN_ARGS = dict(variant="L4-relu", recipe=Recipe.load(epochs=2, imgsz=64, batch=8, workers=0).model_dump(),
                data_path="/data/d.yaml", data_hash="h", class_names=["stop", "yield"], weights_source=None, device="cpu",
                versions={})


def cli(*args, registry: Path | None = None):
    env = {"NPUYOLO_REGISTRY": str(registry)} if registry else {}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.output
    return result.output


def new_run(reg: Registry, **kw) -> int:
    return reg.create_run(**{**RUN_ARGS, "name": None, **kw})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ checkpoints
def save_ultralytics_checkpoint(path: Path, epoch: int = 0, nc: int = 2) -> Path:
    """A checkpoint shaped like Ultralytics' (EMA model, epoch, args), from an untrained variant."""
    import torch

    from npuyolo.variants.build import build_model

    model = build_model("L4-relu", nc=nc, names=["stop", "yield"], verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "best_fitness": 0.1, "model": None, "ema": model.half(), "updates": 1,
                "optimizer": None, "train_args": {"imgsz": 64}}, path)
    return path


def save_pt(path: Path, imgsz: int = 96) -> Path:
    """A six-class L4-relu checkpoint with noisy weights (so that it detects something), saved at `imgsz`."""
    import torch

    from npuyolo.variants.build import build_model

    from .conftest import perturbed

    model = perturbed(build_model("L4-relu", nc=6, names=[f"c{i}" for i in range(6)]), scale=0.1, class_bias=-3.0)
    torch.save({"epoch": -1, "model": None, "ema": model, "train_args": {"imgsz": imgsz}}, path)
    return path


class Payload:
    """Pickles to os.system(<touch marker>): what a hostile checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def finished_run(db: Path, name: str = "base", data: Path | None = None) -> tuple[Registry, int]:
    """A finished run with best weights (an untrained L4-relu) and one recorded epoch, as a 1-epoch train leaves it."""
    reg = Registry(db)
    rid = new_run(reg, name=name, **({"data_path": str(data)} if data else {}))
    best = save_ultralytics_checkpoint(Path(reg.get_run(rid).save_dir) / "weights" / "best.pt")
    reg.add_artifact(rid, "weights/best", best)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
    reg.set_status(rid, "finished")
    return reg, rid


# ------------------------------------------------------------------------------------------------ files
def leaky_onnx(path: Path, meta: dict[str, str] | None = None) -> Path:
    """A one-node LeakyRelu graph with a static shape: what `npu rewrite` takes, written in milliseconds."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1, name="n")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def data_yaml_with(tmp_path: Path, synth_data: Path, **changes) -> Path:
    """The synthetic set's data.yaml with keys changed (`...` removes one), written to tmp_path/data.yaml."""
    cfg = {**yaml.safe_load(synth_data.read_text()), "path": str(synth_data.parent)}
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p = tmp_path / "data.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


# ------------------------------------------------------------------------------------------------ a read-only or full disk
def refuse_writes(monkeypatch, folder: Path, code: int) -> None:
    """Under `folder`, every write fails with `code` (EROFS: a read-only mount; ENOSPC: a full disk, statvfs 0 free).

    Tests run as root, where chmod stops nothing: a read-only or full file system is simulated by refusing, under one
    folder, exactly the calls that a read-only bind mount or a full tmpfs refuses (opening for writing, mkdir, touch,
    unlink, rename; OpenCV's imwrite returns False), with the errno the kernel gives.
    """
    import errno

    import cv2

    root = str(folder.resolve())
    under = lambda p: str(Path(os.fsdecode(p)).absolute()).startswith(root)  # noqa: E731
    fail = lambda p: OSError(code, os.strerror(code), os.fsdecode(p))  # noqa: E731
    real_open = builtins.open

    def guarded_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and under(file):
            raise fail(file)
        return real_open(file, mode, *a, **k)

    def guard(method):
        def refused(self, *a, **k):
            if under(self) and not (method.__name__ == "mkdir" and self.is_dir()):
                raise fail(self)
            return method(self, *a, **k)
        return refused

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    for name in ("mkdir", "touch", "unlink", "rmdir"):
        monkeypatch.setattr(Path, name, guard(getattr(Path, name)))
    real_replace, real_imwrite = os.replace, cv2.imwrite
    monkeypatch.setattr(os, "replace", lambda a, b, **k: (_ for _ in ()).throw(fail(b)) if under(b) else real_replace(a, b, **k))
    monkeypatch.setattr(cv2, "imwrite", lambda p, *a, **k: False if under(p) else real_imwrite(p, *a, **k))
    if code == errno.ENOSPC:
        real_statvfs = os.statvfs
        full = os.statvfs_result((4096, 4096, 1000, 0, 0, 1000, 0, 0, 0, 255))
        monkeypatch.setattr(os, "statvfs", lambda p: full if under(p) else real_statvfs(p))


# ------------------------------------------------------------------------------------------------ the CLI in its own process
def run_cli(*args, cwd: Path, timeout: float = 60) -> tuple[int, str, float]:
    """The real CLI in its own process: exit code, everything it said, seconds. A hang is a failure, not a wait.

    What hung or exploded before its fix runs this way, so on the old code the test fails instead of hanging the suite
    or filling its memory."""
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "npuyolo.cli", *map(str, args)], cwd=cwd, capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"npuyolo {' '.join(map(str, args))} still running after {timeout} s")
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def one_error_line(rc: int, said: str, limit: int = 300) -> str:
    """Exit 2, exactly one short `error:` line, no traceback."""
    lines = [line for line in said.splitlines() if line.strip()]
    assert rc == 2, (rc, said[:2000])
    assert "Traceback" not in said, said[:2000]
    assert len(lines) == 1 and lines[0].startswith("error:"), said[:2000]
    assert len(lines[0]) <= limit, f"{len(lines[0])} characters: {lines[0][:300]}"
    return lines[0]


# ------------------------------------------------------------------------------------------------ YAML alias bombs
def bomb_anchors(depth: int = 8, width: int = 9) -> str:
    """Top-level keys l0..l<depth>, each `width` aliases of the one before: width**(depth+1) values, ~450 bytes."""
    rows = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    rows += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "\n".join(rows) + "\n"


def bomb_inline(depth: int = 7, width: int = 9) -> str:
    """The same bomb as one flow value (a list whose last item is the big one), to nest inside any key."""
    items = [f"&b0 [{', '.join(['lol'] * width)}]"]
    items += [f"&b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "[" + ", ".join(items) + "]"


def foreign_file_and_link(folder: Path, name: str, text: str) -> tuple[Path, Path, Path]:
    """A user's own file `name` holding `text`, and a symbolic link `link.onnx` to another of their files
    (`target.txt`, holding "keep"): what an output option must never overwrite or write through."""
    foreign = folder / name
    foreign.write_text(text)
    target = folder / "target.txt"
    target.write_text("keep")
    link = folder / "link.onnx"
    link.symlink_to(target)
    return foreign, target, link


EXECUTOR_RECIPE = {"imgsz": 64, "batch": 8, "workers": 0, "plots": False}


def series_file(tmp_path: Path, data: Path, name: str, variants: list[str], epochs: int, **recipe) -> Path:
    """A series file for the executors' tests: tiny members, `recipe` over the shared settings."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "data": str(data), "variants": variants,
                                    "recipe": {**EXECUTOR_RECIPE, "epochs": epochs, **recipe}}))
    return path


def registry_content(reg: Registry) -> dict:
    """What must not depend on the executor: per member its status, epoch numbers, artefact kinds, device, AMP."""
    out = {}
    for r in reg.runs():
        run = reg.get_run(r.id)
        out[run.variant] = {"name": run.name, "status": run.status, "epochs": [e.epoch for e in run.epochs],
                            "artifacts": sorted(a.kind for a in run.artifacts), "device": run.device, "amp": run.amp,
                            "best": sorted(run.best or {}), "metrics_recorded": all(e.map50 is not None for e in run.epochs)}
    return out


def interrupted_series(spec_file: Path, db: Path, executor: str, wait_for_all: bool) -> Registry:
    """`series run --executor EXECUTOR` of a two-member series in a fresh process, sent SIGINT (the parent only, the
    process a terminal's Ctrl-C reaches first) once one member (or, `wait_for_all`, both) recorded an epoch: the command
    must exit 130 saying how to continue, print nothing on stdout, and leave both runs interrupted."""
    from .conftest import epochs_in

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "npuyolo.cli", "series", "run", str(spec_file), "--registry", str(db),
           "--executor", executor, "--max-parallel", "2", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, started = time.time() + 150, (all if wait_for_all else any)
    while not started(epochs_in(db, i) >= 1 for i in (1, 2)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the series ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr[-2000:]
    assert "again to continue" in stderr and stdout == ""
    reg = Registry(db)
    assert {r.status for r in reg.runs()} == {"interrupted"} and len(reg.runs()) == 2
    return reg


def retried_after_a_lost_worker(monkeypatch, tmp_path: Path, data: Path, make_executor) -> Registry:
    """A one-member, two-epoch series whose first attempt's worker exits right after sending epoch 1 (`FAULT_ENV`),
    under `make_executor(on_progress)`: the member must be retried from its checkpoint and finish in the same run,
    every epoch recorded once (the parent is the only writer, so every epoch record passes its `record_epoch`)."""
    from npuyolo.train.executors import FAULT_ENV
    from npuyolo.train.series import SeriesSpec, run_series

    calls = []
    original = Registry.record_epoch

    def counted(self, run_id, epoch, *a, **k):
        calls.append((run_id, epoch))
        return original(self, run_id, epoch, *a, **k)

    monkeypatch.setattr(Registry, "record_epoch", counted)
    monkeypatch.setenv(FAULT_ENV, "1")
    spec = SeriesSpec.load(series_file(tmp_path, data, "fault", ["L4-relu"], epochs=2))
    reg = Registry(tmp_path / "reg" / "npuyolo.db")
    states = []
    run_series(reg, spec, verbose=False, executor=make_executor(lambda s: states.append([(m.status, m.attempt) for m in s])))
    run = reg.get_run(1)
    assert run.status == "finished" and [e.epoch for e in run.epochs] == [1, 2]
    assert calls == [(1, 1), (1, 2)]  # epoch 1 came from the checkpoint, never trained or recorded again
    assert ("interrupted", 0) in [s[0] for s in states] and states[-1] == [("finished", 1)]
    assert run.artifact("weights/last") and len(reg.runs()) == 1  # the same run continued, no second one
    monkeypatch.undo()
    return reg
