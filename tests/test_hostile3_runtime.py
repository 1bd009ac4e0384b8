"""Hostile input, round 4 (issue 21), the medium runtime items: races on a new registry, concurrent quantize and
export, broken ONNX files at run time, run lookups, rewrite name clashes. Each reproducer failed before its fix."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
from pathlib import Path

import onnx
import pytest

from npuyolo.registry.db import Registry

from .test_hostile import cli, new_run, one_line_error


# ------------------------------------------------------------------------------------------------ a new registry, at once
def _open_registry(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        reg = Registry(path)
        results.put(("ok", reg.schema_version))
        reg.close()
    except Exception as e:  # what a crashing opener raised, reported to the test
        results.put(("error", repr(e)))


def test_processes_opening_one_new_registry_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for trial in range(3):
        path = str(tmp_path / f"r{trial}.db")
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_registry, args=(path, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == [("ok", Registry(path).schema_version)] * 6, got


def test_threads_opening_one_new_registry_at_once(tmp_path):
    class Results(list):
        put = list.append

    for trial in range(3):
        path = str(tmp_path / f"r{trial}.db")
        barrier, results = threading.Barrier(6), Results()
        threads = [threading.Thread(target=_open_registry, args=(path, barrier, results)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert [r[0] for r in results] == ["ok"] * 6, results
    reg = Registry(tmp_path / "r0.db")  # one transaction made every table, the newest status allowed included
    run = new_run(reg)
    reg.set_status(run, "stopped")
    assert reg.get_run(run).status == "stopped"


# ------------------------------------------------------------------------------------------------ broken ONNX at run time
def _meta(model: onnx.ModelProto, **changes: str) -> None:
    props = {p.key: p.value for p in model.metadata_props} | changes
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def _external_outside(model: onnx.ModelProto) -> None:
    init = max(model.graph.initializer, key=lambda i: len(i.raw_data))
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../../../../etc/hostname")


def _cyclic(model: onnx.ModelProto) -> None:
    model.graph.node[1].input[0] = model.graph.node[5].output[0]


def _missing_input(model: onnx.ModelProto) -> None:
    model.graph.node[3].input[0] = "nowhere"


def _opset1(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 1


BROKEN = {
    "external-data-outside": (_external_outside, "ONNX Runtime cannot load it"),
    "cyclic": (_cyclic, "ONNX Runtime cannot load it"),
    "missing-input": (_missing_input, "ONNX Runtime cannot load it"),
    "opset1": (_opset1, "ONNX Runtime cannot load it"),
    "size-differs": (lambda m: _meta(m, imgsz="[96, 96]"), "metadata says 1x3x96x96"),
    "strides-text": (lambda m: _meta(m, strides='["a", "b", "c"]'), "damaged npuyolo metadata"),
    "strides-zero": (lambda m: _meta(m, strides="[0, 0, 0]"), "damaged npuyolo metadata"),
    "strides-float": (lambda m: _meta(m, strides="[8.5, 16, 32]"), "damaged npuyolo metadata"),
    "strides-two": (lambda m: _meta(m, strides="[8, 16]"), "outputs do not match its metadata"),
    "reg-max-8": (lambda m: _meta(m, reg_max="8"), "outputs do not match its metadata"),
}


@pytest.fixture(scope="module")
def good_onnx(tmp_path_factory) -> Path:
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    return export_onnx(build_model("L4-relu", nc=6), tmp_path_factory.mktemp("onnx") / "m.onnx", imgsz=64)


def broken_onnx(good: Path, folder: Path, kind: str) -> Path:
    model = onnx.load(str(good))
    BROKEN[kind][0](model)
    path = folder / kind / f"{kind}.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_onnx_is_one_error_in_eval_bench_and_predict(tmp_path, good_onnx, synth_data, kind):
    path = broken_onnx(good_onnx, tmp_path, kind)
    images = synth_data.parent / "images" / "val"
    for args in (("predict", path, images, "--out", tmp_path / "out"), ("deploy", "bench", path, "--runs", "1"),
                 ("deploy", "eval", path, "--data", synth_data)):
        output = one_line_error(cli(*args))
        assert BROKEN[kind][1] in output and "Traceback" not in output, (args[0], output)
    assert not (tmp_path / "out").exists()


def test_the_good_export_still_predicts_and_benches(tmp_path, good_onnx, synth_data):
    from npuyolo.deploy.latency import bench_onnx

    assert bench_onnx(good_onnx, runs=1, warmup=0)["imgsz"] == 64
    r = cli("predict", good_onnx, synth_data.parent / "images" / "val", "--out", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------------------------ run lookups
def test_a_name_typed_in_decomposed_unicode_finds_its_run(tmp_path):
    import unicodedata

    reg = Registry(tmp_path / "r.db")
    for name in ("한국어 런", "café"):
        run_id = new_run(reg, name=name)
        typed = unicodedata.normalize("NFD", name)
        assert typed != name and reg.resolve(typed) == run_id
        r = cli("runs", "show", typed, "--json", registry=tmp_path / "r.db")
        assert r.exit_code == 0 and json.loads(r.output)["id"] == run_id, r.output


@pytest.mark.parametrize("ref", ["²", "#²", "99999999999999999999999", "#99999999999999999999999", "9223372036854775808"])
def test_odd_digits_and_huge_ids_are_not_found(tmp_path, ref):
    reg = Registry(tmp_path / "r.db")
    new_run(reg, name="a")
    assert "no run" in one_line_error(cli("runs", "show", ref, registry=tmp_path / "r.db"))


# ------------------------------------------------------------------------------------------------ npu rewrite names
def clashing_graph(path: Path) -> Path:
    """x -> Relu 'n/relu' -> Mul by 'npuyolo_const_0' -> LeakyRelu 'n' -> y: the names a rewrite of 'n' would generate."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Relu", ["x"], ["n/relu"], name="n/relu"),
             helper.make_node("Mul", ["n/relu", "npuyolo_const_0"], ["n/ax"], name="n/ax"),
             helper.make_node("LeakyRelu", ["n/ax"], ["y"], name="n", alpha=0.1)]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", io[:1], io[1:], [numpy_helper.from_array(np.array(2.0, np.float32), "npuyolo_const_0")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("method", ["relu-decomp", "relu-exact", "max"])
def test_rewrite_of_a_graph_already_using_generated_names(tmp_path, method):
    import numpy as np
    import onnxruntime as ort

    src = clashing_graph(tmp_path / "clash.onnx")
    dst = tmp_path / f"out-{method}.onnx"
    r = cli("npu", "rewrite", src, "--leaky", method, "--out", dst)
    assert r.exit_code == 0, r.output
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    assert np.allclose(run(src), run(dst), atol=1e-6)
    assert not [n for n in onnx.load(str(dst)).graph.node if n.op_type == "LeakyRelu"]


# ------------------------------------------------------------------------------------------------ exports from threads
def test_workspace_export_from_threads(tmp_path):
    from npuyolo import Workspace
    from npuyolo.deploy.export import onnx_metadata

    from .test_hostile2 import save_pt

    pt = save_pt(tmp_path / "m.pt")
    ws = Workspace(tmp_path / "r.db")
    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "same.onnx", tmp_path / "same.onnx"]
    barrier, errors = threading.Barrier(len(outs)), []

    def export(out: Path) -> None:
        barrier.wait()
        try:
            ws.export(str(pt), out, imgsz=64)
        except Exception as e:  # collected: the test reports what a thread raised
            errors.append(repr(e))

    threads = [threading.Thread(target=export, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    for out in set(outs):
        assert onnx_metadata(out)["imgsz"] == "[64, 64]"
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]


# ------------------------------------------------------------------------------------------------ quantize
def test_a_failed_quantize_leaves_no_working_files(tmp_path, monkeypatch, synth_data, good_onnx):
    import npuyolo.deploy.quantize as quantize

    fp32 = Path(shutil.copy(good_onnx, tmp_path / "m.onnx"))

    def boom(*a, **k):
        raise RuntimeError("killed mid-quantize")

    monkeypatch.setattr(quantize.onnx.checker, "check_model", boom)
    with pytest.raises(RuntimeError, match="killed"):
        quantize.quantize_onnx(fp32, tmp_path / "m-int8.onnx", synth_data, calib=2, bias_correct=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# Two quantizes of one model, interleaved as they are with a full calibration set: the second has prepared its graph
# and waits; the first runs to the end (and, before the fix, deleted the shared '.prep.onnx'); then the second goes on.
QUANTIZE = """
import sys, time
from pathlib import Path
import npuyolo.deploy.quantize as q

fp32, out, data, me, sync = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5])
real = q.quantize_static

def wait_for(name):
    deadline = time.time() + 120
    while not (sync / name).exists():
        assert time.time() < deadline, name
        time.sleep(0.05)

def interleaved(*a, **k):
    if me == "first":
        wait_for("second-prepared")
    elif not (sync / "second-prepared").exists():
        (sync / "second-prepared").touch()
        wait_for("first-done")
    return real(*a, **k)

q.quantize_static = interleaved
q.quantize_onnx(fp32, out, data, calib=4)
(sync / f"{me}-done").touch()
"""


def test_two_quantizes_of_one_model_at_once(tmp_path, synth_data, good_onnx):
    import subprocess
    import sys

    from npuyolo.deploy.export import onnx_metadata

    work, sync = tmp_path / "deploy", tmp_path / "sync"
    work.mkdir()
    sync.mkdir()
    fp32 = Path(shutil.copy(good_onnx, work / "m.onnx"))
    out = work / "m-int8.onnx"
    procs = [subprocess.Popen([sys.executable, "-c", QUANTIZE, str(fp32), str(out), str(synth_data), me, str(sync)],
                              stderr=subprocess.PIPE, text=True) for me in ("first", "second")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[1][-600:]
    assert "npuyolo_quant" in onnx_metadata(out)
    assert sorted(p.name for p in work.iterdir()) == ["m-int8.onnx", "m.onnx"]


def test_schema_version_and_tables_are_read_in_one_snapshot(tmp_path):
    """Another opener committing the schema between the version read and the table read made a registry being created
    look like a foreign SQLite file ('not an npuyolo registry'); seen once in six threads opening one new registry."""
    import sqlite3

    from npuyolo.registry.db import Registry

    path = tmp_path / "r.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")

    class Rows:
        def __init__(self, rows):
            self.rows = rows

        def fetchone(self):
            return self.rows[0] if self.rows else None

        def fetchall(self):
            return self.rows

        def __iter__(self):
            return iter(self.rows)

    class Racing:
        """A connection after whose first statement another process creates the registry."""

        first = True

        def execute(self, *args):
            rows = conn.execute(*args).fetchall()
            if self.first:
                self.first = False
                Registry(path).close()
            return Rows(rows)

    probe = object.__new__(Registry)
    probe.path = path
    assert probe._check_version(Racing()) == 0  # what the snapshot saw: an empty file, then the lock sorts it out
    assert Registry(path).schema_version > 0
