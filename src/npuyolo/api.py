"""npuyolo's Python API: a `Workspace` (one registry) whose methods mirror the CLI and return typed records.

    from npuyolo import Workspace
    ws = Workspace("runs/npuyolo.db")
    run = ws.train("L4-leaky", "data.yaml", epochs=30, imgsz=320)
    ws.check(run.id, ["relu-only", "rknn-rk3588"])
    q = ws.quantize(run.id, "data.yaml", per_channel=True)
    print(ws.evaluate(q.int8, "data.yaml").map50)
    plan = ws.plan(run.id, ["amd-dpu", "edgetpu"], "data.yaml")  # the verified best artefact per NPU
    ws.series_plan("s1", ["amd-dpu", "edgetpu"]).cells()  # variant -> target -> its best artefact
    ws.report(run.id, lang="ko", fmt="html")

Each method is a thin translation of one service in `npuyolo.services` (the CLI's commands are the other door onto
the same services): it checks the arguments' types, calls the service and returns its record. Options come as the
operation's options object (`npuyolo.services.options`: `PlanOptions`, `PredictOptions`, ...) or as its fields in
keywords; an unknown keyword is refused. Errors a user can fix raise `npuyolo.NpuyoloError` subclasses; nothing here
prints tables or exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.services import comparison, deploy, models, reports, runs, training
from npuyolo.services import data as datasets
from npuyolo.services.common import path_arg as _path
from npuyolo.services.common import ref_arg as _ref
from npuyolo.services.options import (BenchOptions, BundleOptions, CheckOptions, CompareOptions, CompileOptions,
                                      DistillOptions, EvalOptions, ExecutorOptions, ExportOptions, HybridOptions,
                                      MlflowOptions, PlanOptions, PredictOptions, PruneOptions, QatOptions,
                                      ReluGapOptions, ReportOptions, ResumeOptions, RewriteOptions,
                                      SeriesReportOptions, StudyReportOptions, SynthOptions, TrainOptions, VariantOptions,
                                      VariantsOptions, of)

__all__ = ["Workspace"]


def _split(cls, options, kwargs: dict):
    """The options object of `cls` from `options` and the keywords that are its fields; the other keywords stay (the
    recipe's fields, for train and distill, which `Recipe` checks)."""
    return cls.of(options, **{k: kwargs.pop(k) for k in cls.names() if k in kwargs})


class Workspace:
    """One registry and its run folders. `registry=None` uses NPUYOLO_REGISTRY or runs/npuyolo.db."""

    def __init__(self, registry: str | Path | None = None):
        from npuyolo.paths import default_registry_path

        self.registry_path = _path(registry, "registry", optional=True) or default_registry_path()

    # -- data and variants --------------------------------------------------------------------------------
    def synth(self, out: str | Path, options: SynthOptions | None = None, **kwargs: Any) -> dict:
        """A synthetic traffic-sign set (6 classes) with its data.yaml, in a new or empty folder (as `data synth`)."""
        return datasets.synth(_path(out, "out"), SynthOptions.of(options, **kwargs))

    def check_data(self, data: str | Path) -> dict:
        """A data set validated: per-split image and per-class instance counts (as `data check`)."""
        return datasets.check(_path(data, "data"))

    def variants(self, scale: str = VariantsOptions.scale) -> list[dict]:
        """Every level x activation variant (as `variants --json`)."""
        return models.variants(scale)["variants"]

    def variant(self, name: str, options: VariantOptions | None = None, **kwargs: Any) -> dict:
        """A variant's model YAML, parameters, GFLOPs and activations (as `variants show --json`)."""
        info = models.variant_show(_ref(name, "name"), VariantOptions.of(options, **kwargs))
        return {k: v for k, v in info.items() if k not in ("text", "summary")}

    # -- training ---------------------------------------------------------------------------------------
    def train(self, variant: str, data: str | Path, options: TrainOptions | None = None, *, verbose: bool = True,
              **kwargs: Any):
        """Train a variant: `TrainOptions` fields (recipe file, name, weights, act_anneal, ...) and recipe fields such
        as epochs=30, imgsz=320 as keywords; returns its RunRecord."""
        variant, data = _ref(variant, "variant"), _path(data, "data")
        o = _split(TrainOptions, options, kwargs)
        return training.train(self.registry_path, variant, data, o, verbose=verbose, **kwargs)

    def resume(self, run: str | int, source: str = ResumeOptions.source, verbose: bool = True):
        """Continue an interrupted run from its `last`, `previous` or `best` checkpoint."""
        return training.resume(self.registry_path, _ref(run, "run"), source, verbose=verbose)

    def series(self, spec_file: str | Path, options: ExecutorOptions | None = None, *, verbose: bool = True,
               **kwargs: Any) -> list[dict]:
        """Train a series file's members (skipping finished, resuming interrupted); returns the ranking.

        `executor="ray"` trains them as Ray tasks; the other `ExecutorOptions` fields (address, gpus_per_member,
        cpus_per_member, max_parallel, max_retries) go with it. `executor="process"` trains them in child processes
        of this one (cpus_per_member, max_parallel, max_retries): a script that calls it needs the
        `if __name__ == "__main__":` guard, as every spawned child runs the script's top level again.
        """
        spec_file = _path(spec_file, "spec_file")
        return training.series_run(self.registry_path, spec_file, ExecutorOptions.of(options, **kwargs), verbose=verbose).members

    def distill(self, teacher: str | int, student_variant: str, data: str | Path, options: DistillOptions | None = None,
                *, verbose: bool = True, **kwargs: Any):
        """A student trained with distillation from a teacher run: `DistillOptions` fields (alpha, beta, gamma,
        temperature, recipe file, name) and recipe fields as keywords; returns the student's RunRecord."""
        teacher, student_variant, data = _ref(teacher, "teacher"), _ref(student_variant, "student_variant"), _path(data, "data")
        o = _split(DistillOptions, options, kwargs)
        return training.distill(self.registry_path, teacher, student_variant, data, o, verbose=verbose, **kwargs)

    def prune(self, run: str | int, options: PruneOptions | None = None, *, verbose: bool = True, **kwargs: Any):
        """Channel pruning of a run's best weights, fine-tuned as a new run; size, mAP and latency before and after
        (a `PruneResult`)."""
        return training.prune(self.registry_path, _ref(run, "run"), PruneOptions.of(options, **kwargs), verbose=verbose)

    def hybrid_search(self, data: str | Path, options: HybridOptions | None = None,
                      executor: ExecutorOptions | None = None, *, verbose: bool = True, **kwargs: Any) -> list[dict]:
        """Hybrid candidates trained as a series, checked on a target, mAP against NPU share (Pareto front)."""
        data, o = _path(data, "data"), _split(HybridOptions, options, kwargs)
        return training.hybrid_search(self.registry_path, data, o, ExecutorOptions.of(executor, **kwargs), verbose=verbose)

    def study_relu_gap(self, data: str | Path, options: ReluGapOptions | None = None, *, verbose: bool = True,
                       **kwargs: Any):
        """L4-leaky vs L4-relu vs distilled vs annealed over seeds, and the study's ko/en reports (as `study
        relu-gap`); returns a `StudyResult` (rows, reports)."""
        data = _path(data, "data")
        return training.relu_gap(self.registry_path, data, ReluGapOptions.of(options, **kwargs), verbose=verbose)

    def study_report(self, name: str, lang: str = StudyReportOptions.lang, out: str | Path | None = None) -> Path:
        return training.study_report(self.registry_path, _ref(name, "name"), lang, _path(out, "out", optional=True))

    # -- reading ------------------------------------------------------------------------------------------
    def run(self, ref: str | int):
        return runs.run(self.registry_path, _ref(ref, "run"))

    def runs(self, series: str | None = None):
        """Every run (of `series`), as `npuyolo.registry.db.RunSummary` rows (a damaged row is left out)."""
        return runs.runs(self.registry_path, _ref(series, "series", optional=True))[0]

    def rank(self, series: str) -> list[dict]:
        """The series' members ranked (with intervals where they kept statistics); a series with seed replicates
        gives one row per variant, mean ± sd over seeds (as `npuyolo series rank`)."""
        return training.rank(self.registry_path, _ref(series, "series")).rows

    def mlflow_export(self, uri: str, refs: list[str | int] | None = None,
                      experiment: str = MlflowOptions.experiment) -> list[dict]:
        """Runs (`refs`, default all) copied into the MLflow store at `uri` (as `runs export --mlflow`)."""
        refs = None if refs is None else [_ref(r, "refs") for r in refs]
        return runs.mlflow_export(self.registry_path, _ref(uri, "uri"), refs, experiment)

    # -- NPU and deployment ----------------------------------------------------------------------------------
    def targets(self) -> dict:
        """The NPU target profiles, by name (as `npu targets --json`)."""
        return models.npu_targets()

    def check(self, model: str | int, targets: list[str], options: CheckOptions | None = None, *, record: bool = True,
              **kwargs: Any):
        """Per-node NPU placement of a variant, run, .pt or .onnx on each target (recorded in the registry)."""
        model = _ref(model, "model")
        return models.check(self.registry_path, model, targets, CheckOptions.of(options, **kwargs), record=record)

    def referee(self, model: str | int, targets: list[str], compiler: str, data: str | Path | None = None,
                options: CheckOptions | None = None, **kwargs: Any) -> list:
        """`check` refereed by a vendor compiler (as `npu check --referee`): both placements, recorded."""
        model, data = _ref(model, "model"), _path(data, "data", optional=True)
        return models.referee(self.registry_path, model, targets, _ref(compiler, "compiler"), data,
                              CheckOptions.of(options, **kwargs))

    def compile(self, model: str | int, compiler: str, target: str | None = None, data: str | Path | None = None,
                options: CompileOptions | None = None, *, record: bool = True, **kwargs: Any):
        """Compile with a real vendor compiler (`npuyolo compilers install rknn|vela|imx500` first); placement beside the
        profile's, recorded in the registry. rknn and vela calibrate on `data`'s train images (required)."""
        model, data = _ref(model, "model"), _path(data, "data", optional=True)
        return models.compile_model(self.registry_path, model, _ref(compiler, "compiler"), _ref(target, "target", optional=True),
                                    data, CompileOptions.of(options, **kwargs), record=record)

    def export(self, model: str | int, out: str | Path, options: ExportOptions | None = None, **kwargs: Any) -> Path:
        """Static-shape ONNX (as `npuyolo export`): at the size it was trained at unless `imgsz` says otherwise; a run's
        file is recorded as its `onnx/<head>` artefact.

        `out` may replace an earlier npuyolo ONNX file; another existing file or a symlink only with `force`;
        never the registry."""
        model, out = _ref(model, "model"), _path(out, "out")
        return models.export_model(self.registry_path, model, out, ExportOptions.of(options, **kwargs)).onnx

    def rewrite(self, model: str | Path, out: str | Path | None = None, options: RewriteOptions | None = None,
                **kwargs: Any) -> dict:
        """Every LeakyRelu replaced by an equivalent of ReLU-NPU ops (as `npu rewrite`)."""
        model, out = _path(model, "model"), _path(out, "out", optional=True)
        return models.rewrite(self.registry_path, model, out, RewriteOptions.of(options, **kwargs))

    def quantize(self, run: str | int, data: str | Path, options: QuantizeOptions | None = None, *,
                 imgsz: int | None = None, target: str | None = None, **kwargs: Any):
        """FP32 + INT8 QDQ ONNX of a run (calibrated on train images only): `QuantizeOptions` or its fields (calib,
        method, per_channel, sweep, ...) as keywords; `target`: with `ends`, refuse what its profile cannot run.
        Returns a `QuantizeResult` (`.int8`, `.fp32`, the route; `.as_dict()` as `deploy quantize` gives it)."""
        run, data = _ref(run, "run"), _path(data, "data")
        o = of(QuantizeOptions, options, **kwargs)
        return deploy.quantize(self.registry_path, run, data, o, imgsz=imgsz, target=_ref(target, "target", optional=True))

    def qat(self, run: str | int, data: str | Path | None = None, options: QatOptions | None = None, *,
            verbose: bool = True, **kwargs: Any):
        """Quantization-aware fine-tuning as a new run, then its INT8 QDQ export (as `deploy qat`): a `QatResult`."""
        run, data = _ref(run, "run"), _path(data, "data", optional=True)
        return deploy.qat(self.registry_path, run, data, QatOptions.of(options, **kwargs), verbose=verbose)

    def evaluate(self, artefact: str | Path, data: str | Path, options: EvalOptions | None = None, **kwargs: Any):
        """mAP of an artefact with Ultralytics' validator (and the INT8 drop for a run's INT8 file): an `EvalResult`."""
        artefact, data = _path(artefact, "artefact"), _path(data, "data")
        return deploy.evaluate(self.registry_path, artefact, data, EvalOptions.of(options, **kwargs))

    def compare(self, models: list[str | int | Path], data: str | Path, options: CompareOptions | None = None,
                **kwargs: Any):
        """Is the difference real? Each model's mAP50, mAP50-95, P and R with 95% intervals, each pair's paired-bootstrap
        difference and verdict; returns a `npuyolo.deploy.eval.compare.CompareResult`. Models: runs, .pt, ONNX, compiled."""
        if isinstance(models, (str, bytes, Path, int)) or not isinstance(models, (list, tuple)):
            from npuyolo.errors import NpuyoloError

            raise NpuyoloError(f"models must be a list of model references, got {type(models).__name__}", param="models")
        refs = [_ref(m, "models") for m in models]
        return comparison.compare(self.registry_path, refs, _path(data, "data"), CompareOptions.of(options, **kwargs))

    def plan(self, model: str | int, targets: list[str], data: str | Path, options: PlanOptions | None = None,
             **kwargs: Any):
        """Every artefact that could serve each target, verified (placement, FP32/INT8 accuracy, accuracy at the
        deployment threshold) and ranked; returns a `npuyolo.deploy.plan.Plan`."""
        model, data = _ref(model, "model"), _path(data, "data")
        return deploy.plan(self.registry_path, model, targets, data, PlanOptions.of(options, **kwargs))

    def series_plan(self, name: str, targets: list[str], data: str | Path | None = None,
                    options: PlanOptions | None = None, **kwargs: Any):
        """`plan` for each finished member of a series (each recorded on its run): a `SeriesPlan` whose `cells()` say
        which artefact of which variant to ship on which target. `data` defaults to the series' own data set."""
        name, data = _ref(name, "name"), _path(data, "data", optional=True)
        return deploy.series_plan(self.registry_path, name, targets, data, PlanOptions.of(options, **kwargs))

    def bundle(self, run: str | int | None = None, target: str | None = None, *, artefact: str | Path | None = None,
               out: str | Path | None = None, options: BundleOptions | None = None, **kwargs: Any):
        """A torch-free board package (folder + .tar.gz) of the target's chosen artefact in the run's recorded plan, or
        of `artefact`; returns a `npuyolo.deploy.bundle.Bundle`."""
        run, target = _ref(run, "run", optional=True), _ref(target, "target", optional=True)
        artefact, out = _path(artefact, "artefact", optional=True), _path(out, "out", optional=True)
        return deploy.bundle(self.registry_path, run, target, artefact=artefact, out=out,
                             options=BundleOptions.of(options, **kwargs))

    def bench(self, artefact: str | Path, options: BenchOptions | None = None, **kwargs: Any) -> dict:
        """ONNX Runtime CPU latency: the model alone and the whole pipeline (as `deploy bench`)."""
        return deploy.bench(_path(artefact, "artefact"), BenchOptions.of(options, **kwargs))

    def predict(self, model: str | int, source: str | Path, options: PredictOptions | None = None, *,
                out: str | Path | None = None, **kwargs: Any):
        """Detections of a run, .pt or ONNX artefact on an image, folder, glob or video; annotated copies and
        predictions.json/.csv are written to `out` (a run's predict/ folder by default). Returns a PredictResult."""
        model, source, out = _ref(model, "model"), _path(source, "source"), _path(out, "out", optional=True)
        return deploy.predict(self.registry_path, model, source, PredictOptions.of(options, **kwargs), out=out)

    # -- reports ------------------------------------------------------------------------------------------
    def report(self, run: str | int, options: ReportOptions | None = None, *, compare: str | int | None = None,
               out: str | Path | None = None, **kwargs: Any) -> Path | list[Path]:
        """The run's report (as `npuyolo report`): `lang="ko"` one, `lang=["ko", "en"], fmt=["md", "html"]` every
        language in every format from one reading of the run; one report's path, or the list of every path."""
        run, compare, out = _ref(run, "run"), _ref(compare, "compare", optional=True), _path(out, "out", optional=True)
        return reports.report(self.registry_path, run, ReportOptions.of(options, **kwargs), compare=compare, out=out)

    def series_report(self, name: str, options: SeriesReportOptions | None = None, *, out: str | Path | None = None,
                      **kwargs: Any) -> Path | list[Path]:
        """The series overview (as `npuyolo series report`), in one or several languages and formats, as `report`."""
        name, out = _ref(name, "name"), _path(out, "out", optional=True)
        return reports.series_report(self.registry_path, name, SeriesReportOptions.of(options, **kwargs), out=out)
