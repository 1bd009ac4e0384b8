"""ORT's quantizer without its quadratic Python (`deploy/int8/ort_fast.py`) writes the same bytes and finds the same
thresholds as ORT's own code: the speed-up may never change an INT8 file."""

import contextlib

import numpy as np
import pytest
from onnxruntime.quantization import qdq_quantizer
from onnxruntime.quantization.calibrate import HistogramCollector
from onnxruntime.quantization.onnx_model import ONNXModel

from npuyolo.data.calibration import calibration_images
from npuyolo.deploy.int8 import calibrate, ort_fast, quantize
from npuyolo.deploy.export import export_onnx
from npuyolo.deploy.int8.ort_fast import entropy_threshold, fast_qdq, find_by_name, replace_input_of_all_nodes

from .test_deploy import randomised


def _collector(arrays_per_call: list[dict]) -> HistogramCollector:
    collector = HistogramCollector("entropy", False, 512, 128, 99.999, "same")
    with contextlib.redirect_stdout(None):
        for arrays in arrays_per_call:
            collector.collect(arrays)
    return collector


def test_entropy_threshold_equals_orts_on_every_histogram_shape():
    rng = np.random.default_rng(0)
    shapes = {
        "relu": lambda n: np.maximum(rng.normal(0, 1, n), 0),
        "heavy_tail": lambda n: rng.standard_t(2, n),
        "skewed": lambda n: rng.exponential(3, n) - 0.5,
        "sparse": lambda n: np.where(rng.random(n) < 0.02, rng.normal(0, 5, n), 0.0),
        "constant": lambda n: np.full(n, 0.25),
    }
    # several calls, each with a larger spread: the histogram grows past 512 bins as ORT merges it
    calls = [{name: (f(4000) * (1 + k)).astype(np.float32) for name, f in shapes.items()} for k in range(3)]
    collector = _collector(calls)
    assert any(h[0].size > 512 for h in collector.histogram_dict.values())
    for name, histogram in collector.histogram_dict.items():
        theirs = collector.get_entropy_threshold(histogram, 128)
        ours = entropy_threshold(histogram, 128)
        assert [np.asarray(v).tobytes() for v in ours] == [np.asarray(v).tobytes() for v in theirs], name


def _adversarial_values(rng) -> list[np.ndarray]:
    """Chunks of |x| as the percentile collector sees them: each chunk may reach past the edges so far (ORT grows
    them with np.arange), values sit exactly on edges, below the first edge, NaN, and a chunk of one repeated value."""
    base = np.abs(rng.normal(0, 1, 50_000)).astype(np.float32)
    edges = np.histogram(base, bins=2048)[1].astype(np.float32)
    on_edges = np.repeat(edges, 3)
    wider = np.abs(rng.standard_t(2, 150_000)).astype(np.float32) * 3  # more than two of its blocks
    with_nan = np.concatenate([np.abs(rng.normal(0, 1, 1000)).astype(np.float32), [np.nan, 0.0, edges[-1]]]).astype(np.float32)
    return [base, np.concatenate([on_edges, np.float32([0.0, edges[0] / 2, edges[-1]])]), wider, with_nan,
            np.full(777, edges[5], np.float32)]


def test_histogram_on_edges_counts_as_numpy_does(rng=None):
    rng = np.random.default_rng(1)
    chunks = _adversarial_values(rng)
    edges = np.histogram(chunks[0], bins=2048)[1].astype(np.float32)
    grown = np.hstack((edges, np.arange(edges[-1] + (edges[1] - edges[0]), np.float32(40), edges[1] - edges[0])))
    uneven = np.concatenate([np.linspace(0, 1, 50), np.geomspace(1.1, 100, 50)]).astype(np.float32)
    repeated = np.sort(np.concatenate([edges, edges[100:110]]))  # equal neighbouring edges: empty bins
    for bins in (edges, grown, uneven, repeated, np.float32([0.0, 1.0])):
        for values in chunks:
            want = np.histogram(values, bins=bins)[0]
            got = ort_fast.histogram_on_edges(values, bins)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_the_fast_percentile_collector_keeps_orts_histograms_to_the_bit():
    rng = np.random.default_rng(2)
    chunks = _adversarial_values(rng)
    calls = [{"a": c, "b": (c * 0.5 + 1).astype(np.float32)} for c in chunks]
    theirs = HistogramCollector("percentile", True, 2048, 2048, 99.999, "same")
    ours = HistogramCollector("percentile", True, 2048, 2048, 99.999, "same")
    ort_fast.fast_histogram_collector(ours)
    with contextlib.redirect_stdout(None):
        for arrays in calls:
            theirs.collect({k: [v[: v.size // 2], v[v.size // 2:]] if k == "b" and v.size % 2 == 0 else v for k, v in arrays.items()})
            ours.collect({k: [v[: v.size // 2], v[v.size // 2:]] if k == "b" and v.size % 2 == 0 else v for k, v in arrays.items()})
    assert theirs.histogram_dict.keys() == ours.histogram_dict.keys()
    assert any(h[0].size > 2048 for h in theirs.histogram_dict.values())  # the edges grew
    for name, want in theirs.histogram_dict.items():
        got = ours.histogram_dict[name]
        for w, g in zip(want, got, strict=True):
            assert np.asarray(w).dtype == np.asarray(g).dtype
            assert np.array_equal(np.asarray(w), np.asarray(g), equal_nan=True), name
    # and the read-out: the same percentile ranges
    with contextlib.redirect_stdout(None):
        assert {k: tuple(map(float, v)) for k, v in theirs.compute_collection_result().items()} == \
            {k: tuple(map(float, v)) for k, v in ours.compute_collection_result().items()}


def test_find_by_name_and_replace_inputs_do_what_orts_do():
    import onnx
    from onnx import helper

    class Named:
        def __init__(self, name):
            self.name = name

    items = [Named("a"), Named("b"), Named("a")]
    assert find_by_name("a", items) is items[0] and find_by_name("z", items) is None
    assert find_by_name("a", items) is qdq_quantizer.find_by_name("a", items)

    def graph():
        nodes = [helper.make_node("Add", ["x", "x"], ["y"], name="n0"), helper.make_node("Relu", ["y"], ["z"], name="n1"),
                 helper.make_node("Mul", ["z", "y"], ["w"], name="n2")]
        return ONNXModel(helper.make_model(helper.make_graph(nodes, "g", [], [])))

    ours, theirs = graph(), graph()
    replace_input_of_all_nodes(ours, "y", "y2")
    replace_input_of_all_nodes(ours, "x", "x2")
    theirs.replace_input_of_all_nodes("y", "y2")
    theirs.replace_input_of_all_nodes("x", "x2")
    assert onnx.printer.to_text(ours.model) == onnx.printer.to_text(theirs.model)


def test_fast_qdq_restores_orts_functions_even_after_an_error():
    from onnxruntime.quantization import onnx_model

    names = ["find_by_name", "get_initializer", "add_initializer", "initializer_extend", "replace_input_of_all_nodes",
             "replace_node_input", "remove_node", "remove_initializer", "clean_initializers", "topological_sort"]
    before = ([m.find_by_name for m in ort_fast._FIND_BY_NAME_USERS], {n: ONNXModel.__dict__.get(n) for n in names},
              onnx_model._clean_initializers_helper)
    with pytest.raises(RuntimeError), fast_qdq():
        assert qdq_quantizer.find_by_name is find_by_name and ONNXModel.get_initializer is ort_fast.get_initializer
        raise RuntimeError("boom")
    after = ([m.find_by_name for m in ort_fast._FIND_BY_NAME_USERS], {n: ONNXModel.__dict__.get(n) for n in names},
             onnx_model._clean_initializers_helper)
    assert after == before and not ort_fast._ACTIVE and not ort_fast._INDEXES


def test_the_indexes_answer_as_orts_scans_while_the_graph_changes():
    """Inside fast_qdq the initializer and reader indexes give what ORT's scans give, through appends, renames,
    removals and a rebuilt node list."""
    import onnx
    from onnx import helper, numpy_helper

    def graph():
        nodes = [helper.make_node("Add", ["x", "w0"], ["y"], name="n0"), helper.make_node("Relu", ["y"], ["z"], name="n1"),
                 helper.make_node("Mul", ["z", "y"], ["w"], name="n2")]
        inits = [numpy_helper.from_array(np.full(2, i, np.float32), f"w{i}") for i in range(3)]
        return ONNXModel(helper.make_model(helper.make_graph(nodes, "g", [], [], inits)))

    def steps(m):
        found = [m.get_initializer("w1") is not None, m.get_initializer("nope") is None]
        m.add_initializer(numpy_helper.from_array(np.ones(1, np.float32), "w3"))
        m.add_initializer(numpy_helper.from_array(np.zeros(1, np.float32), "w0"))  # a name already there: not added
        m.initializer_extend([numpy_helper.from_array(np.ones(1, np.float32), "w4")])
        found += [qdq_quantizer.find_by_name("w3", m.initializer()).name, m.get_initializer("w4") is not None]
        m.replace_input_of_all_nodes("y", "y_dq")
        m.add_node(helper.make_node("Sub", ["z", "y"], ["v"], name="n3"))  # reads y again, after its rename
        m.replace_node_input(m.model.graph.node[1], "y_dq", "y_dq2")
        m.replace_input_of_all_nodes("y_dq2", "y3")
        m.replace_input_of_all_nodes("y", "y4")
        m.remove_initializer(m.get_initializer("w1"))
        found += [m.get_initializer("w1") is None, m.get_initializer("w2").name]
        m.remove_node(m.model.graph.node[0])
        m.replace_input_of_all_nodes("z", "z2")
        m.clean_initializers()  # rebuilds the node list (and drops unread initializers)
        m.replace_input_of_all_nodes("w", "w5")
        m.replace_input_of_all_nodes("z2", "z3")
        return found, onnx.printer.to_text(m.model)

    theirs = steps(graph())
    with fast_qdq():
        ours = steps(graph())
    assert ours == theirs and all(name in theirs[1] for name in ("y4", "y3", "z3"))


def _graph_route(synth_data, tmp_path, graph):
    import onnx

    from npuyolo.npu.rewrite import rewrite_leaky

    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    if graph is None:
        return fp32
    model, _ = rewrite_leaky(onnx.load(str(fp32)), graph)
    onnx.save(model, str(tmp_path / f"fp32.{graph}.onnx"))
    return tmp_path / f"fp32.{graph}.onnx"


@pytest.mark.parametrize(("graph", "ends", "per_channel"), [(None, None, False), (None, "int16", False),
                                                            (None, "float", True), ("relu-decomp", None, False),
                                                            ("relu-exact", "int16", False)])
def test_quantized_file_is_byte_identical_with_and_without_the_fast_path(synth_data, tmp_path, monkeypatch, graph, ends,
                                                                        per_channel):
    fp32 = _graph_route(synth_data, tmp_path, graph)
    fast = tmp_path / "fast.onnx"
    quantize.quantize_onnx(fp32, fast, synth_data, calib=8, ends=ends, per_channel=per_channel)
    monkeypatch.setattr(quantize, "fast_qdq", contextlib.nullcontext)
    slow = tmp_path / "slow.onnx"
    quantize.quantize_onnx(fp32, slow, synth_data, calib=8, ends=ends, per_channel=per_channel)
    assert fast.read_bytes() == slow.read_bytes()


def test_entropy_ranges_identical_with_and_without_the_fast_search(synth_data, tmp_path, monkeypatch):
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    reader = calibrate.ImageReader(calibration_images(synth_data, 8, 0), 64)
    fast = calibrate.entropy_ranges(fp32, reader, tmp_path)
    monkeypatch.setattr(calibrate, "fast_entropy", lambda cal: None)
    slow = calibrate.entropy_ranges(fp32, reader, tmp_path)
    assert fast == slow


@pytest.mark.parametrize("variant", ["L4-leaky", "L0-silu"])
def test_minmax_ranges_equal_orts_own_calibrator_to_the_bit(synth_data, tmp_path, variant):
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = export_onnx(randomised(variant), tmp_path / "fp32.onnx", imgsz=64, head="ultralytics")
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    reader = calibrate.ImageReader(calibration_images(synth_data, 6, 0), 64)
    ours = calibrate.minmax_ranges(prepared, reader, tmp_path)
    cal = create_calibrator(str(prepared), None, str(tmp_path / "aug.onnx"), calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"symmetric": False})
    reader.rewind()
    cal.collect_data(reader)  # every image in one call: ORT's own merge, nothing dropped
    theirs = {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
              for name, td in cal.calibrate_tensors_range.data.items()}
    assert ours.keys() == theirs.keys() and len(ours) > 100
    assert ours == theirs


def _separate_passes(prepared, reader, workdir, wanted, chunk=None):
    """What each calibration's own reader gives (ORT's percentile and entropy calibrators, our MinMax): one pass each."""
    found = {}
    for cal in wanted:
        if cal.method == "minmax":
            found[cal.label] = calibrate.minmax_ranges(prepared, reader, workdir)
        elif cal.method == "percentile":
            found[cal.label] = calibrate.percentile_ranges(prepared, reader, workdir, cal.percentile, chunk)
        else:
            found[cal.label] = calibrate.entropy_ranges(prepared, reader, workdir)
    return found


@pytest.mark.parametrize("variant", ["L4-leaky", "L4-relu"])
def test_one_pass_gives_every_calibrations_ranges_to_the_bit(synth_data, tmp_path, monkeypatch, variant):
    """The sweep's four calibrations read from one pass of the images equal each read by its own pass (ORT's
    percentile and entropy calibrators, our MinMax), histograms merged over chunks (5 images, 2 a chunk). The NPU
    head, as a plan quantizes it, with seeded weights: the Ultralytics head's decode can hold a tensor ORT's percentile
    histogram refuses ("Too many bins", seen with L0-silu), in ORT's calibrator as in ours (the same collector)."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    head = "npu"
    fp32 = export_onnx(randomised(variant), tmp_path / "fp32.onnx", imgsz=64, head=head)
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    reader = calibrate.ImageReader(calibration_images(synth_data, 5, 0), 64)
    monkeypatch.setattr(calibrate, "CALIB_CHUNK", 2)  # entropy_ranges' chunk
    passes = []
    real_run = calibrate.session
    monkeypatch.setattr(calibrate, "session", lambda *a, **k: passes.append(a[0]) or real_run(*a, **k))
    together = calibrate.calibration_ranges(prepared, reader, tmp_path, list(calibrate.SWEEP), chunk=2)
    assert len(passes) == 1
    alone = _separate_passes(prepared, reader, tmp_path, calibrate.SWEEP, chunk=2)
    assert list(together) == [c.label for c in calibrate.SWEEP]
    for label, ranges in alone.items():
        assert together[label].keys() == ranges.keys() and len(ranges) > 100, label
        assert together[label] == ranges, label
    assert together["percentile99.99"] != together["percentile99.999"] != together["entropy"]


def test_the_sweep_and_a_histogram_route_give_the_same_files_from_one_pass(synth_data, tmp_path, monkeypatch):
    """quantize_onnx with the one-pass calibration writes the files and sweep scores the separate passes gave."""
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    cases = {"sweep": {"sweep": True, "holdout": 3}, "entropy": {"method": "entropy"}}
    one = {name: quantize.quantize_onnx(fp32, tmp_path / f"one-{name}.onnx", synth_data, calib=5, **kw)
           for name, kw in cases.items()}
    monkeypatch.setattr(quantize, "calibration_ranges", _separate_passes)
    for name, kw in cases.items():
        alone = quantize.quantize_onnx(fp32, tmp_path / f"alone-{name}.onnx", synth_data, calib=5, **kw)
        assert (tmp_path / f"one-{name}.onnx").read_bytes() == (tmp_path / f"alone-{name}.onnx").read_bytes(), name
        assert one[name]["sweep"] == alone["sweep"] and one[name]["calibration"] == alone["calibration"]
    assert [r["calibration"] for r in one["sweep"]["sweep"]] == [c.label for c in calibrate.SWEEP]


def test_the_sweeps_winner_is_its_candidate_file_not_quantized_again(synth_data, tmp_path, monkeypatch):
    """The sweep quantizes each of its four calibrations once; the winner's file is that candidate, byte for byte the
    file a quantization with the winning calibration alone writes."""
    fp32 = export_onnx(randomised("L4-leaky"), tmp_path / "fp32.onnx", imgsz=64, head="npu")
    calls = []
    real = quantize.quantize_static
    monkeypatch.setattr(quantize, "quantize_static", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    info = quantize.quantize_onnx(fp32, tmp_path / "sweep.onnx", synth_data, calib=5, sweep=True, holdout=3)
    assert len(calls) == len(calibrate.SWEEP)
    alone = quantize.quantize_onnx(fp32, tmp_path / "alone.onnx", synth_data, calib=5, method=info["method"],
                                   percentile=info["percentile"])
    assert len(calls) == len(calibrate.SWEEP) + 1
    strip = lambda path: _without_quant_metadata(path)  # noqa: E731  the settings differ (sweep scores)
    assert strip(tmp_path / "sweep.onnx") == strip(tmp_path / "alone.onnx")


def _without_quant_metadata(path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != "npuyolo_quant"]
    del model.metadata_props[:]
    for k, v in kept:
        model.metadata_props.add(key=k, value=v)
    return model.SerializeToString()


def test_a_reader_decodes_each_image_once_however_often_it_is_rewound(tmp_path, monkeypatch):
    import cv2

    from npuyolo.data.calibration import letterbox

    rng = np.random.default_rng(0)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for p in paths:
        cv2.imwrite(str(p), rng.integers(0, 255, (40, 70, 3), dtype=np.uint8))
    reads = []
    real = cv2.imread
    monkeypatch.setattr(calibrate.cv2, "imread", lambda p, *a: reads.append(p) or real(p, *a))
    reader = calibrate.ImageReader(paths, 64)
    passes = []
    for _ in range(3):
        reader.rewind()
        passes.append([feed["images"] for feed in iter(reader.get_next, None)])
    assert len(reads) == 2 and all(len(p) == 2 for p in passes)
    for i, path in enumerate(paths):
        expected = letterbox(real(str(path)), 64)[None]
        assert all(np.array_equal(p[i], expected) and not p[i].flags.writeable for p in passes)
    monkeypatch.setattr(calibrate.ImageReader, "CACHE_BYTES", 0)  # nothing kept: read every time
    small = calibrate.ImageReader(paths, 64)
    for _ in range(2):
        small.rewind()
        assert len([feed for feed in iter(small.get_next, None)]) == 2
    assert len(reads) == 2 + 4
