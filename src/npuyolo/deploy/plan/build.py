"""Building and measuring a plan (export, rewrite, quantize, evaluate, compile): `build_plan`, at the edge, through a
`PlanBuilder` whose steps are named methods."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from npuyolo.compilers.envs import CompilerError
from npuyolo.compilers.registry import installed, serving
from npuyolo.data.check import check_dataset
from npuyolo.deploy.check import check_model, sigmoid_on_npu
from npuyolo.deploy.compile import compile_model, record
from npuyolo.deploy.eval import vendor
from npuyolo.deploy.export import check_imgsz
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.deploy.plan.choose import AccuracyNoise, Plan, TargetPlan, candidates, rank, target_advice
from npuyolo.deploy.plan.records import DEPLOY_CONF, Accuracy, Candidate, Placement, PlanError, Row, VendorInt8
from npuyolo.deploy.plan.work import QuantizeSettings, build_files, worker_pool
from npuyolo.errors import NpuyoloError
from npuyolo.npu.graph import load_graph
from npuyolo.npu.profiles import target as get_target
from npuyolo.npu.rewrite import rewrite_leaky
from npuyolo.paths import atomic_path, file_problem, make_dir, safe_join, sha256_file, slug, write_text
from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.resolve import ModelRef
from npuyolo.stats.matched import MatchedStats
from npuyolo.train.series import variant_of
from npuyolo.variants.spec import parse_variant

VERDICT = ("compiler", "compiler_status", "compiler_cpu_ops", "npu_ms", "compiled_file")  # shared by a graph's routes

class _Stages:
    """Seconds spent per stage, for the plan's own timing."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str):
        stages = self

        class _Timer:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                stages.seconds[name] += time.perf_counter() - self.t

        return _Timer()


def leaky_slopes(path: str | Path) -> set[float]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    return {float(next((helper.get_attribute_value(a) for a in n.attribute if a.name == "alpha"), 0.01))
            for n in model.graph.node if n.op_type == "LeakyRelu"}


def write_graph(src: Path, dst: Path, graph: str) -> Path:
    """`src` with every LeakyReLU rewritten exactly (`graph` a rewrite method) or set to another slope (`slope<v>`)."""
    import onnx
    from onnx import helper


    model = load_graph(src).model
    if graph.startswith("slope"):
        value = float(graph[5:])
        for node in model.graph.node:
            if node.op_type == "LeakyRelu":
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("alpha", value))
        meta = {p.key: p for p in model.metadata_props}
        tag = f"leaky:slope{value!r}"
        if "npuyolo_rewrite" in meta:
            meta["npuyolo_rewrite"].value += "," + tag
        else:
            model.metadata_props.add(key="npuyolo_rewrite", value=tag)
    else:
        model, _ = rewrite_leaky(model, graph)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


def _twin(registry, run_id: int | None) -> str | None:
    """The finished ReLU twin of a LeakyReLU run in the same series (L4-leaky -> L4-relu), as a run id; else None."""
    if run_id is None:
        return None

    run = registry.get_run(run_id)
    if not run.series:
        return None
    spec = parse_variant(run.variant)
    if spec.is_hybrid or spec.activation != "leaky":
        return None
    twin = spec.model_copy(update={"activation": "relu", "slope": None}).name
    seed = run.recipe.seed  # None for a run recorded without one: then only a member without a seed is its twin
    for m in registry.series(run.series).members:  # with seed replicates (`L4-relu/s1`), the twin of the same seed
        variant, member_seed = variant_of(m.variant)
        if variant == twin and member_seed in (None, seed) and m.status == RunStatus.FINISHED and m.run_id is not None:
            return str(m.run_id)
    return None


def sibling_plan_folders(registry, run) -> list[Path]:
    """The plan folders of the other members of the run's series (read, never written): a plan takes from their
    content caches the INT8 files and scores of graphs it shares with them (the ReLU twin's, planned again in the
    twin's own plan), the same bytes by their keys. A run in no series: none."""
    if run is None or not run.series:
        return []
    folders = []
    for m in registry.series(run.series).members:
        if m.run_id is None or m.run_id == run.id:
            continue
        try:
            folder = registry.run_path(registry.get_run(m.run_id), "plan")
        except NpuyoloError:  # a member whose folder is not where a registry keeps it: nothing taken from it
            continue
        if folder.is_dir():
            folders.append(folder)
    return folders


def _compile(registry: Registry, placement: Placement, fp32: Path, target: str, data, model_ref: str | None = None,
             imgsz: int | None = None, model_builds: dict | None = None) -> None:
    """The vendor compiler's verdict (its `CompilerSpec`, `compilers/registry.py`) on the FP32 graph (it quantizes
    itself), when one serves the target and is installed.

    A compiler that converts the PyTorch model (IMX500: MCT quantizes it, the sensor runs all of it or nothing) takes
    `model_ref`, the model behind the candidate, None for a graph rewrite (which has no PyTorch model); one build per
    model, shared by its INT8 routes through `model_builds` (it quantizes itself, whichever route we would take)."""

    served = serving(target)
    if served is None:
        return
    compiler, platform = served
    env = installed(compiler.name)
    placement.compiler = compiler.name if env is None else f"{compiler.name} {env.version}"
    if env is None:
        placement.compiler_status = "compiler not installed"
        return
    if compiler.takes_onnx:
        try:
            result = compile_model(registry, str(fp32), compiler.name, platform, data)
        except CompilerError as e:
            placement.compiler_status = f"failed: {e}"
            return
        record(registry, result)
    else:
        if model_ref is None or str(model_ref).lower().endswith(".onnx"):
            placement.compiler_status = (f"not compiled: a graph rewrite has no PyTorch model for {compiler.quantizer} to "
                                         "quantize" if model_ref is None
                                         else f"not compiled: an ONNX file has no PyTorch model for {compiler.quantizer}")
            return
        builds = model_builds if model_builds is not None else {}
        key = (compiler.name, platform, model_ref)
        if key not in builds:
            try:
                builds[key] = compile_model(registry, model_ref, compiler.name, platform, data, imgsz=imgsz)
                record(registry, builds[key])
            except NpuyoloError as e:  # the compiler's or the FP32 export beside it: this target's row says so
                builds[key] = e
        result = builds[key]
        if isinstance(result, NpuyoloError):
            placement.compiler_status = f"failed: {result}"
            return
    verdict = compiler.verdict(result.build)
    placement.compiler_status = verdict.status
    placement.compiler_cpu_ops = verdict.cpu_ops
    placement.npu_ms = verdict.npu_ms
    placement.compiled_file = verdict.compiled_file


def weights_note(run) -> str | None:
    """What a plan of `run` says when its best.pt is gone and resolve_model fell back to last.pt; else None."""
    if run is None or run.artifact_path("weights/best") is not None:
        return None
    last = run.artifact_path("weights/last")
    return None if last is None else (f"run {run.name}'s best.pt is missing; planned from last.pt ({last}), the last "
                                      "epoch's weights, not the best")


def model_folder(registry, ref: str) -> Path | None:
    """Where a plan of a checkpoint or ONNX file goes (not created here: nothing is made for a file the safe loader
    refuses): `<registry dir>/plan/<stem>-<sha256 of its bytes, 12 hex>/`, so two
    files both called best.pt never share (and replace) each other's plan and INT8 files, and the same file re-planned
    finds its folder again. None for a run (its own folder) or a variant (named alike only when it is the same)."""
    parsed = ModelRef.parse(ref)
    path = Path(parsed.text)
    if parsed.kind not in ("pt", "onnx") or file_problem(path) is not None:
        return None  # not a readable file: check_model says why
    return safe_join(registry.root, "plan", f"{slug(path.stem, 'model')[:80]}-{sha256_file(path)[:12]}")  # made once loaded


def build_plan(registry, ref: str, targets: list[str], data: str | Path, *, conf: float = DEPLOY_CONF, calib: int = 100,
               holdout: int = 50, imgsz: int | None = None, sweep: bool = True, vendor_int8: bool = False,
               workers: int | None = None, reuse: bool = True) -> Plan:
    """Build every candidate for every target, verify it, choose; the artefacts go under the run's `plan/` folder, the
    plan itself to `plan.json` there (and, for a run, into the registry as its `plan` artefact).

    `sweep=False` calibrates with MinMax instead of the sweep's choice (minutes less on a large model).
    `vendor_int8`: where the target's compiler is installed (RKNN, Vela), also score the vendor's own quantized model
    of each candidate (its simulator, TFLite's reference kernels) and rank by that INT8 accuracy: it is what ships.
    `workers`: processes that build the INT8 files and score every file (None: one per core; 1: none, all here). The
    plan is the same whatever the number. `reuse`: take the INT8 files and scores an earlier plan of this model built
    from the same inputs (content keys in the plan folder's `plan-cache.json`); False builds and scores everything."""

    started = time.perf_counter()
    if not targets:
        raise PlanError("name at least one target")
    if not 0.0 < conf < 1.0:
        raise PlanError(f"the confidence threshold must be between 0 and 1, got {conf:g}")
    if imgsz is not None:
        check_imgsz(imgsz)
    profiles = {t: get_target(t) for t in dict.fromkeys(targets)}  # unknown names fail before any export
    check_dataset(data, cache_dir=registry.root / "cache")
    if registry.readonly:
        raise PlanError("a plan writes artefacts; open the registry writable")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise PlanError(f"workers must be a whole number of processes, at least 1, got {workers!r}"[:200],
                        param="workers")
    with worker_pool(workers) as pool:  # started now: the workers come up while this process exports
        return PlanBuilder(registry, ref, profiles, data, conf, calib, holdout, imgsz, sweep, vendor_int8, reuse, pool,
                           started).build()


class PlanBuilder:
    """One plan being built, step by step: `export` (the model, once per kind of NPU head), `fp32_graphs` (every
    candidate's FP32 graph: exports and rewrites need PyTorch and the registry, so this process), `int8_files` (every
    INT8 file and every score, in worker processes), `place` (each INT8 file on every target it serves), then per
    target `rows` (placement, the compiler's verdict, the vendor's INT8) ranked by `target_plan`, and `write`."""

    def __init__(self, registry, ref: str, profiles: dict, data, conf: float, calib: int, holdout: int,
                 imgsz: int | None, sweep: bool, vendor_int8: bool, reuse: bool, pool, started: float):
        self.registry, self.ref, self.profiles, self.data, self.conf = registry, ref, profiles, data, conf
        self.calib, self.holdout, self.imgsz, self.sweep, self.vendor_int8 = calib, holdout, imgsz, sweep, vendor_int8
        self.reuse, self.pool, self.started = reuse, pool, started
        self.stage = _Stages()
        # (source, NPU sigmoid?) -> the graph check_model exported: targets without an NPU sigmoid share the -logits file
        self.exports: dict[tuple[str, bool], Path] = {}
        self.graphs: dict[tuple[Path, str | None], Path] = {}
        self.accuracy: dict[Path, tuple[Accuracy, Accuracy, MatchedStats]] = {}
        self.placed: dict[tuple[Path, Path, str], Placement] = {}
        self.model_builds: dict = {}  # (compiler, platform, model) -> a build of a compiler that converts the model
        # (FP32 graph, target) -> the compiler's verdict: it quantizes the FP32 graph itself, so one compile serves every
        # INT8 route of that graph (a Vela or RKNN build is tens of seconds)
        self.compiled: dict[tuple[Path, str], Placement] = {}
        self.vendors: dict[str, VendorInt8 | str] = {}
        self.vendor_stats: dict[str, MatchedStats | None] = {}
        self.reports: dict = {}

    def build(self) -> Plan:
        self.export()
        specs = self.fp32_graphs()
        self.files = self.int8_files(specs)
        self.place(specs)
        noise = AccuracyNoise()  # one set of paired resamples for the whole plan: each file's draws are made once
        return self.write([self.target_plan(t, specs, noise) for t in self.profiles])

    # -- steps ----------------------------------------------------------------------------------------------------------
    def export(self) -> None:
        """The model exported for the first target; the plan's folder, the run, its ReLU twin and its size."""
        registry, profiles = self.registry, self.profiles
        t0 = next(iter(profiles))
        self.own = model_folder(registry, self.ref)  # a checkpoint or ONNX file: its own folder, exports included
        with self.stage("export"):
            first = check_model(registry, self.ref, [t0], imgsz=self.imgsz, workdir=self.own)
        self.run_id, self.label = first.run_id, first.model_ref
        self.exports[("export", sigmoid_on_npu(profiles[t0]))] = Path(first.onnx_paths[t0])
        run = registry.get_run(self.run_id) if self.run_id is not None else None  # read once: folder, variant, size, seed
        self.run = run
        self.folder = (registry.run_dir(run, "plan") if run is not None
                       else self.own or registry.output_dir("plan", slug(self.label, "model")))
        make_dir(self.folder)
        self.twin = _twin(registry, self.run_id)
        self.variant = run.variant if run is not None else None
        self.size = self.imgsz
        if self.size is None and run is not None:
            self.size = run.recipe.imgsz  # None for a row without one: the export's own default then

    def export_for(self, source: str, t: str) -> Path:
        key = (source, sigmoid_on_npu(self.profiles[t]))
        if key not in self.exports:
            with self.stage("export"):
                result = check_model(self.registry, self.twin if source == "relu-twin" else self.ref, [t], imgsz=self.size,
                                     workdir=self.own if source == "export" else None)
            self.exports[key] = Path(result.onnx_paths[t])
        return self.exports[key]

    def graph_file(self, base: Path, graph: str | None) -> Path:
        if graph is None:
            return base
        if (base, graph) not in self.graphs:
            with self.stage("rewrite"):
                self.graphs[(base, graph)] = write_graph(base, self.folder / f"{base.stem}.{graph}.onnx", graph)
        return self.graphs[(base, graph)]

    def fp32_graphs(self) -> list[tuple[str, Candidate, Path]]:
        """(target, candidate, its FP32 graph) for every candidate of every target."""
        specs = []
        for t, profile in self.profiles.items():
            base = self.export_for("export", t)
            for c in candidates(profile, leaky_slopes(base), self.twin is not None):
                specs.append((t, c, self.graph_file(self.export_for(c.source, t), c.graph)))
        return specs

    def int8_files(self, specs: list[tuple[str, Candidate, Path]]):
        """Every INT8 file and every score, in worker processes (none of them touches the registry)."""
        seed = self.run.recipe.seed if self.run is not None else None
        seed = 0 if seed is None else seed  # a model file, or a run recorded without a seed: 0
        settings = QuantizeSettings(str(self.data), QuantizeOptions(calib=self.calib, holdout=self.holdout, seed=seed,
                                                                    sweep=self.sweep))
        files = build_files([(fp32, c.route) for _, c, fp32 in specs], self.folder, settings, self.conf, self.pool,
                            self.reuse, shared=sibling_plan_folders(self.registry, self.run) if self.reuse else [])
        for name, seconds in files.seconds.items():
            self.stage.seconds[name] += seconds
        return files

    def place(self, specs: list[tuple[str, Candidate, Path]]) -> None:
        """The INT8 file that ships, placed like the graph it quantizes: each file read once for every target it serves."""
        serves: dict[Path, list[str]] = {}
        for t, c, fp32 in specs:
            serves.setdefault(self.files.int8[(fp32, c.route)], [])
            if t not in serves[self.files.int8[(fp32, c.route)]]:
                serves[self.files.int8[(fp32, c.route)]].append(t)
        with self.stage("place"):
            self.reports = {(path, t): r for path, ts in serves.items()
                            for t, r in zip(ts, check_model(None, str(path), ts).reports, strict=True)}

    def measured(self, path: Path) -> tuple[Accuracy, Accuracy, MatchedStats]:
        if path not in self.accuracy:
            everything, at_conf, stats = self.files.scores[path]  # its statistics are kept in the plan's stats/
            self.accuracy[path] = Accuracy.of(everything), Accuracy.of(at_conf), stats
        return self.accuracy[path]

    def placement(self, fp32: Path, int8: Path, t: str, model_ref: str | None = None) -> Placement:
        if (fp32, int8, t) not in self.placed:
            r = self.reports[(int8, t)]
            first_off = next((f"{n.op} {n.name}: {n.reason}" for n in r.placements if n.placement in ("cpu", "unknown")), None)
            p = Placement(r.share_nodes, r.nodes_total, r.nodes_cpu, r.nodes_unknown, r.partitions_host, r.fallback_ops,
                          r.unknown_ops, first_off_npu=first_off)
            if (fp32, t) not in self.compiled:
                with self.stage("compile"):
                    _compile(self.registry, p, fp32, t, self.data, model_ref, self.size, self.model_builds)
                self.compiled[(fp32, t)] = p
            else:
                for name in VERDICT:
                    setattr(p, name, getattr(self.compiled[(fp32, t)], name))
            self.placed[(fp32, int8, t)] = p
        return self.placed[(fp32, int8, t)]

    def vendor_scored(self, p: Placement) -> tuple[VendorInt8 | None, str | None]:
        """The vendor's INT8 of a compiled candidate, or why it could not be scored: one candidate's refusal (a
        contract mismatch, a driver that dies) must not sink the other candidates and targets of the plan."""
        if not self.vendor_int8 or p.compiled_file is None:
            return None, None
        if p.compiled_file not in self.vendors:
            try:
                with self.stage("vendor int8"):
                    score = vendor.evaluate_compiled(p.compiled_file, self.data, deploy_conf=self.conf)
                self.vendors[p.compiled_file] = VendorInt8(score.runtime, Accuracy.of(score.result), Accuracy.of(score.at_conf))
                self.vendor_stats[p.compiled_file] = getattr(score, "stats", None)
            except NpuyoloError as e:
                self.vendors[p.compiled_file] = " ".join(str(e).split())[:300]
        got = self.vendors[p.compiled_file]
        return (None, got) if isinstance(got, str) else (got, None)

    def target_plan(self, t: str, specs: list[tuple[str, Candidate, Path]], noise: AccuracyNoise) -> TargetPlan:
        """Every candidate of target `t` verified (placed, compiled, scored), then ranked."""
        rows = []
        for c, fp32 in ((c, fp32) for spec_t, c, fp32 in specs if spec_t == t):
            int8 = self.files.int8[(fp32, c.route)]
            (f_all, f_conf, f_stats), (q_all, q_conf, q_stats) = self.measured(fp32), self.measured(int8)
            source_model = None if c.graph is not None else {"export": self.ref, "relu-twin": self.twin}.get(c.source)
            placed_here = self.placement(fp32, int8, t, source_model)
            scored_by_vendor, vendor_error = self.vendor_scored(placed_here)
            rows.append(Row(t, c, str(fp32), str(int8), placed_here, f_all, q_all, f_conf, q_conf, self.conf,
                            scored_by_vendor, vendor_error, int8_stats=q_stats,
                            vendor_stats=self.vendor_stats.get(placed_here.compiled_file) if scored_by_vendor else None))
            drop = noise.between(f_stats, rows[-1].shipped_stats)
            rows[-1].int8_drop_pp = None if drop is None else [round(drop.value, 3), round(drop.low, 3), round(drop.high, 3)]
        chosen, runner, why = rank(rows, noise)
        return TargetPlan(t, chosen, runner, why, rows, target_advice(t, rows, self.variant))

    def write(self, plans: list[TargetPlan]) -> Plan:
        """plan.json in the plan's folder and, for a run, its `plan` artefact in the registry."""
        files, twin = self.files, self.twin
        plan = Plan(self.label, self.run_id, str(self.data), self.conf, files.calibration.label if files.calibration else None,
                    plans, twin_run_id=int(twin) if twin is not None else None, weights_note=weights_note(self.run))
        plan.seconds = time.perf_counter() - self.started
        plan.stages = {k: round(v, 3) for k, v in self.stage.seconds.items()}
        out = self.folder / "plan.json"
        plan.path = str(out)
        write_text(out, json.dumps(plan.as_dict(), indent=2) + "\n")
        if self.run_id is not None:
            self.registry.add_artifact(self.run_id, "plan", out.resolve(),
                                       {"conf": self.conf, "choices": {p.target: p.chosen.candidate.name for p in plans}})
        return plan
