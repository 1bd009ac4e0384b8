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


class Workspace:
    """One registry and its run folders. `registry=None` uses NPUYOLO_REGISTRY or runs/npuyolo.db."""

    def __init__(self, registry: str | Path | None = None):
        from npuyolo.registry.db import default_path

        self.registry_path = Path(registry) if registry else default_path()

    def _registry(self, readonly: bool = False):
        from npuyolo.registry.db import Registry

        return Registry(self.registry_path, readonly=readonly)

    # -- training ---------------------------------------------------------------------------------------
    def train(self, variant: str, data: str | Path, *, recipe: str | Path | None = None, name: str | None = None,
              weights: str | Path | None = None, act_anneal: str | None = None, anneal_epochs: str | None = None,
              anneal_schedule: str = "linear", verbose: bool = True, **overrides: Any):
        """Train a variant (recipe file, then `overrides` such as epochs=30, imgsz=320); returns its RunRecord."""
        from npuyolo.train.anneal import with_anneal
        from npuyolo.train.recipe import Recipe
        from npuyolo.train.trainer import train_variant

        reg = self._registry()
        r = with_anneal(Recipe.load(recipe, **overrides), act_anneal, anneal_epochs, anneal_schedule)
        return reg.run(train_variant(variant, data, r, reg, name=name, weights=weights, verbose=verbose).run_id)

    def resume(self, run: str | int, source: str = "last", verbose: bool = True):
        """Continue an interrupted run from its `last`, `previous` or `best` checkpoint."""
        from npuyolo.train.trainer import resume_run

        reg = self._registry()
        return reg.run(resume_run(run, reg, verbose=verbose, source=source).run_id)

    def series(self, spec_file: str | Path, verbose: bool = True, executor: str = "local", **ray_options: Any) -> list[dict]:
        """Train a series file's members (skipping finished, resuming interrupted); returns the ranking.

        `executor="ray"` trains them as Ray tasks; `ray_options` are `RayOptions` fields (address, gpus_per_member,
        cpus_per_member, max_parallel, max_retries).
        """
        from npuyolo.train.executors import make_executor
        from npuyolo.train.series import SeriesSpec, run_series

        spec = SeriesSpec.load(spec_file)
        runner = make_executor(executor, **ray_options)  # before the registry: a missing Ray creates nothing
        return run_series(spec, self._registry(), verbose=verbose, executor=runner)

    def distill(self, teacher: str | int, student_variant: str, data: str | Path, *, name: str | None = None,
                alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0, temperature: float = 2.0, verbose: bool = True,
                **overrides: Any):
        from npuyolo.distill.run import distill
        from npuyolo.train.recipe import Recipe

        reg = self._registry()
        result = distill(reg, str(teacher), student_variant, data, Recipe.load(None, **overrides), alpha=alpha, beta=beta,
                         gamma=gamma, temperature=temperature, name=name, verbose=verbose)
        return reg.run(result.run_id)

    def study_relu_gap(self, data: str | Path, **kwargs: Any):
        """L4-leaky vs L4-relu vs distilled vs annealed over seeds; see `npuyolo.study.relu_gap.relu_gap_study`."""
        from npuyolo.study.relu_gap import relu_gap_study

        _known(relu_gap_study, kwargs)
        return relu_gap_study(self._registry(), data, **kwargs)

    # -- reading ------------------------------------------------------------------------------------------
    def run(self, ref: str | int):
        return self._registry(readonly=True).run(ref)

    def runs(self, series: str | None = None) -> list[dict]:
        return self._registry(readonly=True).runs(series)

    def rank(self, series: str) -> list[dict]:
        from npuyolo.train.series import rank_series

        return rank_series(series, self._registry(readonly=True))

    # -- NPU and deployment ----------------------------------------------------------------------------------
    def check(self, model: str | int, targets: list[str], *, imgsz: int | None = None, head: str | None = None, nc: int = 80,
              record: bool = True):
        """Per-node NPU placement of a variant, run, .pt or .onnx on each target (recorded in the registry)."""
        from npuyolo.npu.check import check_model
        from npuyolo.npu.check import record as record_check

        reg = self._registry()
        result = check_model(str(model), targets, reg, imgsz=imgsz, head=head, nc=nc)
        if record:
            record_check(result, reg, head)
        return result

    def compile(self, model: str | int, compiler: str, target: str, data: str | Path | None, *, imgsz: int | None = None,
                head: str | None = None, nc: int = 80, record: bool = True):
        """Compile with a real vendor compiler (`npuyolo compilers install rknn|vela|imx500` first); placement beside the
        profile's, recorded in the registry. See `npuyolo.compilers.compile.compile_model`."""
        from npuyolo.compilers.compile import compile_model
        from npuyolo.compilers.compile import record as record_compile

        reg = self._registry()
        result = compile_model(str(model), compiler, target, data, reg, imgsz=imgsz, head=head, nc=nc)
        if record:
            record_compile(result, reg)
        return result

    def export(self, model: str | int, out: str | Path, *, imgsz: int | None = None, head: str | None = None, nc: int = 80,
               force: bool = False) -> Path:
        """Static-shape ONNX; a run exports at the size it was trained at unless `imgsz` says otherwise.

        `out` may replace an earlier npuyolo ONNX file; another existing file or a symlink only with `force`;
        never the registry."""
        from npuyolo.deploy.export import export_onnx
        from npuyolo.resolve import resolve_model

        reg = self._registry(readonly=True) if not str(model).endswith(".pt") else None
        resolved = resolve_model(str(model), reg, nc=nc)
        if imgsz is None:
            imgsz = resolved.trained_imgsz if resolved.run_id is not None and resolved.trained_imgsz else 640
        return export_onnx(resolved.model, out, imgsz=imgsz, head=head, force=force, registry=self.registry_path)

    def quantize(self, run: str | int, data: str | Path, **kwargs: Any) -> dict:
        """FP32 + INT8 QDQ ONNX of a run (calibrated on train images only); see `deploy.service.quantize_run`."""
        from npuyolo.deploy.service import quantize_run

        _known(quantize_run, kwargs)
        return quantize_run(self._registry(), str(run), data, **kwargs)

    def evaluate(self, artefact: str | Path, data: str | Path) -> dict:
        """mAP of an ONNX artefact with Ultralytics' validator (and the INT8 drop for a run's INT8 file)."""
        from npuyolo.deploy.service import evaluate_artefact

        return evaluate_artefact(self._registry(), artefact, data)

    def plan(self, model: str | int, targets: list[str], data: str | Path, **kwargs: Any):
        """Every artefact that could serve each target, verified (placement, FP32/INT8 accuracy, accuracy at the
        deployment threshold) and ranked; returns a `npuyolo.deploy.plan.Plan`. See `deploy.plan.build_plan`."""
        from npuyolo.deploy.plan import build_plan

        _known(build_plan, kwargs)
        return build_plan(self._registry(), str(model), list(targets), data, **kwargs)

    def series_plan(self, name: str, targets: list[str], data: str | Path | None = None, **kwargs: Any):
        """`plan` for each finished member of a series (each recorded on its run): a `SeriesPlan` whose `cells()` say
        which artefact of which variant to ship on which target. `data` defaults to the series' own data set."""
        from npuyolo.deploy.plan import build_plan, build_series_plan

        _known(build_plan, kwargs)
        return build_series_plan(self._registry(), name, list(targets), data, **kwargs)

    def bench(self, artefact: str | Path, runs: int = 50, threads: int | None = None) -> dict:
        from npuyolo.deploy.latency import bench_onnx

        return bench_onnx(artefact, runs=runs, threads=threads)

    def predict(self, model: str | int, source: str | Path, *, conf: float = 0.25, iou: float = 0.7, imgsz: int | None = None,
                out: str | Path | None = None, max_det: int = 300):
        """Detections of a run, .pt or ONNX artefact on an image, folder, glob or video; annotated copies and
        predictions.json/.csv are written to `out` (a run's predict/ folder by default). Returns a PredictResult."""
        from npuyolo.deploy.predict import run_predict

        return run_predict(str(model), source, conf=conf, iou=iou, imgsz=imgsz, out=out, max_det=max_det,
                           registry=self.registry_path)  # opened (read-only) only when MODEL is a run

    # -- reports ------------------------------------------------------------------------------------------
    def report(self, run: str | int, *, compare: str | int | None = None, lang: str = "en", fmt: str = "md",
               out: str | Path | None = None) -> Path:
        from npuyolo.report.render import render_run

        return render_run(self._registry(readonly=True), run, out, lang=lang, fmt=fmt, compare=compare)

    def series_report(self, name: str, *, lang: str = "en", fmt: str = "md", target: str = "relu-only",
                      out: str | Path | None = None) -> Path:
        from npuyolo.report.render import render_series

        return render_series(self._registry(readonly=True), name, out, lang=lang, target=target, fmt=fmt)
