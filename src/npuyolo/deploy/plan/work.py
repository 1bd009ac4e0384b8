"""The plan's heavy half: every INT8 file built and every ONNX file scored, in worker processes sized to the cores.

A plan's candidates are independent once the calibration sweep has chosen its calibration: each FP32 graph's INT8
routes share one set of activation ranges, and each file is scored alone. The sweep runs first (its choice serves every
graph); then the graphs' INT8 routes and the scoring of every file fill the workers, the FP32 files from the start.
Nothing here touches the registry: the results come back to the parent, which records them.

Results do not depend on the number of workers (`tests/test_plan_work.py`): every ONNX Runtime session keeps ORT's
default thread count (MLAS splits a Conv's sums by it, so the count changes the last bits), and the workers only stop
ORT's idle threads from spinning. Workers are forked from a forkserver that imported this module once (Linux; elsewhere
everything runs in the calling process), never from the parent, whose threads' locks a forked child would inherit.

A second plan of the same model reuses what the first built (`plan-cache.json` in the plan folder): an INT8 file is
kept under a key of everything its bytes depend on (the FP32 graph's bytes, the route, the calibration, the content of
every calibration and held-back image, and `environment()`: npuyolo's source, the libraries, the machine), and a score
under the scored file's bytes, the val images' and labels' content and the threshold. Any change to one of them builds
and scores again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from npuyolo.data.calibration import calibration_images, holdout_images
from npuyolo.deploy.eval import evaluate
from npuyolo.deploy.bundle.build import npuyolo_version
from npuyolo.deploy.eval.compare import val_fingerprint
from npuyolo.deploy.runtime import DeployError
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.deploy.int8.calibrate import Calibration as IntCalibration
from npuyolo.deploy.int8.calibrate import tensor_signatures
from npuyolo.deploy.int8.quantize import METHODS, quantize_onnx, subset_ranges
from npuyolo.deploy.plan.pool import _Inline, _usable_cores, default_workers, worker_pool
from npuyolo.errors import NpuyoloError
from npuyolo.paths import read_regular_file, safe_join, sha256_file, write_bytes, write_text
from npuyolo.stats.matched import StatsError, load_stats, save_stats

__all__ = ["CACHE_FILE", "Calibration", "PlanFiles", "QuantizeSettings", "build_files", "default_workers", "environment",
           "int8_path", "route_ends", "score_file", "stats_name", "worker_pool"]


@dataclass(frozen=True)
class QuantizeSettings:
    """How every INT8 file of one plan is calibrated (one calibration for all of them): the data set and the quantizer's
    own options (calib, holdout, seed, sweep: `QuantizeOptions`, where each is stated once)."""

    data: str
    options: QuantizeOptions

    @property
    def calib(self) -> int:
        return self.options.calib

    @property
    def holdout(self) -> int:
        return self.options.holdout

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def sweep(self) -> bool:
        return self.options.sweep


@dataclass(frozen=True)
class Calibration:
    method: str
    percentile: float | None
    label: str


@dataclass
class PlanFiles:
    """What the workers made: INT8 file per (FP32 graph, route), the calibration chosen, each file's scores."""

    int8: dict[tuple[Path, str], Path] = field(default_factory=dict)
    calibration: Calibration | None = None
    scores: dict[Path, tuple[dict, dict, object]] = field(default_factory=dict)  # path -> (at 0.001, at conf, stats)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # busy seconds per stage, all workers


def stats_name(path: Path) -> str:
    """Where a scored file's per-image statistics are kept, relative to the plan folder."""
    return f"stats/{path.stem}.npz"


def int8_path(folder: Path, fp32: Path, route: str) -> Path:
    return folder / f"{fp32.stem}-{route}.onnx"


def route_ends(route: str) -> str | None:
    """`int8-ends-int16` -> `int16`; `int8` -> None."""
    return route.rsplit("-", 1)[1] if route.startswith("int8-ends-") else None


def score_file(path: Path, data: str, conf: float) -> tuple[dict, dict, object]:
    """Accuracy on val at mAP's usual threshold (0.001) and at the deployment threshold, from one forward pass, and the
    per-image statistics at 0.001 (the accuracy guard's interval)."""
    predict, meta = evaluate.onnx_predictor(path)
    seen: dict[str, object] = {}

    def replay(images):  # the second validation sees the same images in the same order: reuse the outputs
        key = hashlib.sha1(images.numpy().tobytes()).hexdigest()
        if key not in seen:
            seen[key] = predict(images)
        return seen[key]

    names = {int(k): v for k, v in json.loads(meta["names"]).items()}
    imgsz = json.loads(meta["imgsz"])[0]
    everything, stats = evaluate.validate_matched(replay, data, imgsz, names, conf=0.001)
    at_conf, _ = evaluate.validate_matched(replay, data, imgsz, names, conf=conf)
    return everything, at_conf, stats


# -- the jobs (run in a worker, or inline with one worker) -----------------------------------------------------------
def _sweep_job(fp32: Path, folder: Path, s: QuantizeSettings) -> tuple[Calibration, dict, Path, float]:
    t = time.perf_counter()
    ranges: dict = {}
    out = int8_path(folder, fp32, "int8")
    info = quantize_onnx(fp32, out, s.data, calib=s.calib, sweep=True, holdout=s.holdout, seed=s.seed, ranges=ranges)
    return Calibration(info["method"], info["percentile"], info["calibration"]), ranges, out, time.perf_counter() - t


def _quantize_job(fp32: Path, routes: list[str], folder: Path, s: QuantizeSettings, cal: Calibration, ranges: dict,
                  subsets: list[tuple[Path, list[str]]] = ()) -> tuple[dict[tuple[Path, str], Path], float]:
    """`fp32`'s routes, then each of `subsets` (graphs whose every calibrated tensor `fp32` computes too: its logits
    twin) with the ranges `fp32`'s calibration found, read, not run again (`subset_ranges`; the same files)."""
    t = time.perf_counter()
    made = {}
    for graph, todo, graph_ranges in [(fp32, routes, ranges)] + [(g, r, None) for g, r in subsets]:
        if graph_ranges is None:
            graph_ranges = subset_ranges(fp32, graph, ranges, folder)
        for route in todo:
            out = int8_path(folder, graph, route)
            quantize_onnx(graph, out, s.data, calib=s.calib, method=cal.method, percentile=cal.percentile,
                          ends=route_ends(route), seed=s.seed, ranges=graph_ranges)
            made[(graph, route)] = out
    return made, time.perf_counter() - t


def subsets_of(graphs: list[Path]) -> dict[Path, list[Path]]:
    """Each graph -> the graphs whose every tensor it computes too (`calibrate.tensor_signatures`: the same operations
    on the same inputs), each graph under the largest one that holds it; the others map to []."""
    signatures = {g: set(tensor_signatures(onnx.load(str(g), load_external_data=False)).values()) for g in graphs}
    groups: dict[Path, list[Path]] = {}
    for g in sorted(graphs, key=lambda g: -len(signatures[g])):  # stable: equal sizes keep the plan's order
        holder = next((r for r in groups if signatures[g] <= signatures[r]), None)
        if holder is None:
            groups[g] = []
        else:
            groups[holder].append(g)
    return groups


def _score_job(path: Path, data: str, conf: float) -> tuple[tuple[dict, dict, object], float]:
    t = time.perf_counter()
    return score_file(path, data, conf), time.perf_counter() - t


CACHE_FILE = "plan-cache.json"
FIGURES = ("precision", "recall", "map50", "map50_95")


@functools.cache
def environment() -> dict:
    """What a plan's files and scores depend on besides their inputs: npuyolo's own code (a hash of its sources, so a
    changed line in a development checkout is a miss), the libraries that quantize, score and serialise, and the
    machine (MLAS kernels and ORT's default thread count change the last bits)."""
    import cv2
    import numpy
    import onnx
    import onnxruntime
    import torch
    import ultralytics

    from npuyolo.train.records import cpu_model

    root = Path(__file__).resolve().parents[2]
    source = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.suffix in (".py", ".yaml", ".json") and f.is_file():
            source.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return {"npuyolo": npuyolo_version(), "source": source.hexdigest()[:16], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "ultralytics": ultralytics.__version__,
            "numpy": numpy.__version__, "opencv": cv2.__version__, "cpu": cpu_model(), "cores": _usable_cores()}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _images_fingerprint(paths: list[Path]) -> str:
    return _key([(p.name, sha256_file(p)) for p in paths])


def build_files(pairs: list[tuple[Path, str]], folder: Path, settings: QuantizeSettings, conf: float,
                pool: ProcessPoolExecutor | _Inline | None = None, reuse: bool = True,
                shared: list[Path] | tuple[Path, ...] = ()) -> PlanFiles:
    """Every (FP32 graph, INT8 route) in `pairs` quantized into `folder`, and every FP32 and INT8 file scored on val.

    The first pair's graph carries the calibration sweep (its `int8` route is the sweep's winner); without a sweep,
    MinMax. `pool`: a `worker_pool()` (None: one of one worker per core, for this call). `reuse`: take what an
    earlier plan in `folder` built and scored from the same inputs (`plan-cache.json`); either way, what this call
    builds is recorded there for the next. `shared`: other plans' folders (a series' other members) whose caches are
    read too: an INT8 file or a score found there under the same content key is copied into `folder`, not rebuilt."""
    if pool is None:
        with worker_pool() as own:
            return build_files(pairs, folder, settings, conf, own, reuse, shared)
    routes: dict[Path, list[str]] = {}
    for fp32, route in pairs:
        routes.setdefault(fp32, [])
        if route not in routes[fp32]:
            routes[fp32].append(route)
    files = PlanFiles()
    if not routes:
        return files
    first = next(iter(routes))
    keys = _Keys(folder, settings, conf, list(routes), shared if reuse else ())  # recorded even when nothing is reused
    lookup = keys if reuse else None
    if not settings.sweep:
        files.calibration = Calibration("minmax", None, "minmax")
    elif lookup is not None and (hit := lookup.sweep(first)) is not None:
        files.calibration, files.int8[(first, "int8")] = hit
    jobs = _Jobs(pool, files, folder, settings, conf, lookup, routes, first)
    try:
        if files.calibration is None:  # the critical path goes first
            jobs.submit(_sweep_job, ("sweep", first), first, folder, settings)
        for fp32 in routes:  # FP32 files need no calibration: scored from the start
            jobs.score(fp32)
        if files.calibration is not None:
            jobs.quantize_all()
        while jobs.pending:
            done, _ = wait(list(jobs.pending), return_when=FIRST_COMPLETED)
            for future in done:
                jobs.finished(jobs.pending.pop(future), future.result())  # a job's error ends the plan, as before
    except BrokenProcessPool as e:  # a worker killed (out of memory, a signal): one line, and what to try
        raise DeployError("a plan worker process died (out of memory?); plan with fewer `workers` (1: none)",
                          param="workers") from e
    except BaseException:
        for future in jobs.pending:  # nothing queued runs after an error or Ctrl-C
            future.cancel()
        raise
    keys.save(files)
    return files


def _read_index(path: Path) -> dict:
    """A plan folder's cache index (`plan-cache.json`); empty when missing, unreadable or hand-edited (then all is
    built again, and the index rewritten)."""
    index: dict = {"int8": {}, "sweep": {}, "scores": {}}
    if path.is_file():
        try:
            loaded = json.loads(read_regular_file(path, 1 << 24))
            if isinstance(loaded, dict) and all(isinstance(loaded.get(k), dict) for k in index):
                index = {k: loaded[k] for k in index}
        except (OSError, ValueError, RecursionError, NpuyoloError):
            pass
    return index


class _Keys:
    """Content keys of a plan's files and scores, and the cache index (`plan-cache.json`) they are looked up in."""

    def __init__(self, folder: Path, settings: QuantizeSettings, conf: float, graphs: list[Path],
                 shared: list[Path] | tuple[Path, ...] = ()):
        self.folder, self.settings, self.conf = folder, settings, conf
        self.path = folder / CACHE_FILE
        self.index = _read_index(self.path)
        self.shared = [(f, _read_index(f / CACHE_FILE)) for f in shared if Path(f) != Path(folder)]
        self.versions = environment()
        calibration = calibration_images(settings.data, settings.calib, settings.seed)
        held = holdout_images(settings.data, settings.holdout, calibration, settings.seed) if settings.sweep else []
        self.images = _images_fingerprint(calibration + held)
        self.val = val_fingerprint(settings.data)
        self.graph = {g: sha256_file(g) for g in graphs}
        self.scored_keys: dict[Path, str] = {}

    def _entry(self, kind: str, key: str) -> dict | None:
        """The entry under `key` whose file still holds the bytes it recorded (a later plan with other inputs writes
        the same file names: its entries replace these, and a file rewritten since is a miss, never a wrong hit)."""
        entry = self.index[kind].get(key)
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha"), str)):
            return None
        try:
            path = safe_join(self.folder, entry["file"])
            return entry if path.is_file() and sha256_file(path) == entry["sha"] else None
        except (NpuyoloError, OSError):
            return None

    def _borrow(self, kind: str, key: str, name: str) -> None:
        """Copy file `name` (an INT8 file, or a score's statistics) from the first shared plan folder whose cache holds
        it under `key` with the bytes it recorded, into this plan's folder under the same name, and index it here. The
        key holds everything the file depends on (the graph's bytes, the images, the settings, npuyolo's code), so
        another member's plan that built the same graph (a LeakyReLU run's ReLU twin) built these bytes."""
        if self.index[kind].get(key) is not None and self._entry(kind, key) is not None:
            return
        for other, index in self.shared:
            entry = index[kind].get(key)
            if not (isinstance(entry, dict) and entry.get("file") == name and isinstance(entry.get("sha"), str)):
                continue
            try:
                data = read_regular_file(safe_join(other, name), 1 << 31)
                if hashlib.sha256(data).hexdigest() != entry["sha"]:
                    continue
                write_bytes(safe_join(self.folder, name), data)
            except (NpuyoloError, OSError):
                continue
            self.index[kind][key] = dict(entry)
            return

    def _sweep_key(self, fp32: Path) -> str:
        s = self.settings
        return _key("sweep", self.graph[fp32], s.calib, s.holdout, s.seed, self.images, self.versions)

    def _int8_key(self, fp32: Path, route: str, cal: Calibration) -> str:
        s = self.settings
        return _key("int8", self.graph[fp32], route, cal.method, cal.percentile, s.calib, s.seed, self.images,
                    self.versions)

    def _score_key(self, path: Path) -> str:
        if path not in self.scored_keys:  # each file hashed once per plan
            self.scored_keys[path] = _key("score", sha256_file(path), self.val, self.conf, self.versions)
        return self.scored_keys[path]

    def sweep(self, fp32: Path) -> tuple[Calibration, Path] | None:
        """The sweep's choice and its INT8 file, from an earlier plan; None (built again) for anything malformed."""
        entry = self._entry("sweep", self._sweep_key(fp32))
        if entry is None or entry["file"] != int8_path(self.folder, fp32, "int8").name:
            return None
        method, percentile, label = entry.get("method"), entry.get("percentile"), entry.get("label")
        if method not in METHODS or not (
                percentile is None or (isinstance(percentile, float) and 50.0 < percentile <= 100.0)):
            return None
        if (method == "percentile") != (percentile is not None):  # the sweep's percentiles always name their value
            return None
        if label != IntCalibration(method, percentile).label:  # the label is printed and recorded: it must say the method
            return None
        return Calibration(method, percentile, label), self.folder / entry["file"]

    def int8(self, fp32: Path, route: str, cal: Calibration) -> Path | None:
        key = self._int8_key(fp32, route, cal)
        if self.shared:
            self._borrow("int8", key, int8_path(self.folder, fp32, route).name)
        entry = self._entry("int8", key)
        return None if entry is None or entry["file"] != int8_path(self.folder, fp32, route).name else (
            self.folder / entry["file"])

    def score(self, path: Path) -> tuple[dict, dict, object] | None:
        key = self._score_key(path)
        if self.shared:
            self._borrow("scores", key, stats_name(path))
        entry = self._entry("scores", key)
        if entry is None or entry["file"] != stats_name(path):  # this file's own statistics, never another's
            return None
        figures = [entry.get("all"), entry.get("at_conf")]
        if not all(isinstance(f, dict) and all(isinstance(f.get(k), float) for k in FIGURES) for f in figures):
            return None
        try:
            return figures[0], figures[1], load_stats(self.folder / entry["file"])
        except (StatsError, OSError):
            return None

    def save(self, files: PlanFiles) -> None:
        """Record this plan's files and scores (their statistics are already beside them, `stats/<stem>.npz`)."""
        cal = files.calibration
        first = next(iter(self.graph))
        written = {p.name for p in files.int8.values()} | {stats_name(p) for p in files.scores}
        # entries of earlier plans whose file this plan has (re)written are gone: their bytes are this plan's now
        index = {kind: {k: e for k, e in entries.items() if not (isinstance(e, dict) and e.get("file") in written)}
                 for kind, entries in self.index.items()}

        def entry(name: str, **extra) -> dict:
            return {"file": name, "sha": sha256_file(self.folder / name), **extra}

        files_int8 = {k: p for k, p in files.int8.items() if p.is_file()}
        scores = {p: v for p, v in files.scores.items() if (self.folder / stats_name(p)).is_file()}

        if self.settings.sweep and (first, "int8") in files_int8:
            index["sweep"][self._sweep_key(first)] = entry(files.int8[(first, "int8")].name, method=cal.method,
                                                           percentile=cal.percentile, label=cal.label)
        for (fp32, route), path in files_int8.items():
            if not (self.settings.sweep and fp32 == first and route == "int8"):
                index["int8"][self._int8_key(fp32, route, cal)] = entry(path.name)
        for path, (everything, at_conf, _) in scores.items():
            index["scores"][self._score_key(path)] = entry(stats_name(path), all=everything, at_conf=at_conf)
        write_text(self.path, json.dumps(index, indent=1, default=float) + "\n")


class _Jobs:
    """The jobs of one `build_files`, submitted as what they need becomes known, their results filed in `files`."""

    def __init__(self, ex, files: PlanFiles, folder: Path, settings: QuantizeSettings, conf: float,
                 keys: _Keys | None, routes: dict[Path, list[str]], first: Path):
        self.ex, self.files, self.folder, self.settings, self.conf, self.keys = ex, files, folder, settings, conf, keys
        self.routes, self.first = routes, first
        self.pending: dict[Future, tuple] = {}
        self.first_ranges: dict = {}  # the sweep's graph's calibration ranges by label, shared by its other routes
        self.scored: set[Path] = set()

    def submit(self, fn, tag: tuple, *args) -> None:
        self.pending[self.ex.submit(fn, *args)] = tag

    def score(self, path: Path) -> None:
        if path in self.scored:
            return
        self.scored.add(path)
        hit = self.keys.score(path) if self.keys is not None else None
        if hit is not None:
            self.files.scores[path] = hit
        else:
            self.submit(_score_job, ("score", path), path, self.settings.data, self.conf)

    def quantize_all(self) -> None:
        """Every graph's routes not built yet (reused where the cache holds them); each file scored once built."""
        cal = self.files.calibration
        jobs = []
        for fp32, wanted in self.routes.items():
            todo = []
            for route in wanted:
                if (fp32, route) not in self.files.int8 and self.keys is not None:
                    hit = self.keys.int8(fp32, route, cal)
                    if hit is not None:
                        self.files.int8[(fp32, route)] = hit
                if (fp32, route) in self.files.int8:
                    self.score(self.files.int8[(fp32, route)])
                else:
                    todo.append(route)
            if todo:
                jobs.append((fp32, todo))
        # a graph and its logits twin in one job: the twin's calibration is read from the graph's (the sweep's graph
        # has its own ranges already, so it stays alone)
        todo_of = dict(jobs)
        others = [g for g in todo_of if g != self.first]
        grouped = subsets_of(others) if len(others) > 1 else {g: [] for g in others}
        merged = [(self.first, todo_of[self.first], [])] if self.first in todo_of else []
        merged += [(g, todo_of[g], [(s, todo_of[s]) for s in subs]) for g, subs in grouped.items()]
        # the jobs with most routes first: the workers' queue ends on short jobs (a plan is the same in any order)
        for fp32, todo, subsets in sorted(merged, key=lambda job: -(len(job[1]) + sum(len(r) for _, r in job[2]))):
            ranges = self.first_ranges if fp32 == self.first else {}
            self.submit(_quantize_job, ("quantize", fp32), fp32, todo, self.folder, self.settings, cal, ranges, subsets)

    def finished(self, tag: tuple, result) -> None:
        kind, path = tag
        if kind == "sweep":
            self.files.calibration, self.first_ranges, out, seconds = result
            self.files.int8[(path, "int8")] = out
            self.files.seconds["quantize"] += seconds
            self.quantize_all()  # scores the sweep's winner where a candidate ships it
        elif kind == "quantize":
            made, seconds = result
            self.files.seconds["quantize"] += seconds
            for key, out in made.items():
                self.files.int8[key] = out
                self.score(out)
        else:
            self.files.scores[path], seconds = result
            self.files.seconds["evaluate"] += seconds
            # kept beside the plan: a later comparison of candidates, or a later plan, runs no model
            save_stats(result[0][2], safe_join(self.folder, stats_name(path)))
