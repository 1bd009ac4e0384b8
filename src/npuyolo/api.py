"""npuyolo's Python API: a `Workspace` (one registry) whose methods mirror the CLI and return typed records.

    from npuyolo import Workspace
    ws = Workspace("runs/npuyolo.db")
    run = ws.train("L4-leaky", "data.yaml", epochs=30, imgsz=320)
    ws.check(run.id, ["relu-only", "rknn-rk3588"])
    q = ws.quantize(run.id, "data.yaml", per_channel=True)
    print(ws.evaluate(q["int8"], "data.yaml")["map50"])
    plan = ws.plan(run.id, ["amd-dpu", "edgetpu"], "data.yaml")  # the verified best artefact per NPU
    ws.series_plan("s1", ["amd-dpu", "edgetpu"]).cells()  # variant -> target -> its best artefact
    ws.report(run.id, lang="ko", fmt="html")

Errors a user can fix raise `npuyolo.NpuyoloError` subclasses; nothing here prints tables or exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Workspace"]


def _known(func, kwargs: dict) -> None:
    """An unknown keyword is the caller's mistake: one NpuyoloError naming it and the accepted ones."""
    import inspect

    from npuyolo.errors import NpuyoloError

    accepted = [p for p in inspect.signature(func).parameters if p not in ("registry", "data", "ref")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise NpuyoloError(f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")


def _path(value: Any, what: str, optional: bool = False) -> Path | None:
    """A path argument: str or os.PathLike (None only where optional); bytes, None or a number is the caller's mistake."""
    import os

    from npuyolo.errors import NpuyoloError

    if value is None and optional:
        return None
    if isinstance(value, str) or (isinstance(value, os.PathLike) and isinstance(os.fspath(value), str)):
        if not str(value).strip():
            raise NpuyoloError(f"{what} must not be empty")
        return Path(value)
    raise NpuyoloError(f"{what} must be a path (str or pathlib.Path), got {type(value).__name__}")


def _ref(value: Any, what: str, optional: bool = False) -> str | None:
    """A run, model or name argument: a non-empty str, an int id, or (for files) a pathlib.Path."""
    import os

    from npuyolo.errors import NpuyoloError

    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) or (isinstance(value, os.PathLike) and isinstance(os.fspath(value), str)):
        if not str(value).strip():
            raise NpuyoloError(f"{what} must not be empty")
        return str(value)
    raise NpuyoloError(f"{what} must be a str (a name or path) or an int id, got {type(value).__name__}")


def _number(value: Any, what: str, kind: type = int, optional: bool = False):
    """An int (or, for kind=float, a real number) argument; a str such as "64" is named as a str, not shown as 64."""
    from npuyolo.errors import NpuyoloError

    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise NpuyoloError(f"{what} must be {'a number' if kind is float else 'an int'}, got {type(value).__name__} {value!r}"[:200])
    return value


def _targets(value: Any) -> list[str]:
    """A list (or tuple) of target names; a bare str would be read letter by letter."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        from npuyolo.errors import NpuyoloError

        raise NpuyoloError(f"targets must be a list of target names, got {value!r}"[:200], param="targets")
    return list(value)


def _plan_options(kwargs: dict) -> dict:
    """`plan`/`series_plan` options of `deploy.plan.build_plan`, each of its type (a str number is not one)."""
    from npuyolo.errors import NpuyoloError

    numbers = {"conf": (float, False), "calib": (int, False), "holdout": (int, False), "imgsz": (int, True),
               "workers": (int, True)}
    for key, value in kwargs.items():
        if key in numbers:
            _number(value, key, numbers[key][0], optional=numbers[key][1])
        elif key in ("sweep", "vendor_int8", "reuse") and not isinstance(value, bool):
            raise NpuyoloError(f"{key} must be True or False, got {type(value).__name__} {value!r}"[:200], param=key)
    return kwargs


class Workspace:
    """One registry and its run folders. `registry=None` uses NPUYOLO_REGISTRY or runs/npuyolo.db."""

    def __init__(self, registry: str | Path | None = None):
        from npuyolo.registry.db import default_path

        self.registry_path = _path(registry, "registry", optional=True) or default_path()

    def _registry(self, readonly: bool = False):
        from npuyolo.registry.db import Registry

        return Registry(self.registry_path, readonly=readonly)

    # -- training ---------------------------------------------------------------------------------------
    def train(self, variant: str, data: str | Path, *, recipe: str | Path | None = None, name: str | None = None,
              weights: str | Path | None = None, act_anneal: str | None = None, anneal_epochs: str | None = None,
              anneal_schedule: str = "linear", verbose: bool = True, **overrides: Any):
        """Train a variant (recipe file, then `overrides` such as epochs=30, imgsz=320); returns its RunRecord."""
        from npuyolo.services import train_model

        variant, data = _ref(variant, "variant"), _path(data, "data")
        recipe, weights = _path(recipe, "recipe", optional=True), _path(weights, "weights", optional=True)
        name = _ref(name, "name", optional=True)
        return train_model(self._registry(), variant, data, recipe=recipe, name=name, weights=weights, act_anneal=act_anneal,
                           anneal_epochs=anneal_epochs, anneal_schedule=anneal_schedule, verbose=verbose, **overrides)

    def resume(self, run: str | int, source: str = "last", verbose: bool = True):
        """Continue an interrupted run from its `last`, `previous` or `best` checkpoint."""
        from npuyolo.train.trainer import resume_run

        run = _ref(run, "run")
        reg = self._registry()
        return reg.get_run(resume_run(run, reg, verbose=verbose, source=source).run_id)

    def series(self, spec_file: str | Path, verbose: bool = True, executor: str = "local", **ray_options: Any) -> list[dict]:
        """Train a series file's members (skipping finished, resuming interrupted); returns the ranking.

        `executor="ray"` trains them as Ray tasks; `ray_options` are `RayOptions` fields (address, gpus_per_member,
        cpus_per_member, max_parallel, max_retries).
        """
        from npuyolo.train.executors import make_executor
        from npuyolo.train.series import SeriesSpec, run_series

        spec = SeriesSpec.load(_path(spec_file, "spec_file"))
        runner = make_executor(executor, **ray_options)  # before the registry: a missing Ray creates nothing
        return run_series(spec, self._registry(), verbose=verbose, executor=runner)

    def distill(self, teacher: str | int, student_variant: str, data: str | Path, *, name: str | None = None,
                alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0, temperature: float = 2.0, verbose: bool = True,
                **overrides: Any):
        from npuyolo.distill.run import distill
        from npuyolo.train.recipe import Recipe

        teacher, student_variant, data = _ref(teacher, "teacher"), _ref(student_variant, "student_variant"), _path(data, "data")
        name = _ref(name, "name", optional=True)
        reg = self._registry()
        result = distill(reg, teacher, student_variant, data, Recipe.load(None, **overrides), alpha=alpha, beta=beta,
                         gamma=gamma, temperature=temperature, name=name, verbose=verbose)
        return reg.get_run(result.run_id)

    def study_relu_gap(self, data: str | Path, **kwargs: Any):
        """L4-leaky vs L4-relu vs distilled vs annealed over seeds; see `npuyolo.study.relu_gap.relu_gap_study`."""
        from npuyolo.study.relu_gap import relu_gap_study

        _known(relu_gap_study, kwargs)
        return relu_gap_study(self._registry(), _path(data, "data"), **kwargs)

    # -- reading ------------------------------------------------------------------------------------------
    def run(self, ref: str | int):
        return self._registry(readonly=True).get_run(_ref(ref, "run"))

    def runs(self, series: str | None = None):
        """Every run (of `series`), as `npuyolo.registry.db.RunSummary` rows."""
        return self._registry(readonly=True).runs(_ref(series, "series", optional=True))

    def rank(self, series: str) -> list[dict]:
        """The series' members ranked (with intervals where they kept statistics); a series with seed replicates
        gives one row per variant, mean ± sd over seeds (as `npuyolo series rank`)."""
        from npuyolo.train.series import has_replicates, rank_replicates, rank_series

        name, reg = _ref(series, "series"), self._registry(readonly=True)
        return rank_replicates(name, reg) if has_replicates(name, reg) else rank_series(name, reg)

    # -- NPU and deployment ----------------------------------------------------------------------------------
    def check(self, model: str | int, targets: list[str], *, imgsz: int | None = None, head: str | None = None, nc: int = 80,
              record: bool = True):
        """Per-node NPU placement of a variant, run, .pt or .onnx on each target (recorded in the registry)."""
        from npuyolo.deploy.check import check_model
        from npuyolo.npu.check import record as record_check

        model, imgsz, nc = _ref(model, "model"), _number(imgsz, "imgsz", optional=True), _number(nc, "nc")
        targets = _targets(targets)
        reg = self._registry()
        result = check_model(model, targets, reg, imgsz=imgsz, head=head, nc=nc)
        if record:
            record_check(result, reg, head)
        return result

    def compile(self, model: str | int, compiler: str, target: str, data: str | Path | None, *, imgsz: int | None = None,
                head: str | None = None, nc: int = 80, calib: int = 8, record: bool = True):
        """Compile with a real vendor compiler (`npuyolo compilers install rknn|vela|imx500` first); placement beside the
        profile's, recorded in the registry. See `npuyolo.deploy.compile.compile_model`."""
        from npuyolo.deploy.compile import compile_model
        from npuyolo.compilers.compile import record as record_compile

        model, data = _ref(model, "model"), _path(data, "data", optional=True)
        imgsz, nc = _number(imgsz, "imgsz", optional=True), _number(nc, "nc")
        reg = self._registry()
        result = compile_model(model, _ref(compiler, "compiler"), _ref(target, "target"), data, reg, imgsz=imgsz, head=head, nc=nc,
                               calib=_number(calib, "calib"))
        if record:
            record_compile(result, reg)
        return result

    def export(self, model: str | int, out: str | Path, *, imgsz: int | None = None, head: str | None = None, nc: int = 80,
               force: bool = False) -> Path:
        """Static-shape ONNX (as `npuyolo export`, through `npuyolo.services.export_model`): at the size it was trained
        at unless `imgsz` says otherwise; a run's file is recorded as its `onnx/<head>` artefact.

        `out` may replace an earlier npuyolo ONNX file; another existing file or a symlink only with `force`;
        never the registry."""
        from npuyolo.services import export_model

        model, out = _ref(model, "model"), _path(out, "out")
        imgsz, nc = _number(imgsz, "imgsz", optional=True), _number(nc, "nc")
        return export_model(model, out, registry=self.registry_path, imgsz=imgsz, head=head, nc=nc, force=force).onnx

    def quantize(self, run: str | int, data: str | Path, **kwargs: Any) -> dict:
        """FP32 + INT8 QDQ ONNX of a run (calibrated on train images only); see `deploy.service.quantize_run`."""
        from npuyolo.deploy.service import quantize_run

        _known(quantize_run, kwargs)
        run, data = _ref(run, "run"), _path(data, "data")
        return quantize_run(self._registry(), run, data, **kwargs)

    def evaluate(self, artefact: str | Path, data: str | Path) -> dict:
        """mAP of an ONNX artefact with Ultralytics' validator (and the INT8 drop for a run's INT8 file)."""
        from npuyolo.deploy.service import evaluate_artefact

        artefact, data = _path(artefact, "artefact"), _path(data, "data")
        return evaluate_artefact(self._registry(), artefact, data)

    def compare(self, models: list[str | int | Path], data: str | Path, *, bootstrap: int = 1000, seed: int = 0,
                plot: str | Path | None = None, draw: bool = True):
        """Is the difference real? Each model's mAP50, mAP50-95, P and R with 95% intervals, each pair's paired-bootstrap
        difference and verdict; returns a `npuyolo.deploy.eval.compare.CompareResult`. Models: runs, .pt, ONNX, compiled."""
        from npuyolo.deploy.eval.compare import compare_registry
        from npuyolo.services import compare

        if isinstance(models, (str, bytes, Path, int)) or not isinstance(models, (list, tuple)):
            from npuyolo.errors import NpuyoloError

            raise NpuyoloError(f"models must be a list of model references, got {type(models).__name__}")
        refs = [_ref(m, "models") for m in models]
        data = _path(data, "data")
        bootstrap, seed = _number(bootstrap, "bootstrap"), _number(seed, "seed")
        return compare(compare_registry(self.registry_path), refs, data, bootstrap=bootstrap, seed=seed, plot=_path(plot, "plot", optional=True),
                       draw=bool(draw))

    def plan(self, model: str | int, targets: list[str], data: str | Path, **kwargs: Any):
        """Every artefact that could serve each target, verified (placement, FP32/INT8 accuracy, accuracy at the
        deployment threshold) and ranked; returns a `npuyolo.deploy.plan.Plan`. See `deploy.plan.build_plan`."""
        from npuyolo.deploy.plan import build_plan

        _known(build_plan, kwargs)
        model, targets, data = _ref(model, "model"), _targets(targets), _path(data, "data")
        return build_plan(self._registry(), model, targets, data, **_plan_options(kwargs))

    def series_plan(self, name: str, targets: list[str], data: str | Path | None = None, **kwargs: Any):
        """`plan` for each finished member of a series (each recorded on its run): a `SeriesPlan` whose `cells()` say
        which artefact of which variant to ship on which target. `data` defaults to the series' own data set."""
        from npuyolo.deploy.plan import build_plan, build_series_plan

        _known(build_plan, kwargs)
        name, targets, data = _ref(name, "name"), _targets(targets), _path(data, "data", optional=True)
        return build_series_plan(self._registry(), name, targets, data, **_plan_options(kwargs))

    def bundle(self, run: str | int | None = None, target: str | None = None, *, artefact: str | Path | None = None,
               out: str | Path | None = None, conf: float | None = None, iou: float | None = None):
        """A torch-free board package (folder + .tar.gz) of the target's chosen artefact in the run's recorded plan, or
        of `artefact`; returns a `npuyolo.deploy.bundle.Bundle`. See `deploy.bundle.service.bundle_model`."""
        from npuyolo.deploy.bundle.service import bundle_model

        run, target = _ref(run, "run", optional=True), _ref(target, "target", optional=True)
        artefact = _path(artefact, "artefact", optional=True)
        out = _path(out, "out", optional=True)
        conf, iou = _number(conf, "conf", float, optional=True), _number(iou, "iou", float, optional=True)
        return bundle_model(run, target, artefact=artefact, out=out, registry=self.registry_path, conf=conf, iou=iou)

    def bench(self, artefact: str | Path, runs: int = 50, threads: int | None = None) -> dict:
        from npuyolo.deploy.infer.latency import bench_onnx

        artefact, runs, threads = _path(artefact, "artefact"), _number(runs, "runs"), _number(threads, "threads", optional=True)
        return bench_onnx(artefact, runs=runs, threads=threads)

    def predict(self, model: str | int, source: str | Path, *, conf: float = 0.25, iou: float = 0.7, imgsz: int | None = None,
                out: str | Path | None = None, max_det: int = 300):
        """Detections of a run, .pt or ONNX artefact on an image, folder, glob or video; annotated copies and
        predictions.json/.csv are written to `out` (a run's predict/ folder by default). Returns a PredictResult."""
        from npuyolo.deploy.infer.predict import run_predict

        model, source, out = _ref(model, "model"), _path(source, "source"), _path(out, "out", optional=True)
        conf, iou = _number(conf, "conf", float), _number(iou, "iou", float)
        imgsz, max_det = _number(imgsz, "imgsz", optional=True), _number(max_det, "max_det")
        return run_predict(model, source, conf=conf, iou=iou, imgsz=imgsz, out=out, max_det=max_det,
                           registry=self.registry_path)  # opened (read-only) only when MODEL is a run

    # -- reports ------------------------------------------------------------------------------------------
    def report(self, run: str | int, *, compare: str | int | None = None, lang: str = "en", fmt: str = "md",
               out: str | Path | None = None) -> Path:
        from npuyolo.report.render import render_run

        run, compare, out = _ref(run, "run"), _ref(compare, "compare", optional=True), _path(out, "out", optional=True)
        return render_run(self._registry(readonly=True), run, out, lang=lang, fmt=fmt, compare=compare)

    def series_report(self, name: str, *, lang: str = "en", fmt: str = "md", target: str = "relu-only",
                      out: str | Path | None = None) -> Path:
        from npuyolo.report.render import render_series

        name, out = _ref(name, "name"), _path(out, "out", optional=True)
        return render_series(self._registry(readonly=True), name, out, lang=lang, target=target, fmt=fmt)
