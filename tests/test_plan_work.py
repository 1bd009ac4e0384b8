"""A plan's INT8 files and figures do not depend on how many worker processes built them (`deploy/plan/work.py`)."""

import hashlib
from dataclasses import asdict

import numpy as np
import pytest

from npuyolo.deploy.plan import work as plan_work
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.deploy.plan.work import QuantizeSettings, build_files, default_workers, worker_pool
from npuyolo.npu.rewrite import rewrite_leaky

from .test_deploy import randomised


def build(pairs, folder, settings, workers=1, **kwargs):
    with worker_pool(workers) as pool:
        return build_files(pairs, folder, settings, 0.25, pool, **kwargs)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    import onnx

    root = tmp_path_factory.mktemp("graphs")
    leaky = export_onnx(randomised("L4-leaky"), root / "leaky.onnx", imgsz=64, head="npu")
    model, _ = rewrite_leaky(onnx.load(str(leaky)), "relu-decomp")
    decomp = root / "leaky.relu-decomp.onnx"
    onnx.save(model, str(decomp))
    return leaky, decomp


def test_two_workers_build_the_same_files_and_scores_as_one(graphs, synth_data, tmp_path):
    leaky, decomp = graphs
    pairs = [(leaky, "int8"), (leaky, "int8-ends-int16"), (decomp, "int8"), (leaky, "int8")]
    settings = QuantizeSettings(str(synth_data), QuantizeOptions(calib=6, holdout=4, seed=0, sweep=True))
    (tmp_path / "one").mkdir()
    one = build(pairs, (tmp_path / "one").resolve(), settings, workers=1)
    (tmp_path / "two").mkdir()
    two = build(pairs, (tmp_path / "two").resolve(), settings, workers=2)
    assert one.calibration == two.calibration and one.calibration.label in {"minmax", "entropy", "percentile99.99",
                                                                           "percentile99.999"}
    assert sorted(one.int8) == sorted(two.int8) == sorted(set(pairs))
    for key in one.int8:
        assert _digest(one.int8[key]) == _digest(two.int8[key]), key
    # every FP32 and INT8 file scored once, with the same figures and per-image statistics
    assert {p.name for p in one.scores} == {p.name for p in two.scores} == {leaky.name, decomp.name} | {
        p.name for p in one.int8.values()}
    by_name = {p.name: v for p, v in two.scores.items()}
    for path, (everything, at_conf, stats) in one.scores.items():
        other = by_name[path.name]
        assert everything == other[0] and at_conf == other[1]
        theirs = asdict(other[2])
        for k, v in asdict(stats).items():
            assert np.array_equal(v, theirs[k]) if isinstance(v, np.ndarray) else v == theirs[k], k


def test_default_workers_is_the_usable_cores():
    import os

    assert default_workers() == len(os.sched_getaffinity(0))


def test_a_second_plan_reuses_what_the_first_built_and_any_changed_input_rebuilds(graphs, data_copy, tmp_path,
                                                                                 monkeypatch):
    import yaml

    from npuyolo.data.calibration import calibration_images

    leaky, decomp = graphs
    pairs = [(leaky, "int8"), (leaky, "int8-ends-int16"), (decomp, "int8")]
    settings = QuantizeSettings(str(data_copy), QuantizeOptions(calib=4, holdout=4, seed=0, sweep=True))
    folder = tmp_path / "plan"
    folder.mkdir()
    first = build(pairs, folder, settings)
    built = {k: _digest(p) for k, p in first.int8.items()}
    again = build(pairs, folder, settings)
    assert dict(again.seconds) == {}  # nothing quantized, nothing scored
    assert again.calibration == first.calibration and {k: _digest(p) for k, p in again.int8.items()} == built
    assert {p: v[:2] for p, v in again.scores.items()} == {p: v[:2] for p, v in first.scores.items()}

    # a file rewritten since (another plan's inputs, a hand edit) is a miss, never a wrong hit
    first.int8[(decomp, "int8")].write_bytes(b"not the recorded bytes")
    third = build(pairs, folder, settings)
    assert _digest(third.int8[(decomp, "int8")]) == built[(decomp, "int8")]
    assert third.seconds["quantize"] > 0

    # a changed calibration image: the INT8 files are built and scored again; the FP32 scores (val unchanged) reused
    image = calibration_images(data_copy, 4, 0)[0]
    image.write_bytes(image.read_bytes()[:-16] + bytes(16))
    scored = []
    real = plan_work._score_job
    monkeypatch.setattr(plan_work, "_score_job", lambda path, *a: scored.append(path) or real(path, *a))
    changed = build(pairs, folder, settings)
    assert changed.seconds["quantize"] > 0 and yaml.safe_load((folder / "plan-cache.json").read_text())["sweep"]
    assert leaky not in scored and decomp not in scored and set(scored) <= set(changed.int8.values())
    unchanged = build(pairs, folder, settings, reuse=False)
    assert {k: _digest(p) for k, p in unchanged.int8.items()} == {k: _digest(p) for k, p in changed.int8.items()}
    assert dict(build(pairs, folder, settings).seconds) == {}  # what a reuse=False plan built is recorded and reused


def _swept_once(graph, data, tmp_path):
    """One plan of `graph`'s int8 route with the sweep, in tmp_path/plan: (settings, folder, files, index path, index)."""
    import json

    settings = QuantizeSettings(str(data), QuantizeOptions(calib=4, holdout=4, seed=0, sweep=True))
    folder = tmp_path / "plan"
    folder.mkdir()
    first = build([(graph, "int8")], folder, settings)
    index_path = folder / "plan-cache.json"
    return settings, folder, first, index_path, json.loads(index_path.read_text())


def test_a_cache_entry_that_is_malformed_or_another_files_is_a_miss_never_a_crash(graphs, synth_data, tmp_path):
    import json
    import shutil

    leaky, _ = graphs
    own = tmp_path / "a.onnx"
    shutil.copyfile(leaky, own)
    settings, folder, first, index_path, index = _swept_once(own, synth_data, tmp_path)
    for entry in index["sweep"].values():
        entry.pop("method")
    for entry in index["scores"].values():
        entry["all"] = {}
    index_path.write_text(json.dumps(index))
    again = build([(own, "int8")], folder, settings)
    assert again.seconds["quantize"] > 0 and again.seconds["evaluate"] > 0  # built and scored again
    assert _digest(again.int8[(own, "int8")]) == _digest(first.int8[(own, "int8")])
    index_path.write_text("[" * 100000)  # nested past Python's recursion limit
    assert build([(own, "int8")], folder, settings).calibration == first.calibration
    # the same bytes under another name score again: its statistics are its own file
    other = tmp_path / "b.onnx"
    shutil.copyfile(own, other)
    scored = build([(own, "int8"), (other, "int8")], folder, settings)
    assert (folder / "stats" / "b.npz").is_file() and (folder / "stats" / "b-int8.npz").is_file()
    assert scored.scores[other][:2] == scored.scores[own][:2]


def test_a_workers_error_comes_back_whole_and_workers_are_checked(graphs, synth_data, tmp_path):
    import pickle

    from npuyolo import NpuyoloError, Workspace
    from npuyolo.data.check import DataError
    from npuyolo.npu.onnxfile import ExportError

    problems = ["data.yaml: val: folder /x does not exist", "data.yaml: 3 labels name class 9"]
    back = pickle.loads(pickle.dumps(DataError(problems, param="data")))
    assert back.problems == problems and back.param == "data" and str(back) == str(DataError(problems))
    settings = QuantizeSettings(str(synth_data), QuantizeOptions(calib=4, holdout=4, seed=0, sweep=False))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an ONNX graph")
    with pytest.raises(ExportError, match="not a readable ONNX model"):  # raised in a worker, handed back whole
        build([(garbage, "int8")], tmp_path, settings, workers=2)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(NpuyoloError, match="workers must be"):
            Workspace(tmp_path / "r.db").plan("L4-relu", ["relu-only"], synth_data, workers=bad)



def test_a_plan_takes_what_another_members_plan_built_from_the_same_graph(graphs, synth_data, tmp_path, monkeypatch):
    """A series' ReLU twin is planned twice: as the LeakyReLU member's twin and in its own plan. The second plan
    copies the first's INT8 files and statistics (same content keys) instead of building and scoring them again, and
    gets the same bytes and figures a plan without the other folder builds; a damaged file there is built here."""
    import shutil

    leaky, decomp = graphs
    own = tmp_path / "own.onnx"  # the second plan's own first graph
    shutil.copyfile(leaky, own)
    settings = QuantizeSettings(str(synth_data), QuantizeOptions(calib=4, holdout=4, seed=0, sweep=False))
    first_folder, second_folder, alone_folder = (tmp_path / n for n in ("first", "second", "alone"))
    for f in (first_folder, second_folder, alone_folder):
        f.mkdir()
    first = build([(leaky, "int8"), (decomp, "int8"), (decomp, "int8-ends-int16")], first_folder, settings)
    pairs = [(own, "int8"), (decomp, "int8"), (decomp, "int8-ends-int16")]
    alone = build(pairs, alone_folder, settings)

    quantized, scored = [], []
    real_quantize, real_score = plan_work._quantize_job, plan_work._score_job
    monkeypatch.setattr(plan_work, "_quantize_job", lambda fp32, *a: quantized.append(fp32) or real_quantize(fp32, *a))
    monkeypatch.setattr(plan_work, "_score_job", lambda path, *a: scored.append(path) or real_score(path, *a))
    second = build(pairs, second_folder, settings, shared=[first_folder])
    assert quantized == [own]  # the twin's routes were taken, not built
    assert decomp not in scored and not any(p.parent == second_folder and p.name.startswith(decomp.stem) for p in scored)
    for key in ((decomp, "int8"), (decomp, "int8-ends-int16")):
        path = second.int8[key]
        assert path.parent == second_folder and _digest(path) == _digest(first.int8[key]) == _digest(alone.int8[key])
        assert (second_folder / "stats" / f"{path.stem}.npz").is_file()  # its statistics are this plan's own copy
    assert {p.name: v[:2] for p, v in second.scores.items()} == {p.name: v[:2] for p, v in alone.scores.items()}
    assert dict(build(pairs, second_folder, settings).seconds) == {}  # and recorded here for the next plan

    # a file changed in the other folder since it was recorded is not taken: built here, the same bytes
    again_folder = tmp_path / "again"
    again_folder.mkdir()
    first.int8[(decomp, "int8")].write_bytes(b"damaged")
    quantized.clear()
    again = build(pairs, again_folder, settings, shared=[first_folder])
    assert decomp in quantized and _digest(again.int8[(decomp, "int8")]) == _digest(alone.int8[(decomp, "int8")])


@pytest.mark.parametrize("method, percentile", [("minmax", None), ("percentile", 99.999)])
def test_a_logits_twin_calibrated_from_its_sigmoid_graph_gives_the_same_files(synth_data, tmp_path, monkeypatch, method,
                                                                              percentile):
    """A graph with the class sigmoid computes every tensor of its logits twin; the twin's ranges are read from that
    graph's calibration instead of a pass of its own, and its INT8 files are the bytes a calibration of its own gives.
    A graph that shares only part of its tensors (another slope) is calibrated on its own."""
    import onnx

    from npuyolo.deploy.int8.quantize import quantize_onnx, subset_ranges
    from npuyolo.deploy.plan.work import Calibration, _quantize_job, subsets_of

    model = randomised("L4-leaky")
    sigmoid = export_onnx(model, tmp_path / "m.onnx", imgsz=64, head="npu")
    logits = export_onnx(model, tmp_path / "m-logits.onnx", imgsz=64, head="npu", class_sigmoid=False)
    from npuyolo.deploy.plan.build import write_graph

    other = write_graph(logits, tmp_path / "m-logits.slope0.125.onnx", "slope0.125")
    assert subsets_of([logits, other, sigmoid]) == {sigmoid: [logits], other: []}

    settings = QuantizeSettings(str(synth_data), QuantizeOptions(calib=6, holdout=4, seed=0, sweep=False))
    cal = Calibration(method, percentile, "minmax" if percentile is None else f"percentile{percentile:g}")
    routes = ["int8", "int8-ends-int16", "int8-ends-float"]
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    shared.mkdir()
    alone.mkdir()
    from npuyolo.deploy.int8 import quantize as quantize_module

    passes = []  # the graphs a calibration pass ran on (their prepared copies' folders say whose)
    for name in ("calibration_ranges", "minmax_ranges"):
        real = getattr(quantize_module, name)
        monkeypatch.setattr(quantize_module, name, lambda path, *a, _real=real, **k: passes.append(path) or _real(path, *a, **k))
    made, _ = _quantize_job(sigmoid, routes, shared, settings, cal, {}, [(logits, routes), (other, ["int8"])])
    assert len(passes) == 2  # the sigmoid graph's and the re-sloped graph's: none for the logits twin
    monkeypatch.undo()
    assert set(made) == {(g, r) for g in (sigmoid, logits) for r in routes} | {(other, "int8")}
    for (graph, route), path in made.items():
        own = alone / path.name
        quantize_onnx(graph, own, str(synth_data), calib=6, method=method, percentile=percentile,
                      ends=plan_work.route_ends(route), seed=0)
        assert _digest(path) == _digest(own), (graph.name, route)

    ranges: dict = {}
    quantize_onnx(sigmoid, tmp_path / "s.onnx", str(synth_data), calib=6, method=method, percentile=percentile, seed=0,
                  ranges=ranges)
    assert subset_ranges(sigmoid, logits, ranges)  # read from the sigmoid graph's calibration
    assert subset_ranges(sigmoid, other, ranges) == {}  # another slope: its tensors are not all computed there
    assert subset_ranges(logits, sigmoid, subset_ranges(sigmoid, logits, ranges)) == {}  # the sigmoid is not in its twin


def test_a_sweep_entry_whose_label_does_not_say_its_method_is_a_miss(graphs, synth_data, tmp_path):
    """The sweep's label is printed and recorded in plan.json: a cache entry saying 'percentile99.999 <img ...>' for
    files built with MinMax is not taken (the sweep runs again), never shown as the plan's calibration."""
    import json

    leaky, _ = graphs
    settings, folder, first, index_path, index = _swept_once(leaky, synth_data, tmp_path)
    for entry in index["sweep"].values():
        entry["label"] = "percentile99.999 <img src=x onerror=alert(1)>"
    index_path.write_text(json.dumps(index))
    again = build([(leaky, "int8")], folder, settings)
    assert again.seconds["quantize"] > 0  # swept again
    assert again.calibration == first.calibration and "<" not in again.calibration.label
