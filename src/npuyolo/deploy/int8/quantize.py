"""Static INT8 post-training quantization with ONNX Runtime (QDQ), calibrated on training images only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from npuyolo.data.calibration import calibration_images, holdout_images, letterbox
from npuyolo.deploy.int8.bias_correction import correct_biases
from npuyolo.deploy.runtime import DeployError, session
from npuyolo.deploy.export import onnx_metadata, set_metadata
from npuyolo.deploy.int8.ort_fast import fast_entropy, fast_qdq
from npuyolo.npu.profiles import target as load_target
from npuyolo.npu.profiles import targets
from npuyolo.paths import atomic_path

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}


class ImageReader(CalibrationDataReader):
    """Feeds letterboxed images to ONNX Runtime's calibrator; `rewind()` makes it reusable."""

    def __init__(self, paths: list[Path], imgsz: int, input_name: str = "images"):
        self.paths, self.imgsz, self.input_name = paths, imgsz, input_name
        self._it: Iterator[Path] = iter(paths)

    def get_next(self) -> dict | None:
        path = next(self._it, None)
        if path is None:
            return None
        image = cv2.imread(str(path))
        if image is None:
            raise DeployError(f"calibration image unreadable: {path}")
        return {self.input_name: letterbox(image, self.imgsz)[None]}

    def rewind(self) -> None:
        self._it = iter(self.paths)


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
    data = histogram_data(model_path, reader, workdir, CalibrationMethod.Entropy,
                          {"symmetric": False, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128})
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
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    with tempfile.TemporaryDirectory(prefix="npuyolo-calib-", dir=workdir) as tmp:
        inferred = Path(tmp) / "model.onnx"
        shutil.copyfile(model_path, inferred)  # ORT writes its shape-inferred copy beside the file it reads
        selector = MinMaxCalibrater(inferred, augmented_model_path=str(Path(tmp) / "unused.onnx"))
        model = selector.model
        tensors, value_infos = selector.select_tensors_to_calibrate(model)
        inputs = {i.name for i in model.graph.input}
        outputs = {o.name for o in model.graph.output}
        model.graph.output.extend(value_infos[t] for t in sorted(tensors) if t not in outputs and t not in inputs)
        augmented = Path(tmp) / "outputs.onnx"
        onnx.save(model, str(augmented))
        del model, selector
        sess = session(augmented, threads, optimize=False)
        names = [o.name for o in sess.get_outputs() if o.name in tensors]
        lows: dict[str, float] = {}
        highs: dict[str, float] = {}
        reader.rewind()
        seen = 0
        while (feed := reader.get_next()) is not None:
            seen += 1
            values = dict(zip(names, sess.run(names, feed), strict=True))
            values.update({k: v for k, v in feed.items() if k in tensors})
            for name, value in values.items():
                if value.size == 0:
                    continue
                # as ORT: ReduceMin/ReduceMax per image (a NaN makes that image's value NaN), then a NaN-ignoring
                # min/max over the images (np.nanmin over the per-image values)
                lo, hi = value.min(), value.max()
                lows[name] = lo if name not in lows else np.fmin(lows[name], lo)
                highs[name] = hi if name not in highs else np.fmax(highs[name], hi)
    reader.rewind()
    if not seen:
        raise DeployError("no calibration image to read ranges from")
    return {name: (float(lows[name]), float(highs[name])) for name in lows}


# what `--sweep` tries; the best on held-back *train* images wins (never val: val is what the drop is measured on)
SWEEP = (Calibration("minmax"), Calibration("percentile", 99.99), Calibration("percentile", 99.999), Calibration("entropy"))
ENDS = {"int16": "int16", "float": "float16"}  # --ends value -> the profile dtype a target must list to allow it


def ends_allowed(value: str, target: str) -> None:
    """`--ends` only where the target's profile lists a wider type than int8 (its `dtypes`, with their sources)."""

    if value not in ENDS:
        raise DeployError(f"ends must be one of {', '.join(ENDS)}, got {value!r}", param="ends")
    profile = load_target(target)
    wanted = ENDS[value]
    if wanted not in profile.dtypes and not (value == "float" and "float32" in profile.dtypes):
        able = sorted(n for n, p in targets().items() if wanted in p.dtypes)
        raise DeployError(f"ends {value}: {target} runs {'/'.join(profile.dtypes)} only (its profile); "
                          f"targets with {wanted}: {', '.join(able) or 'none'}", param="ends")


def _outputs(model_path: Path, reader: ImageReader) -> list[list[np.ndarray]]:

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


_WORK_DIR = re.compile(r"^\..+\.quantize-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]{8}$")
STALE_UNOWNED_S = 86400  # a work folder named before pids were (no owner to ask): stale after a day


def _stale(folder: Path, pid: str | None) -> bool:
    if pid is not None:
        return int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists()
    try:
        return time.time() - folder.stat().st_mtime > STALE_UNOWNED_S
    except OSError:
        return False


def remove_stale_work_dirs(folder: Path) -> list[Path]:
    """Remove the `.<stem>.quantize-<pid>-XXXXXXXX/` work folders in `folder` whose process is gone (a quantize killed
    with SIGKILL never cleans up), and those without a pid older than a day; a running quantize's folder stays."""
    removed = []
    for p in folder.iterdir() if folder.is_dir() else []:
        m = _WORK_DIR.match(p.name)
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        if _stale(p, m["pid"]):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def quantize_onnx(fp32: Path, out: Path, data: str | Path, calib: int = 200, method: str = "minmax", per_channel: bool = False,
                  keep_float: list[str] | None = None, auto_float: int = 0, seed: int = 0, cle: bool = False,
                  percentile: float | None = None, bias_correct: bool = False, ends: str | None = None,
                  sweep: bool = False, holdout: int = 50, ranges: dict | None = None) -> dict:
    """Quantize `fp32` to INT8 QDQ; returns what was done (calibration, nodes kept float or 16-bit, sweep scores...).

    `ranges`: a dict the caller keeps per FP32 graph (same file, same `calib`, `seed` and `cle`). The activation
    ranges each calibration reads are stored there and reused by later calls, so quantizing one graph through several
    routes (`ends`) calibrates it once; ORT then gets them as its calibration cache, which gives the scales its own
    MinMax calibration would.
    MinMax (without bias correction), percentile and entropy ranges are shared."""
    if method not in METHODS:
        raise DeployError(f"method must be one of {', '.join(METHODS)}", param="method")
    if percentile is not None and not (50.0 < percentile <= 100.0):
        raise DeployError(f"percentile must be in (50, 100], got {percentile:g}", param="percentile")
    if ends is not None and ends not in ENDS:
        raise DeployError(f"ends must be one of {', '.join(ENDS)}, got {ends!r}", param="ends")
    if auto_float < 0:
        raise DeployError(f"auto_float must be 0 or more Conv nodes, got {auto_float}", param="auto_float")
    if sweep and holdout < 1:
        raise DeployError(f"holdout must be at least 1 training image, got {holdout}", param="holdout")
    meta = onnx_metadata(fp32)
    if "imgsz" not in meta:
        raise DeployError(f"{fp32}: no npuyolo metadata; quantize an export written by npuyolo")
    imgsz = json.loads(meta["imgsz"])[0]
    paths = calibration_images(data, calib, seed)
    held = holdout_images(data, holdout, paths, seed) if sweep else []
    reader = ImageReader(paths, imgsz)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(out.parent)
    # every intermediate (prepared FP32, bias-corrected copy, probes, sweep candidates) lives in a folder of this call's
    # own: two quantizes of one run at once never share a file, and a failure leaves nothing behind (a killed one: its
    # pid in the name lets the next quantize here remove it)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.quantize-{os.getpid()}-", dir=out.parent) as work_dir:
        work = Path(work_dir)
        prepared = work / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        equalized = 0
        if cle:  # exact in FP32 (ReLU/LeakyReLU are positively homogeneous); evens per-channel ranges for INT8
            from npuyolo.deploy.int8.equalize import equalize

            model = onnx.load(str(prepared))
            equalized = equalize(model)
            onnx.save(model, str(prepared))
        graph = onnx.load(str(prepared))
        initializer_names = {i.name for i in graph.graph.initializer}
        names = {n.name for n in graph.graph.node}
        keep = list(keep_float or [])
        missing = [k for k in keep if k not in names]
        if missing:
            raise DeployError(f"keep_float: no node named {missing[0]!r} in {fp32.name}", param="keep_float")
        from npuyolo.deploy.int8.qdq import decode_tail, end_convs

        # the Ultralytics head's decode stays float (the host's part, as on every NPU); the NPU head has none in graph
        tail = decode_tail(graph) if meta.get("npuyolo_head") == "ultralytics" else []
        keep += [n for n in tail if n not in keep]
        end_nodes = end_convs(graph) if ends else []
        if ends == "float":
            keep += [n for n in end_nodes if n not in keep]
        overrides = _int16_overrides(graph, end_nodes) if ends == "int16" else {}

        cache = {} if ranges is None else ranges  # calibration label -> tensor -> (rmin, rmax)

        def ranges_for(cal: Calibration, graph: Path | None) -> dict[str, tuple[float, float]]:
            """Activation ranges over every calibration image, computed here CALIB_CHUNK images at a time (bounded
            memory); kept per label for the FP32 graph. MinMax of a bias-corrected graph is read from that graph (its
            activations moved) and never kept: the corrected copy is rewritten per choice of float nodes."""
            if cal.method == "minmax" and bias_correct and graph is not None:
                return minmax_ranges(graph, reader, work)
            if cal.label not in cache:
                if cal.method == "entropy":
                    cache[cal.label] = entropy_ranges(prepared, reader, work)
                elif cal.method == "percentile":  # a sweep reads all its percentiles from one set of histograms
                    wanted = [cal.percentile]
                    if sweep and cal.percentile is not None:
                        wanted += [c.percentile for c in SWEEP if c.method == "percentile" and c.label not in cache
                                   and c.percentile != cal.percentile]
                    for p, found in percentiles_ranges(prepared, reader, work, wanted).items():
                        cache[Calibration("percentile", p).label] = found
                else:
                    cache[cal.label] = minmax_ranges(prepared, reader, work)
            return cache[cal.label]

        def run(exclude: list[str], dst: Path, cal: Calibration, graph: Path | None = None) -> None:
            # Every range is computed here (ranges_for) and handed to quantize_static as its calibration cache, so it
            # runs no calibration of its own: its calibrators would hold every image's tensors at once, or (MinMax
            # with CalibMaxIntermediateOutputs) drop all but the last chunk, and even one image costs a pass over a
            # graph augmented with a ReduceMin/ReduceMax pair per tensor. MinMax ranges give ORT's own scales to the bit.
            extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
            found = dict(ranges_for(cal, graph))
            if cal.method != "minmax":  # tensors the histogram left without a range get MinMax's, over every image
                for name, (lo, hi) in ranges_for(Calibration("minmax"), graph).items():
                    if name not in found or not found[name][1] > found[name][0]:
                        found[name] = (lo, hi)
            if overrides:
                extra["TensorQuantOverrides"] = {k: [dict(d) for d in v] for k, v in overrides.items()}
                extra["UseQDQContribOps"] = True  # 16-bit Q/DQ below opset 21
            # the cache holds every tensor of this graph (our calibrators see the same graph quantize_static quantizes),
            # so ORT never lacks a range; the file is rewritten (atomically, by ORT) before each call
            cache_file = work / "ranges.json"
            save_tensors_data(TensorsData(CalibrationMethod.MinMax, {
                name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                for name, (lo, hi) in found.items() if name not in initializer_names}), cache_file)
            with fast_qdq():  # ORT's Q/DQ insertion without its quadratic Python: the same file, byte for byte
                quantize_static(str(graph or prepared), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=METHODS["minmax"], calibration_cache_path=cache_file,
                                nodes_to_exclude=exclude or None, extra_options=extra)

        chosen_cal = Calibration(method, percentile if method == "percentile" else None)
        # `prepared` stays the FP32 reference (sweep, sensitivity); bias correction goes into a copy made per choice of
        # float nodes, because a Conv kept float must keep its own bias
        corrected_graph = work / "bias-corrected.onnx"
        correction = None
        if bias_correct:  # weights round the same way whatever the calibration: one probe serves every run below
            from npuyolo.deploy.int8.bias_correction import conv_input_means
            from npuyolo.deploy.int8.qdq import quantized_conv_weights

            probe = work / "weights-probe.onnx"
            run(keep, probe, chosen_cal)
            wq = quantized_conv_weights(onnx.load(str(probe)))
            probe.unlink(missing_ok=True)
            correction = (wq, conv_input_means(onnx.load(str(prepared)), reader))

        def source(float_nodes: list[str]) -> tuple[Path, int]:
            """The graph to quantize: FP32, or a copy whose quantized Convs (not `float_nodes`) are bias-corrected."""
            if correction is None:
                return prepared, 0

            model = onnx.load(str(prepared))
            wq, means = correction
            count = correct_biases(model, {k: v for k, v in wq.items() if k not in float_nodes}, means)
            onnx.save(model, str(corrected_graph))
            return corrected_graph, count

        swept: list[dict] = []
        if sweep:
            graph, _ = source(keep)
            with tempfile.TemporaryDirectory(prefix="sweep-", dir=work) as tmp:
                held_reader = ImageReader(held, imgsz)
                reference = _outputs(prepared, held_reader)
                for cal in SWEEP:
                    candidate = Path(tmp) / f"{cal.label}.onnx"
                    run(keep, candidate, cal, graph)
                    swept.append({"calibration": cal.label, "method": cal.method, "percentile": cal.percentile,
                                  "sqnr_db": sqnr_db(reference, _outputs(candidate, held_reader))})
            best = max(swept, key=lambda r: r["sqnr_db"])
            chosen_cal = Calibration(best["method"], best["percentile"])
        chosen: list[dict] = []
        if auto_float:
            probe = work / "probe.onnx"
            run(keep, probe, chosen_cal, source(keep)[0])
            chosen = sensitive_nodes(prepared, probe, ImageReader(paths[: min(8, len(paths))], imgsz), auto_float, work)
            probe.unlink(missing_ok=True)
            keep += [c["node"] for c in chosen if c["node"] not in keep]
        graph, corrected = source(keep)
        settings = {"method": chosen_cal.method, "percentile": chosen_cal.percentile, "calib": len(paths), "per_channel": per_channel,
                    "keep_float": [k for k in keep if k not in tail], "float_tail": tail, "cle_pairs": equalized, "bias_corrected": corrected, "ends": ends,
                    "int16_nodes": end_nodes if ends == "int16" else [], "sweep": swept, "holdout": len(held)}
        with atomic_path(out) as tmp:  # the INT8 tag and the weights appear under the final name together, or not at all
            run(keep, tmp, chosen_cal, graph)
            model = onnx.load(str(tmp))
            props = {p.key: p.value for p in model.metadata_props} | meta | {"npuyolo_quant": json.dumps(settings)}
            set_metadata(model, props)
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
        return {"int8": str(out), "calibration_images": [str(p) for p in paths], "holdout_images": [str(p) for p in held],
                "auto_float": chosen, "calibration": chosen_cal.label, **settings}


def _int16_overrides(graph: onnx.ModelProto, convs: list[str]) -> dict:
    """16-bit activations in and out of the end Convs, 16-bit weights (ORT TensorQuantOverrides)."""
    inits = {i.name for i in graph.graph.initializer}
    overrides: dict[str, list[dict]] = {}
    for node in graph.graph.node:
        if node.name not in convs:
            continue
        overrides[node.input[1]] = [{"quant_type": QuantType.QInt16, "symmetric": True}]
        for t in (node.input[0], node.output[0]):
            if t not in inits:
                overrides[t] = [{"quant_type": QuantType.QUInt16}]
    return overrides
