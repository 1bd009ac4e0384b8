"""One options object per operation: each default and its help stated once, here.

The CLI reads its flags' defaults and help from these classes (`cli.common.option`), the Python API accepts an object
or its fields as keywords (`Options.of`), and the services take the object. An unknown key or a value of the wrong
type is one `NpuyoloError`, as `Recipe` refuses them. This module imports nothing heavy: `npuyolo --help` reads it.

The machinery (`Options`, `opt`, `of`) is `npuyolo.options`, low enough for a stage to state its own options with it.
"""

from __future__ import annotations

from pathlib import Path  # noqa: F401 - the fields' annotations name it; the CLI evaluates them here (`cli.common`)
from typing import Any, ClassVar

from npuyolo.errors import NpuyoloError
from npuyolo.options import Field, Options, check_types, fields_of, of, opt

__all__ = ["BenchOptions", "BundleOptions", "CheckOptions", "CompareOptions", "CompileOptions", "DistillOptions",
           "EvalOptions", "ExecutorOptions", "ExportOptions", "Field", "HybridOptions", "MlflowOptions", "Options", "PlanOptions",
           "PredictOptions", "PruneOptions", "QatOptions", "ReluGapOptions", "ReportOptions", "ResumeOptions", "RewriteOptions",
           "SeriesReportOptions", "StudyReportOptions", "SynthOptions", "TrainOptions", "VariantOptions", "VariantsOptions",
           "check_types", "fields_of", "of", "opt"]


# ---------------------------------------------------------------------------------------------- models and the NPU
IMGSZ_HELP = "Static input size [default: the size it was trained at (run or .pt), else 640]."
HEAD_HELP = "npu (L4 cut) or ultralytics [default: the level's head]"
NC_HELP = "Classes, for an untrained variant."


class ExportOptions(Options):
    operation: ClassVar[str] = "export"
    imgsz: int | None = opt(None, IMGSZ_HELP)
    head: str | None = opt(None, HEAD_HELP)
    nc: int = opt(80, NC_HELP)
    force: bool = opt(False, "Let the output replace a file npuyolo did not write, or a symlink (never the registry).", "--force")


class CheckOptions(Options):
    operation: ClassVar[str] = "check"
    imgsz: int | None = opt(None, "Export size for non-ONNX models [default: the size it was trained at (run or .pt), else 640].")
    head: str | None = opt(None, HEAD_HELP)
    nc: int = opt(80, NC_HELP)


class CompileOptions(CheckOptions):
    operation: ClassVar[str] = "compile"
    # {calib}: who needs how many, filled from the compiler registry when `npu compile --help` is shown (CompilersHelp)
    calib: int = opt(8, "Training images the vendor quantizer calibrates on ({calib}); placement does not depend on it, the accuracy `deploy eval` of the build measures does.")


class VariantsOptions(Options):
    operation: ClassVar[str] = "variants"
    scale: str = opt("n", "Width/depth scale: n, s, m, l, x.")


class VariantOptions(Options):
    operation: ClassVar[str] = "variants show"
    nc: int = opt(80, "Number of classes.")
    imgsz: int = opt(640, "Input size for GFLOPs.")


class RewriteOptions(Options):
    operation: ClassVar[str] = "npu rewrite"
    leaky: str = opt("relu-decomp", "relu-decomp (a*x + (1-a)*relu(x)), relu-exact or max.")
    force: bool = opt(False, "Let the output replace a file npuyolo did not write, or a symlink (never the registry).", "--force")


# ---------------------------------------------------------------------------------------------- data
class SynthOptions(Options):
    operation: ClassVar[str] = "data synth"
    train: int = opt(400, "Training images.")
    val: int = opt(100, "Validation images.")
    imgsz: int = opt(320, "Image side in px.")
    seed: int = opt(0, "Seed of the drawing (the same seed, the same images).")
    force: bool = opt(False, "Empty a set npuyolo wrote there before, then write anew.", "--force")


# ---------------------------------------------------------------------------------------------- training
class TrainOptions(Options):
    """What a training run takes besides its recipe (the recipe's own defaults live in train/default_recipe.yaml)."""

    operation: ClassVar[str] = "train"
    recipe: Path | None = opt(None, "Recipe YAML over the report's defaults.")
    name: str | None = opt(None, "Run name [default: <variant>-<id>].")
    weights: Path | None = opt(None, "Local .pt to transfer matching tensors from.")
    act_anneal: str | None = opt(None, "Train a ReLU variant through this LeakyReLU (e.g. leaky0.1), slope annealed to exactly 0.", "--act-anneal")
    anneal_epochs: str | None = opt(None, "START:END epochs of the slope's fall (from 1) [default: 1:half of training].", "--anneal-epochs")
    anneal_schedule: str = opt("linear", "linear or cosine.", "--anneal-schedule")


class ResumeOptions(Options):
    operation: ClassVar[str] = "resume"
    source: str = opt("last", "With --resume: last, previous (the checkpoint before last) or best.", "--from")


class MlflowOptions(Options):
    operation: ClassVar[str] = "runs export"
    experiment: str = opt("npuyolo", "MLflow experiment name.")


class DistillOptions(Options):
    operation: ClassVar[str] = "distill"
    alpha: float = opt(1.0, "Weight of the class-score distillation term.")
    beta: float = opt(1.0, "Weight of the box-distribution (DFL) KL term.")
    gamma: float = opt(0.0, "Weight of neck feature imitation (1x1 adapters); 0 = off.")
    temperature: float = opt(2.0, "Softening temperature.")
    recipe: Path | None = opt(None, "Recipe YAML over the report's defaults.")
    name: str | None = opt(None, "Run name.")


class PruneOptions(Options):
    operation: ClassVar[str] = "prune"
    ratio: float = opt(0.3, "Share of each prunable layer's channels to remove.")
    method: str = opt("l1", "l1 (weight magnitude) or group-norm (dependency-group L2 norm).")
    finetune_epochs: int = opt(10, "Fine-tuning epochs (a new run, the parent's recipe).", "--epochs", "--finetune-epochs")
    data: Path | None = opt(None, "data.yaml [default: the parent run's].")


class ExecutorOptions(Options):
    """Where a series' members train; the Ray fields are `train.ray_executor.RayOptions`' (a test holds them equal),
    and `process` takes three of them (`train.process_executor.ProcessOptions`)."""

    operation: ClassVar[str] = "series"
    executor: str = opt("local", "local (one member after another, here), process (members side by side in processes on "
                                 "this machine, no Ray needed) or ray (members in parallel as Ray tasks).")
    address: str | None = opt(None, "Ray cluster: auto or ray://HOST:PORT [default: a local Ray runtime].")
    gpus_per_member: float = opt(0.0, "GPUs per member with --executor ray (fractions share a GPU, e.g. 0.25).")
    cpus_per_member: float = opt(1.0, "CPUs per member with --executor ray; torch threads per member with --executor process.")
    max_parallel: int | None = opt(None, "Members training at once with --executor ray or process [default: ray: as "
                                         "resources allow; process: every member, at most twice the cores / cpus-per-member].")
    max_retries: int = opt(1, "Retries of a member whose worker died, from its last checkpoint (--executor ray or process).")

    def ray_fields(self) -> dict[str, Any]:
        """The Ray fields that differ from their defaults (so the local executor refuses Ray-only ones given)."""
        defaults = type(self)()
        return {k: v for k, v in self.as_dict().items() if k != "executor" and v != getattr(defaults, k)}


class HybridOptions(Options):
    operation: ClassVar[str] = "hybrid search"
    candidates: list[str] | None = opt(None, "Hybrid variant (repeatable) [default: 5 maps].", "--candidate")
    budget: int = opt(10, "Training epochs per candidate.", "--epochs", "--budget")
    imgsz: int = opt(640, "Training and check size.")
    target: str = opt("relu-only", "NPU target for the compatibility axis.", "--target", "-t")
    name: str = opt("hybrid", "Series name.")
    scheduler: str | None = opt(None, "asha: stop weak candidates early (Ray Tune's ASHA; needs --executor ray).")
    grace_epochs: int = opt(1, "With --scheduler asha: epochs every candidate trains before it can be stopped.")
    asha_metric: str = opt("map50_95", "With --scheduler asha: map50_95, map50 or val_loss.")


class ReluGapOptions(Options):
    operation: ClassVar[str] = "study relu-gap"
    name: str = opt("relu-gap", "Study (series) name.")
    epochs: int = opt(12, "Training epochs of every member.")
    imgsz: int = opt(160, "Training and export size.")
    seeds: list[int] = opt((0, 1), "Seeds, e.g. 0,1,2.")
    targets: list[str] | None = opt(None, "NPU target (repeatable) [default: relu-only].", "--target", "-t")
    extra_variants: list[str] | None = opt(None, "Extra variant to train alongside (repeatable).", "--variant")
    anneal: str = opt("leaky0.1", "LeakyReLU the annealed route starts from.")
    recipe: Path | None = opt(None, "Recipe YAML over the report's defaults.")
    out: Path | None = opt(None, "Report folder [default: <registry dir>/reports/study-<name>].")

    def __post_init__(self) -> None:
        if isinstance(self.seeds, str):  # "0,1": the CLI's form, accepted from Python too
            try:
                object.__setattr__(self, "seeds", [int(x) for x in self.seeds.split(",") if x.strip()])
            except ValueError:
                raise NpuyoloError(f"seeds must be comma-separated integers, e.g. 0,1,2, got {self.seeds!r}"[:200], param="seeds") from None
        super().__post_init__()


# ---------------------------------------------------------------------------------------------- deployment
DEPLOY_CONF = 0.25  # the deployment threshold a plan judges at and predict draws at (deploy.plan.DEPLOY_CONF's value)


class PlanOptions(Options):
    operation: ClassVar[str] = "plan"
    conf: float = opt(DEPLOY_CONF, "Deployment confidence threshold (what the NPU runtime bakes in).")
    calib: int = opt(100, "Calibration images.")
    holdout: int = opt(50, "Held-back train images the calibration sweep is judged on.")
    sweep: bool = opt(True, "Calibrate with the sweep's choice, or with MinMax.", "--sweep/--no-sweep")
    workers: int | None = opt(None, "Processes that build the INT8 files and score every file [default: one per core]; "
                                    "the plan is the same whatever the number.")
    reuse: bool = opt(True, "Take the INT8 files and scores an earlier plan of this model built from the same inputs "
                            "(content keys), or build everything again.", "--reuse/--no-reuse")
    imgsz: int | None = opt(None, "Export size [default: the run's].")
    vendor_int8: bool = opt(False, "Where the target's compiler is installed (rknn, vela): score the vendor's own INT8 "
                                   "model of each candidate and rank by it.", "--vendor-int8")


class QatOptions(Options):
    operation: ClassVar[str] = "qat"
    epochs: int = opt(5, "Fine-tuning epochs with INT8 fake-quantization.")
    lr0: float | None = opt(None, "Learning rate [default: a tenth of the parent's lr0].")
    calib: int = opt(200, "Calibration images for the INT8 export.")
    per_channel: bool = opt(True, "Weight scales of the export (QAT trains per-channel).", "--per-channel/--per-tensor")
    bias_correct: bool = opt(False, "Bias correction in the export.", "--bias-correct")
    ends: str | None = opt(None, "int16 or float first/output Convs in the export.")


class EvalOptions(Options):
    operation: ClassVar[str] = "evaluate"
    layers: bool = opt(False, "With a .rknn: RKNN's per-layer cosine (accuracy_analysis) beside our QDQ model's, on the same photo.", "--layers")
    qdq: Path | None = opt(None, "With layers: our INT8 QDQ ONNX file to compare [default: quantized here, per-channel MinMax].")


class BenchOptions(Options):
    operation: ClassVar[str] = "bench"
    runs: int = opt(50, "Timed runs (after 10 warm-up runs).")
    threads: int | None = opt(None, "ONNX Runtime intra-op threads [default: all cores].")


class PredictOptions(Options):
    operation: ClassVar[str] = "predict"
    conf: float = opt(DEPLOY_CONF, "Confidence threshold, in (0, 1].")
    iou: float = opt(0.7, "NMS IoU threshold, in (0, 1].")
    imgsz: int | None = opt(None, "Input size [default: the ONNX file's, the run's, else 640].")
    max_det: int = opt(300, "Most boxes kept per image.", "--max-det")


class BundleOptions(Options):
    operation: ClassVar[str] = "bundle"
    conf: float | None = opt(None, f"Default score threshold in the manifest [default: the plan's, else {DEPLOY_CONF}].")
    iou: float | None = opt(None, f"Default NMS IoU threshold in the manifest [default: {PredictOptions.iou}].")


class CompareOptions(Options):
    operation: ClassVar[str] = "compare"
    bootstrap: int = opt(1000, "Paired resamples of the val images.")
    seed: int = opt(0, "Seed of the resamples (the same seed, the same intervals).")
    plot: Path | None = opt(None, "Forest plot of the mAP50 differences (PNG) [default: under the registry's folder].")
    draw: bool = opt(True, "Draw the forest plot.")


# ---------------------------------------------------------------------------------------------- reports
class StudyReportOptions(Options):
    operation: ClassVar[str] = "study report"
    lang: str = opt("en", "ko or en.")


class ReportOptions(Options):
    """A run's (or series') reports: every language in every format, from one reading of the registry (issue 34). One
    value (`lang="ko"`) is a list of one."""

    operation: ClassVar[str] = "report"
    lang: list[str] = opt(["en"], "ko or en (repeatable: --lang ko --lang en writes both).")
    fmt: list[str] = opt(["md"], "md or html, one self-contained file (repeatable: --format md --format html writes both).",
                         "--format")

    def __post_init__(self) -> None:
        for name in ("lang", "fmt"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, [getattr(self, name)])
        super().__post_init__()
        for name in ("lang", "fmt"):
            if not getattr(self, name):
                raise NpuyoloError(f"{name} must name at least one {'language' if name == 'lang' else 'format'}", param=name)
            object.__setattr__(self, name, list(dict.fromkeys(getattr(self, name))))  # each once, in the order given


class SeriesReportOptions(ReportOptions):
    operation: ClassVar[str] = "series report"
    target: str = opt("relu-only", "NPU target for the accuracy vs compatibility plot.", "--target", "-t")
