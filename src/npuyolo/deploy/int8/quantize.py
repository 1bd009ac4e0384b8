"""Static INT8 post-training quantization with ONNX Runtime (QDQ), calibrated on training images only.

`quantize_onnx` takes a `QuantizeOptions` (int8/options.py); a `Quantization` holds one call's steps over its work
folder; the calibration itself (readers, ranges, the sweep's score) is int8/calibrate.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from npuyolo.data.calibration import calibration_images, holdout_images
from npuyolo.deploy.errors import DeployError
from npuyolo.deploy.export import onnx_metadata, set_metadata
from npuyolo.deploy.int8.bias_correction import conv_input_means, correct_biases
from npuyolo.deploy.int8.calibrate import (SWEEP, Calibration, ImageReader, calibration_ranges, minmax_ranges, outputs,
                                           ranges_from, sensitive_nodes, sqnr_db)
from npuyolo.deploy.int8.equalize import equalize
from npuyolo.deploy.int8.options import ENDS, METHOD_NAMES, QuantizeOptions
from npuyolo.deploy.int8.ort_fast import fast_qdq
from npuyolo.deploy.int8.qdq import decode_tail, end_convs, quantized_conv_weights
from npuyolo.npu.profiles import target as load_target
from npuyolo.npu.profiles import targets
from npuyolo.paths import atomic_path

METHODS = dict(zip(METHOD_NAMES, (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile),
                   strict=True))


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


class Quantization:
    """One quantization's steps over its work folder: the prepared FP32 graph (`prepare`), the activation ranges
    (`ranges_for`), one ORT quantization with them (`run`), bias correction (`probe_bias_correction`, `source`), the
    calibration sweep (`sweep`) and the Conv nodes kept float for their drift (`keep_sensitive`)."""

    def __init__(self, fp32: Path, opts: QuantizeOptions, work: Path, reader: ImageReader, meta: dict[str, str],
                 ranges: dict | None):
        self.fp32, self.opts, self.work, self.reader, self.meta = fp32, opts, work, reader, meta
        self.cache = {} if ranges is None else ranges  # calibration label -> tensor -> (rmin, rmax)
        self.prepared = work / "prepared.onnx"  # stays the FP32 reference (sweep, sensitivity)
        # bias correction goes into a copy made per choice of float nodes, because a Conv kept float keeps its own bias
        self.corrected_graph = work / "bias-corrected.onnx"
        self.correction: tuple | None = None
        self.equalized = 0
        self.keep: list[str] = []
        self.tail: list[str] = []
        self.end_nodes: list[str] = []
        self.overrides: dict = {}
        self.initializer_names: set[str] = set()
        self.swept: dict[str, tuple[Path, list[str], Path]] = {}  # sweep label -> (its file, nodes kept float, graph)

    def prepare(self) -> None:
        """ORT's pre-processing, then CLE when asked; the nodes kept float (asked, the float decode tail, float ends)
        and the 16-bit overrides of int16 ends."""
        opts = self.opts
        quant_pre_process(str(self.fp32), str(self.prepared), skip_symbolic_shape=True)
        if opts.cle:  # exact in FP32 (ReLU/LeakyReLU are positively homogeneous); evens per-channel ranges for INT8
            model = onnx.load(str(self.prepared))
            self.equalized = equalize(model)
            onnx.save(model, str(self.prepared))
        graph = onnx.load(str(self.prepared))
        self.initializer_names = {i.name for i in graph.graph.initializer}
        names = {n.name for n in graph.graph.node}
        keep = list(opts.keep_float or [])
        missing = [k for k in keep if k not in names]
        if missing:
            raise DeployError(f"keep_float: no node named {missing[0]!r} in {self.fp32.name}", param="keep_float")
        # the Ultralytics head's decode stays float (the host's part, as on every NPU); the NPU head has none in graph
        self.tail = decode_tail(graph) if self.meta.get("npuyolo_head") == "ultralytics" else []
        keep += [n for n in self.tail if n not in keep]
        self.end_nodes = end_convs(graph) if opts.ends else []
        if opts.ends == "float":
            keep += [n for n in self.end_nodes if n not in keep]
        self.overrides = _int16_overrides(graph, self.end_nodes) if opts.ends == "int16" else {}
        self.keep = keep

    def ranges_for(self, cal: Calibration, graph: Path | None) -> dict[str, tuple[float, float]]:
        """Activation ranges over every calibration image, computed here CALIB_CHUNK images at a time (bounded
        memory); kept per label for the FP32 graph. MinMax of a bias-corrected graph is read from that graph (its
        activations moved) and never kept: the corrected copy is rewritten per choice of float nodes."""
        cache, reader, work, prepared = self.cache, self.reader, self.work, self.prepared
        if cal.method == "minmax" and self.opts.bias_correct and graph is not None:
            return minmax_ranges(graph, reader, work)
        if cal.label not in cache:
            # one pass of the images serves every calibration this quantization may read: the sweep's four, or the
            # one asked and MinMax (run() fills the tensors a histogram leaves without a range from MinMax's)
            wanted = list(SWEEP) if self.opts.sweep else [cal] + ([Calibration("minmax")] if cal.method != "minmax" else [])
            wanted = [c for c in wanted if c.label not in cache]
            if [c.method for c in wanted] == ["minmax"]:
                cache[cal.label] = minmax_ranges(prepared, reader, work)
            else:
                cache.update(calibration_ranges(prepared, reader, work, wanted))
        return cache[cal.label]

    def run(self, exclude: list[str], dst: Path, cal: Calibration, graph: Path | None = None) -> None:
        """`graph` (the prepared FP32 when None) quantized to `dst`, `exclude` kept float.

        Every range is computed here (ranges_for) and handed to quantize_static as its calibration cache, so it runs no
        calibration of its own: its calibrators would hold every image's tensors at once, or (MinMax with
        CalibMaxIntermediateOutputs) drop all but the last chunk, and even one image costs a pass over a graph
        augmented with a ReduceMin/ReduceMax pair per tensor. MinMax ranges give ORT's own scales to the bit."""
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
        found = dict(self.ranges_for(cal, graph))
        if cal.method != "minmax":  # tensors the histogram left without a range get MinMax's, over every image
            for name, (lo, hi) in self.ranges_for(Calibration("minmax"), graph).items():
                if name not in found or not found[name][1] > found[name][0]:
                    found[name] = (lo, hi)
        if self.overrides:
            extra["TensorQuantOverrides"] = {k: [dict(d) for d in v] for k, v in self.overrides.items()}
            extra["UseQDQContribOps"] = True  # 16-bit Q/DQ below opset 21
        # the cache holds every tensor of this graph (our calibrators see the same graph quantize_static quantizes),
        # so ORT never lacks a range; the file is rewritten (atomically, by ORT) before each call
        cache_file = self.work / "ranges.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, {
            name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
            for name, (lo, hi) in found.items() if name not in self.initializer_names}), cache_file)
        with fast_qdq():  # ORT's Q/DQ insertion without its quadratic Python: the same file, byte for byte
            quantize_static(str(graph or self.prepared), str(dst), None, quant_format=QuantFormat.QDQ,
                            per_channel=self.opts.per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=METHODS["minmax"],
                            calibration_cache_path=cache_file, nodes_to_exclude=exclude or None, extra_options=extra)

    def probe_bias_correction(self, cal: Calibration) -> None:
        """With bias correction: the quantized Conv weights (weights round the same way whatever the calibration: one
        probe serves every run) and each Conv's mean input."""
        if not self.opts.bias_correct:
            return
        probe = self.work / "weights-probe.onnx"
        self.run(self.keep, probe, cal)
        wq = quantized_conv_weights(onnx.load(str(probe)))
        probe.unlink(missing_ok=True)
        self.correction = (wq, conv_input_means(onnx.load(str(self.prepared)), self.reader))

    def source(self, float_nodes: list[str]) -> tuple[Path, int]:
        """The graph to quantize: FP32, or a copy whose quantized Convs (not `float_nodes`) are bias-corrected."""
        if self.correction is None:
            return self.prepared, 0

        model = onnx.load(str(self.prepared))
        wq, means = self.correction
        count = correct_biases(model, {k: v for k, v in wq.items() if k not in float_nodes}, means)
        onnx.save(model, str(self.corrected_graph))
        return self.corrected_graph, count

    def sweep(self, held_reader: ImageReader) -> list[dict]:
        """Every calibration of SWEEP, scored by its fidelity to FP32 on the held-back train images."""
        swept: list[dict] = []
        graph, _ = self.source(self.keep)
        reference = outputs(self.prepared, held_reader)
        for cal in SWEEP:
            candidate = self.work / f"sweep-{cal.label}.onnx"
            self.run(self.keep, candidate, cal, graph)
            swept.append({"calibration": cal.label, "method": cal.method, "percentile": cal.percentile,
                          "sqnr_db": sqnr_db(reference, outputs(candidate, held_reader))})
            self.swept[cal.label] = (candidate, list(self.keep), graph)
        return swept

    def build(self, dst: Path, cal: Calibration, graph: Path) -> None:
        """`run(self.keep, dst, cal, graph)`; a sweep candidate quantized from the same graph with the same nodes kept
        float and the same calibration is that file already (quantize_static is deterministic): copied, not redone."""
        built = self.swept.get(cal.label)
        if built is not None and built[1] == self.keep and built[2] == graph and graph != self.corrected_graph:
            shutil.copyfile(built[0], dst)
        else:
            self.run(self.keep, dst, cal, graph)

    def keep_sensitive(self, cal: Calibration, reader: ImageReader) -> list[dict]:
        """The `auto_float` Conv nodes whose INT8 outputs drift most from float, added to the nodes kept float."""
        probe = self.work / "probe.onnx"
        self.run(self.keep, probe, cal, self.source(self.keep)[0])
        chosen = sensitive_nodes(self.prepared, probe, reader, self.opts.auto_float, self.work)
        probe.unlink(missing_ok=True)
        self.keep += [c["node"] for c in chosen if c["node"] not in self.keep]
        return chosen


def subset_ranges(superset: Path, subset: Path, ranges: dict, workdir: Path | None = None) -> dict:
    """The `ranges` dict (as `quantize_onnx` fills it) for FP32 graph `subset`, read from the one filled quantizing
    `superset` with the same calibration images and settings (no CLE, no bias correction), where every tensor `subset`
    calibrates is computed in `superset` too (`calibrate.ranges_from`); empty (`subset` is calibrated itself)
    otherwise. Both graphs go through ORT's pre-processing as `quantize_onnx` prepares them."""
    if not ranges:
        return {}
    with tempfile.TemporaryDirectory(prefix="npuyolo-subset-", dir=workdir) as tmp:
        prepared = [Path(tmp) / "superset.onnx", Path(tmp) / "subset.onnx"]
        for src, dst in zip((superset, subset), prepared, strict=True):
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return ranges_from(prepared[0], prepared[1], ranges, Path(tmp))


def quantize_onnx(fp32: Path, out: Path, data: str | Path, options: QuantizeOptions | None = None, *,
                  ranges: dict | None = None, **given) -> dict:
    """Quantize `fp32` to INT8 QDQ as `options` say (a `QuantizeOptions`, or its fields as keywords: `calib=100`);
    returns what was done (calibration, nodes kept float or 16-bit, sweep scores...).

    `ranges`: a dict the caller keeps per FP32 graph (same file, same `calib`, `seed` and `cle`). The activation
    ranges each calibration reads are stored there and reused by later calls, so quantizing one graph through several
    routes (`ends`) calibrates it once; ORT then gets them as its calibration cache, which gives the scales its own
    MinMax calibration would.
    MinMax (without bias correction), percentile and entropy ranges are shared."""
    opts = QuantizeOptions.of(options, **given)
    opts.check()
    meta = onnx_metadata(fp32)
    if "imgsz" not in meta:
        raise DeployError(f"{fp32}: no npuyolo metadata; quantize an export written by npuyolo")
    imgsz = json.loads(meta["imgsz"])[0]
    paths = calibration_images(data, opts.calib, opts.seed)
    held = holdout_images(data, opts.holdout, paths, opts.seed) if opts.sweep else []
    reader = ImageReader(paths, imgsz)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(out.parent)
    # every intermediate (prepared FP32, bias-corrected copy, probes, sweep candidates) lives in a folder of this call's
    # own: two quantizes of one run at once never share a file, and a failure leaves nothing behind (a killed one: its
    # pid in the name lets the next quantize here remove it)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.quantize-{os.getpid()}-", dir=out.parent) as work_dir:
        q = Quantization(fp32, opts, Path(work_dir), reader, meta, ranges)
        q.prepare()
        chosen_cal = Calibration(opts.method, opts.percentile if opts.method == "percentile" else None)
        q.probe_bias_correction(chosen_cal)
        swept: list[dict] = []
        if opts.sweep:
            swept = q.sweep(ImageReader(held, imgsz))
            best = max(swept, key=lambda r: r["sqnr_db"])
            chosen_cal = Calibration(best["method"], best["percentile"])
        chosen = q.keep_sensitive(chosen_cal, ImageReader(paths[: min(8, len(paths))], imgsz)) if opts.auto_float else []
        graph, corrected = q.source(q.keep)
        settings = {"method": chosen_cal.method, "percentile": chosen_cal.percentile, "calib": len(paths),
                    "per_channel": opts.per_channel, "keep_float": [k for k in q.keep if k not in q.tail],
                    "float_tail": q.tail, "cle_pairs": q.equalized, "bias_corrected": corrected, "ends": opts.ends,
                    "int16_nodes": q.end_nodes if opts.ends == "int16" else [], "sweep": swept, "holdout": len(held)}
        with atomic_path(out) as tmp:  # the INT8 tag and the weights appear under the final name together, or not at all
            q.build(tmp, chosen_cal, graph)
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
