"""Calibration: the images an INT8 graph is calibrated on, fed to ONNX Runtime, and the activation ranges read from
them (MinMax in one pass of npuyolo's own, ORT's percentile and entropy histograms in bounded memory); the fidelity to
FP32 that the calibration sweep ranks by; the Conv nodes that drift most from float."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from npuyolo.data.calibration import letterbox
from npuyolo.deploy.errors import DeployError
from npuyolo.deploy.int8.ort_fast import fast_entropy, fast_entropy_collector, fast_histogram_collector
from npuyolo.deploy.runtime import session


class ImageReader(CalibrationDataReader):
    """Feeds letterboxed images to ONNX Runtime's calibrator; `rewind()` makes it reusable.

    A quantization reads its images several times (a sweep: the calibration pass, then the held-back images once per
    candidate): each is decoded and letterboxed once per reader and kept, read-only, up to CACHE_BYTES in all."""

    CACHE_BYTES = 256 << 20

    def __init__(self, paths: list[Path], imgsz: int, input_name: str = "images"):
        self.paths, self.imgsz, self.input_name = paths, imgsz, input_name
        self._it: Iterator[int] = iter(range(len(paths)))
        self._kept: dict[int, np.ndarray] = {}
        self._kept_bytes = 0

    def get_next(self) -> dict | None:
        i = next(self._it, None)
        if i is None:
            return None
        image = self._kept.get(i)
        if image is None:
            path = self.paths[i]
            decoded = cv2.imread(str(path))
            if decoded is None:
                raise DeployError(f"calibration image unreadable: {path}")
            image = letterbox(decoded, self.imgsz)[None]
            image.flags.writeable = False
            if self._kept_bytes + image.nbytes <= self.CACHE_BYTES:
                self._kept[i] = image
                self._kept_bytes += image.nbytes
        return {self.input_name: image}

    def rewind(self) -> None:
        self._it = iter(range(len(self.paths)))


def sensitive_nodes(fp32: Path, int8: Path, reader: ImageReader, count: int, workdir: Path) -> list[dict]:
    """The `count` Conv nodes whose quantized outputs drift most from float (lowest SQNR), per ORT's QDQ debugger."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    aug_f, aug_q = workdir / "debug_fp32.onnx", workdir / "debug_int8.onnx"
    acts = ["Conv", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Mul", "HardSwish"]
    modify_model_output_intermediate_tensors(fp32, aug_f, op_types_for_saving=acts)
    modify_model_output_intermediate_tensors(int8, aug_q, op_types_for_saving=[*acts, "DequantizeLinear"])
    reader.rewind()
    float_acts = collect_activations(str(aug_f), reader)
    reader.rewind()
    quant_acts = collect_activations(str(aug_q), reader)
    errors = compute_activation_error(create_activation_matching(quant_acts, float_acts))
    nodes = list(onnx.load(str(fp32)).graph.node)
    made_by = {out: n for n in nodes for out in n.output}

    def conv_of(tensor: str):
        """The Conv behind a tensor: itself, or through the activation the quantizer fused after it."""
        node = made_by.get(tensor)
        if node is not None and node.op_type != "Conv" and node.input:
            node = made_by.get(node.input[0]) if node.op_type in ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSwish", "Mul") else None
        return node.name if node is not None and node.op_type == "Conv" else None

    producer = {t: conv_of(t) for t in errors if conv_of(t)}
    ranked = sorted(((e["xmodel_err"], t) for t, e in errors.items() if t in producer and "xmodel_err" in e))
    seen, unique = set(), []
    for s, t in ranked:
        if producer[t] not in seen:
            seen.add(producer[t])
            unique.append((s, t))
    ranked = unique
    for f in (aug_f, aug_q):
        f.unlink(missing_ok=True)
    return [{"node": producer[t], "tensor": t, "sqnr_db": float(s)} for s, t in ranked[:count]]


@dataclass(frozen=True)
class Calibration:
    """How activation ranges are read from the calibration images (ORT's calibrators)."""

    method: str = "minmax"
    percentile: float | None = None  # percentile only: the share of values the range keeps, e.g. 99.999

    @property
    def label(self) -> str:
        return f"percentile{self.percentile:g}" if self.method == "percentile" else self.method


ENTROPY_BINS = 512  # KL histogram bins (128 of them the INT8 levels); ORT's threshold search is Python loops, 2048 bins cost minutes
# images whose intermediate tensors ONNX Runtime's calibrators hold at once: its histogram calibrators (percentile,
# entropy) keep every image's tensors until the reader ends (about 100 MB an image for YOLO11n at 640 px: 200
# calibration images were 20 GB, and the process was killed for memory on a 24 GB machine), so they are fed in chunks
CALIB_CHUNK = 16


class ChunkReader(CalibrationDataReader):
    """At most `size` images of `reader`, then the end; `exhausted` once `reader` itself has ended."""

    def __init__(self, reader: CalibrationDataReader, size: int):
        self.reader, self.size, self.count, self.exhausted = reader, size, 0, False

    def get_next(self) -> dict | None:
        if self.count >= self.size or self.exhausted:
            return None
        item = self.reader.get_next()
        if item is None:
            self.exhausted = True
            return None
        self.count += 1
        return item


@contextlib.contextmanager
def histogram_calibrator(model_path: Path, reader: CalibrationDataReader, workdir: Path, method: CalibrationMethod,
                         options: dict, chunk: int | None = None):
    """ORT's histogram calibrator after collecting every image, `chunk` images at a time (its histograms merge across
    calls), in a temporary folder of `workdir` that lives as long as the context."""
    from onnxruntime.quantization.calibrate import create_calibrator

    chunk = chunk or CALIB_CHUNK
    with tempfile.TemporaryDirectory(prefix="npuyolo-calib-", dir=workdir) as tmp:
        cal = create_calibrator(str(model_path), None, str(Path(tmp) / "augmented.onnx"), calibrate_method=method,
                                extra_options=options)
        reader.rewind()
        while True:
            part = ChunkReader(reader, chunk)
            try:
                cal.collect_data(part)
            except ValueError:  # ORT's "No data is collected": the images ended exactly at a chunk's border
                if part.count == 0:
                    break
                raise
            if part.exhausted:
                break
        reader.rewind()
        yield cal


def histogram_data(model_path: Path, reader: CalibrationDataReader, workdir: Path, method: CalibrationMethod,
                   options: dict, chunk: int | None = None):
    """ORT's histogram calibrator fed `chunk` images at a time (its histograms merge across calls); its TensorsData."""
    with histogram_calibrator(model_path, reader, workdir, method, options, chunk) as cal:
        fast_entropy(cal)  # ORT's threshold search, without its per-bin Python loops: the same thresholds
        with contextlib.redirect_stdout(sys.stderr):  # ORT prints bin counts; stdout may carry --json
            return cal.compute_data()


def entropy_ranges(model_path: Path, reader: CalibrationDataReader, workdir: Path) -> dict[str, tuple[float, float]]:
    """Tensor -> (rmin, rmax) by KL-divergence calibration with enough bins to mean something.

    `quantize_static(calibrate_method=Entropy)` builds its calibrator with 128 bins and 128 quantized bins, so its
    only candidate threshold is the full range: measured here, its scales equal MinMax's to the last bit. ORT's own
    `create_calibrator` takes the bin counts, so we calibrate with it and hand the ranges over as ORT's calibration
    cache. The KL
    threshold is symmetric around 0; it is clipped to the values actually seen, so a ReLU tensor keeps [0, t].
    """
    return _entropy_read(histogram_data(model_path, reader, workdir, CalibrationMethod.Entropy,
                                        {"symmetric": False, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128}))


def _entropy_read(data) -> dict[str, tuple[float, float]]:
    """Entropy TensorsData -> tensor -> (rmin, rmax), clipped to the values the histogram saw and widened to hold 0."""
    ranges = {}
    for name, td in data.data.items():
        lo, hi = (float(v) for v in td.range_value)
        hist, edges = np.asarray(td.hist), np.asarray(td.bins, np.float64)  # ORT stores the edges as `bins`
        seen = np.nonzero(hist)[0]
        if seen.size:  # the histogram spans [-max|x|, max|x|]; its occupied bins give the values really seen
            lo, hi = max(lo, float(edges[seen[0]])), min(hi, float(edges[seen[-1] + 1]))
        ranges[name] = (min(lo, 0.0), max(hi, 0.0))
    return ranges


def percentile_ranges(model_path: Path, reader: CalibrationDataReader, workdir: Path, percentile: float | None,
                      chunk: int | None = None) -> dict[str, tuple[float, float]]:
    """Tensor -> (rmin, rmax) as `quantize_static(calibrate_method=Percentile)` computes them, in bounded memory."""
    return percentiles_ranges(model_path, reader, workdir, [percentile], chunk)[percentile]


def percentiles_ranges(model_path: Path, reader: CalibrationDataReader, workdir: Path, percentiles: list[float | None],
                       chunk: int | None = None) -> dict[float | None, dict[str, tuple[float, float]]]:
    """`percentile_ranges` for several percentiles from ONE pass over the images: ORT's percentile histograms do not
    depend on the percentile (only its read-out, `compute_percentile`, does), so the sweep's two percentiles share
    them. None (ORT's default percentile) only alone."""
    if None in percentiles and len(percentiles) > 1:
        raise ValueError("ORT's default percentile (None) is read alone")
    options = {} if percentiles[0] is None else {"percentile": percentiles[0]}
    found = {}
    with histogram_calibrator(model_path, reader, workdir, CalibrationMethod.Percentile, options, chunk) as cal:
        for p in percentiles:
            if p is not None and cal.collector is not None:
                cal.collector.percentile = p
            with contextlib.redirect_stdout(sys.stderr):  # ORT prints bin counts; stdout may carry --json
                data = cal.compute_data()
            found[p] = {name: tuple(float(v) for v in td.range_value) for name, td in data.data.items()}
    return found


def minmax_ranges(model_path: Path, reader: CalibrationDataReader, workdir: Path,
                  threads: int | None = None) -> dict[str, tuple[float, float]]:
    """Tensor -> (rmin, rmax) over EVERY calibration image: the ranges ORT's MinMax calibrator (asymmetric, no moving
    average, as `quantize_static` builds it) computes, to the bit, in one pass that holds one image's tensors at a time.

    ORT's calibrator adds a ReduceMin/ReduceMax pair per tensor (its graph surgery is quadratic Python: a scan of
    every node per inserted node) and runs that graph with every optimisation off. Here the same tensors (chosen by
    ORT's own `select_tensors_to_calibrate` on ORT's shape-inferred model) become graph outputs of a session with the
    same optimisation level, and numpy takes their min and max: min and max are exact, so the values are ORT's.
    Not through ORT's `max_intermediate_outputs` chunking either: there (ORT 1.32) a full chunk is dropped without
    being merged (microsoft/onnxruntime#18893). `threads`: ONNX Runtime's intra-op threads (None: every core)."""
    return calibration_ranges(model_path, reader, workdir, [Calibration("minmax")], threads=threads)["minmax"]


def calibration_ranges(model_path: Path, reader: CalibrationDataReader, workdir: Path, wanted: list[Calibration],
                       chunk: int | None = None, threads: int | None = None) -> dict[str, dict[str, tuple[float, float]]]:
    """Calibration label -> tensor -> (rmin, rmax), for every calibration in `wanted`, from ONE pass of the images
    through the graph (the sweep's four calibrations were three passes: MinMax, ORT's percentile calibrator, ORT's
    entropy calibrator, each running the graph with every tensor an output).

    Each range is the one its own reader gives, to the bit: MinMax as `minmax_ranges` says; percentile and entropy
    from ORT's own `HistogramCollector`, built with the settings its `PercentileCalibrater` (ORT's defaults, as
    `percentiles_ranges`) and its `EntropyCalibrater` (as `entropy_ranges`) give it, fed the same tensors (the graph
    outputs of a session with every optimisation off, as ORT's calibrators run) `chunk` images at a time, as
    `histogram_calibrator` feeds ORT's calibrators, so its histograms merge in the same steps."""
    from onnxruntime.quantization.calibrate import HistogramCollector, MinMaxCalibrater, TensorsData

    chunk = chunk or CALIB_CHUNK
    percentiles = [c.percentile for c in wanted if c.method == "percentile"]
    if None in percentiles and len(percentiles) > 1:
        raise ValueError("ORT's default percentile (None) is read alone")
    # ORT's PercentileCalibrater as create_calibrator builds it (symmetric, 2048 bins; the percentile only reads out),
    # and its EntropyCalibrater with entropy_ranges' bins
    collectors = {}
    if percentiles:
        collectors["percentile"] = HistogramCollector("percentile", True, 2048, 2048,
                                                      99.999 if percentiles[0] is None else percentiles[0], "same")
        fast_histogram_collector(collectors["percentile"])  # the same histograms, merged without numpy's sort
    if any(c.method == "entropy" for c in wanted):
        collectors["entropy"] = HistogramCollector("entropy", False, ENTROPY_BINS, 128, 99.999, "same")
    with tempfile.TemporaryDirectory(prefix="npuyolo-calib-", dir=workdir) as tmp:
        model, tensors, value_infos = calibrated_tensors(model_path, Path(tmp))
        inputs = {i.name for i in model.graph.input}
        outputs = {o.name for o in model.graph.output}
        model.graph.output.extend(value_infos[t] for t in sorted(tensors) if t not in outputs and t not in inputs)
        augmented = Path(tmp) / "outputs.onnx"
        onnx.save(model, str(augmented))
        del model
        sess = session(augmented, threads, optimize=False)
        names = [o.name for o in sess.get_outputs() if o.name in tensors]
        lows: dict[str, float] = {}
        highs: dict[str, float] = {}
        held: dict[str, list[np.ndarray]] = {}  # this chunk's tensors, for the histograms
        refused: dict[str, set[str]] = {key: set() for key in collectors}  # tensors a collector cannot histogram

        def collect() -> None:
            if held:
                with contextlib.redirect_stdout(sys.stderr):  # ORT prints progress; stdout may carry --json
                    for key, collector in collectors.items():
                        _collect(collector, held, refused[key])
                held.clear()

        reader.rewind()
        seen = 0
        while (feed := reader.get_next()) is not None:
            seen += 1
            values = dict(zip(names, sess.run(names, feed), strict=True))
            values.update({k: v for k, v in feed.items() if k in tensors})
            for name, value in values.items():
                if collectors:
                    held.setdefault(name, []).append(value)
                if value.size == 0:
                    continue
                # as ORT: ReduceMin/ReduceMax per image (a NaN makes that image's value NaN), then a NaN-ignoring
                # min/max over the images (np.nanmin over the per-image values)
                lo, hi = value.min(), value.max()
                lows[name] = lo if name not in lows else np.fmin(lows[name], lo)
                highs[name] = hi if name not in highs else np.fmax(highs[name], hi)
            if seen % chunk == 0:
                collect()
        collect()
    reader.rewind()
    if not seen:
        raise DeployError("no calibration image to read ranges from")
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for cal in wanted:
        if cal.method == "minmax":
            found[cal.label] = {name: (float(lows[name]), float(highs[name])) for name in lows}
        elif cal.method in collectors and not collectors[cal.method].histogram_dict:  # all refused: MinMax serves
            found[cal.label] = {}
        elif cal.method == "percentile":
            collector = collectors["percentile"]
            if cal.percentile is not None:
                collector.percentile = cal.percentile
            with contextlib.redirect_stdout(sys.stderr):
                data = TensorsData(CalibrationMethod.Percentile, collector.compute_collection_result())
            found[cal.label] = {name: tuple(float(v) for v in td.range_value) for name, td in data.data.items()}
        elif cal.method == "entropy":
            collector = collectors["entropy"]
            fast_entropy_collector(collector)
            with contextlib.redirect_stdout(sys.stderr):
                found[cal.label] = _entropy_read(TensorsData(CalibrationMethod.Entropy,
                                                             collector.compute_collection_result()))
        else:
            raise ValueError(f"unknown calibration method {cal.method!r}")
    return found


def calibrated_tensors(model_path: Path, tmp: Path):
    """(ORT's shape-inferred model, the tensors its MinMax calibrator calibrates, their value infos): ORT's own
    `select_tensors_to_calibrate`, on a copy in `tmp` (ORT writes its inferred copy beside the file it reads)."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    inferred = tmp / "model.onnx"
    shutil.copyfile(model_path, inferred)
    selector = MinMaxCalibrater(inferred, augmented_model_path=str(tmp / "unused.onnx"))
    model = selector.model
    tensors, value_infos = selector.select_tensors_to_calibrate(model)
    return model, tensors, value_infos


def tensor_signatures(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name -> a hash of how it is computed: its node's type, domain and attributes and its inputs' hashes,
    down to the graph inputs (by name and type) and the initializers' bytes. Two tensors with one hash are computed
    by the same operations from the same input: the same values in any graph that holds them."""
    import hashlib

    def digest(*parts) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(p if isinstance(p, bytes) else str(p).encode())
            h.update(b"\0")
        return h.hexdigest()

    sig: dict[str, str] = {}
    for i in model.graph.input:
        sig[i.name] = digest("input", i.name, i.type.SerializeToString())
    for t in model.graph.initializer:
        nameless = onnx.TensorProto()
        nameless.CopyFrom(t)
        nameless.name = ""
        sig[t.name] = digest("initializer", nameless.SerializeToString())
    for n in model.graph.node:  # ONNX keeps nodes in topological order
        attributes = [part for a in sorted(n.attribute, key=lambda a: a.name) for part in (a.name, a.SerializeToString())]
        inputs = [sig.get(x, f"unknown:{x}") if x else "" for x in n.input]
        node = digest("node", n.domain, n.op_type, len(attributes), *attributes, len(inputs), *inputs)
        for k, out in enumerate(n.output):
            if out:
                sig[out] = digest(node, k)
    return sig


def ranges_from(superset: Path, subset: Path, ranges: dict[str, dict[str, tuple[float, float]]],
                workdir: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """The calibration ranges of graph `subset` read from those of graph `superset` (`ranges`: label -> tensor ->
    range, as `calibration_ranges` gives them for `superset`), without running `subset`: every tensor `subset`
    calibrates is computed in `superset` by the same operations from the same inputs (`tensor_signatures`), so ORT
    computes the same values for it there, and every range read from them (MinMax, a percentile's or entropy's
    histograms, merged over the same chunks of the same images) is the same. A graph with the class sigmoid and the
    same graph without it (its logits twin) are such a pair. Empty (calibrate `subset` itself) when any tensor of
    `subset` has no twin in `superset`, or `ranges` holds no MinMax. Both paths are the graphs as calibrated (ORT's
    pre-processing done)."""
    if "minmax" not in ranges:
        return {}
    with tempfile.TemporaryDirectory(prefix="npuyolo-calib-", dir=workdir) as tmp:
        model, tensors, _ = calibrated_tensors(subset, Path(tmp))
    mine = tensor_signatures(model)
    theirs: dict[str, str] = {}
    for name, signature in tensor_signatures(onnx.load(str(superset))).items():
        theirs.setdefault(signature, name)
    twin = {t: theirs.get(mine.get(t, "")) for t in tensors}
    if not all(twin[t] is not None and twin[t] in ranges["minmax"] for t in tensors):
        return {}
    return {label: {t: found[twin[t]] for t in tensors if twin[t] in found} for label, found in ranges.items()}


def _collect(collector, held: dict[str, list[np.ndarray]], refused: set[str]) -> None:
    """`collector.collect(held)` (ORT's HistogramCollector), less the tensors whose histogram numpy cannot make.

    numpy refuses to split a range narrower than the float32 steps it would need into the collector's bins ("Too many
    bins for data range. Cannot create 2048 finite-sized bins"): an untrained model's box outputs lie within a few
    steps of one value (1.99997..2.00003), and ORT's own percentile calibrator stops there with that error. Such a
    tensor is left out of this collector for good (a later chunk alone would give it a histogram of part of the
    images) and gets no range from it; the quantization gives it MinMax's, as it does every tensor a histogram leaves
    without a range (Quantization.run). When no tensor is refused this is `collector.collect(held)`, nothing more."""
    feed = {k: v for k, v in held.items() if k not in refused} if refused else held
    before = dict(collector.histogram_dict)  # ORT replaces a tensor's entry, never changes it in place
    try:
        collector.collect(feed)
        return
    except ValueError:
        collector.histogram_dict = before
    with contextlib.redirect_stdout(io.StringIO()):  # ORT's progress line, once per tensor here
        for name, arrays in feed.items():
            try:
                collector.collect({name: arrays})
            except ValueError as e:
                if "Too many bins" not in str(e):  # numpy's words; any other refusal is not this one
                    raise
                refused.add(name)
                collector.histogram_dict.pop(name, None)


# what `--sweep` tries; the best on held-back *train* images wins (never val: val is what the drop is measured on)
SWEEP = (Calibration("minmax"), Calibration("percentile", 99.99), Calibration("percentile", 99.999), Calibration("entropy"))
def outputs(model_path: Path, reader: ImageReader) -> list[list[np.ndarray]]:

    sess = session(model_path)
    reader.rewind()
    found = []
    while (feed := reader.get_next()) is not None:
        found.append(sess.run(None, feed))
    reader.rewind()
    return found


def sqnr_db(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """Mean over outputs of 10 log10(signal / noise) against FP32: how faithfully INT8 reproduces every head output.

    Chosen over mAP on the held-back images: the model has trained on them, so their mAP rewards noise that happens
    to help there; fidelity to the FP32 model is what a calibration can promise.
    """
    per_output = []
    for k in range(len(reference[0])):
        ref = np.concatenate([r[k].ravel() for r in reference]).astype(np.float64)
        got = np.concatenate([c[k].ravel() for c in candidate]).astype(np.float64)
        noise = float(((ref - got) ** 2).sum())
        per_output.append(10 * np.log10(float((ref ** 2).sum()) / noise) if noise > 0 else 99.0)
    return float(np.mean(per_output))
