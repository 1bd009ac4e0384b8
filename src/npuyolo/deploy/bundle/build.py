"""Write a bundle: the artefact, the torch-free runner, the C post-processor, manifest.json and a README for the board.

`inspect_artefact` reads what an artefact is (an npuyolo ONNX export of either head, or a `.rknn` / int8 `.tflite`
that `npu compile` built, whose `<file>.npuyolo.json` names the ONNX graph it came from, or an IMX500 build: the
converter's packerOut.zip ships, with MCT's model_imx.onnx for a host check; the sensor runs the NMS, so its bundle
has no C post-processor and the runner only thresholds, maps back and names); `build_bundle` writes the
folder under a temporary name, renames it into place, then packs it into `<name>.tar.gz` (also written under a
temporary name). The runner and the C files are package data (`templates/`), copied, not generated from strings.
Nothing here imports PyTorch or Ultralytics: the bundle builder runs where the runner will.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path

import jinja2
import onnx
from onnx import helper

from npuyolo.compilers.manifest import manifest_path
from npuyolo.deploy.bundle.manifest import FORMAT, BundleManifest, InputSpec, OutputSpec, PlanFigures
from npuyolo.errors import NpuyoloError
from npuyolo.npu.onnxfile import onnx_metadata
from npuyolo.paths import atomic_path, file_problem, make_dir, safe_join, sha256_file, slug, write_text

__all__ = ["Artefact", "Bundle", "BundleError", "build_bundle", "inspect_artefact"]

TEMPLATES = "templates"
RUNTIME_OF = {"onnx": "onnxruntime", "rknn": "rknnlite", "tflite": "tflite", "imx500": "picamera2"}
DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET = 0.25, 0.7, 300


def npuyolo_version() -> str:
    """The installed npuyolo's version (not `npuyolo.__version__`: the package root reaches the whole API)."""
    try:
        return metadata.version("npuyolo")
    except metadata.PackageNotFoundError:
        return "unknown"


class BundleError(NpuyoloError, ValueError):
    """An artefact, plan or output folder `deploy bundle` cannot use."""


@dataclass(frozen=True)
class Artefact:
    """An artefact to ship, read: its kind and runtime, the npuyolo ONNX graph that describes its outputs, and what
    the runner needs from that graph's metadata."""

    path: Path
    kind: str  # onnx | rknn | tflite | imx500
    reference: Path  # the npuyolo ONNX graph (the artefact itself for kind onnx)
    platform: str | None  # RKNN's target platform, from the build's manifest
    head: str
    imgsz: int
    strides: list[int]
    reg_max: int
    class_sigmoid: str
    names: dict[str, str]
    input: InputSpec
    outputs: list[OutputSpec]
    companions: tuple[tuple[str, Path], ...] = ()  # other files shipped beside the model: (name in the bundle, source)
    device: dict | None = None  # what the device itself does (IMX500: its NMS and the files that run on the host)

    @property
    def runtime(self) -> str:
        return RUNTIME_OF[self.kind]


@dataclass(frozen=True)
class Bundle:
    folder: Path
    archive: Path
    manifest: BundleManifest

    def as_dict(self) -> dict:
        return {"folder": str(self.folder), "archive": str(self.archive), "target": self.manifest.target,
                "runtime": self.manifest.runtime, "artefact": self.manifest.artefact["file"],
                "sha256": self.manifest.artefact["sha256"], "plan": asdict(self.manifest.plan) if self.manifest.plan else None}


# -------------------------------------------------------------------------------------------------- reading artefacts
def _metadata(path: Path) -> dict:
    """npuyolo's export metadata, parsed and checked as `deploy eval` checks it (a damaged file is one line)."""
    try:
        meta = onnx_metadata(path)
    except NpuyoloError as e:
        raise BundleError(str(e)) from None
    if meta.get("npuyolo_head") not in ("npu", "ultralytics"):
        raise BundleError(f"{path}: not an npuyolo export (no npuyolo_head metadata); export it with `npuyolo export`")

    def pos(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    try:
        size, names = json.loads(meta["imgsz"]), json.loads(meta["names"])
        strides, reg_max = json.loads(meta.get("strides", "[8, 16, 32]")), json.loads(meta.get("reg_max", "16"))
        ok = (isinstance(size, list) and len(size) == 2 and size[0] == size[1] and pos(size[0]) and isinstance(names, dict)
              and names and all(str(k).isdigit() for k in names) and isinstance(strides, list) and strides
              and all(pos(s) and size[0] % s == 0 for s in strides) and pos(reg_max))
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise BundleError(f"{path}: damaged npuyolo metadata (imgsz/names/strides/reg_max); export it again with `npuyolo export`")
    return {"head": meta["npuyolo_head"], "imgsz": size[0], "strides": strides, "reg_max": reg_max,
            "class_sigmoid": "in_graph" if meta.get("class_sigmoid", "in_graph") == "in_graph" else "host",
            "names": {str(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}}


def _value_info(v) -> tuple[str, list[int], str]:
    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return v.name, dims, str(helper.tensor_dtype_to_np_dtype(t.elem_type))


def _graph_io(path: Path, meta: dict) -> tuple[tuple[str, list[int], str], list[OutputSpec]]:
    """The graph's one input and its outputs, checked against the metadata (box/class pairs per stride)."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf's DecodeError and friends
        raise BundleError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    size, nc, rm = meta["imgsz"], len(meta["names"]), meta["reg_max"]
    if len(inputs) != 1 or _value_info(inputs[0])[1] not in ([1, 3, size, size], [-1, 3, size, size]):
        raise BundleError(f"{path}: expected one 1x3x{size}x{size} input; export it again with `npuyolo export`")
    outs = [_value_info(o) for o in graph.output]
    specs = []
    if meta["head"] == "ultralytics":
        if len(outs) != 1:
            raise BundleError(f"{path}: expected one output for the Ultralytics head, got {len(outs)}")
        specs.append(OutputSpec(outs[0][0], outs[0][1], outs[0][2], "decoded", None))
    else:
        want = [(role, s, [1, (4 * rm if role == "box" else nc), size // s, size // s]) for s in meta["strides"] for role in ("box", "cls")]
        if len(outs) != len(want) or any(o[1] != w[2] for o, w in zip(outs, want)):
            raise BundleError(f"{path}: its outputs do not match its metadata (box/score pairs for strides {meta['strides']},"
                              f" reg_max {rm}, {nc} classes); export it again with `npuyolo export`")
        specs = [OutputSpec(o[0], o[1], o[2], role, s) for o, (role, s, _) in zip(outs, want)]
    return _value_info(inputs[0]), specs


# -------------------------------------------------------------------------------------------------- IMX500 builds
IMX_PACKAGE, IMX_MODEL, IMX_LABELS = "packerOut.zip", "model_imx.onnx", "labels.txt"  # in the converter's <name>_imx_model/
IMX_DENSE = "model_imx_dense.onnx"  # npu compile's copy of MCT's model without its NMS layer (what deploy eval scores)
IMX_ROLES = ("boxes", "scores", "classes", "count")  # NMSWrapper's outputs, in order (Ultralytics' format='imx')


def _imx500_folder(path: Path) -> Path:
    """The `npu compile --compiler imx500` build folder that `path` is, or lies in: the folder holding
    model_imx_dense.onnx and the converter's `*_imx_model/`; given that folder, `*_imx_model/` itself, packerOut.zip,
    model_imx.onnx or model_imx_dense.onnx."""
    if path.is_dir():
        build = path.parent if path.name.endswith("_imx_model") else path
    elif path.parent.name.endswith("_imx_model"):
        build = path.parent.parent
    else:
        build = path.parent
    if not (build / IMX_DENSE).is_file() or not manifest_path(build / IMX_DENSE).is_file():
        raise BundleError(f"{path}: not an IMX500 build of `npuyolo npu compile --compiler imx500` (no {IMX_DENSE} and its "
                          f"{manifest_path(Path(IMX_DENSE)).name} in {build}); build it with `npuyolo npu compile MODEL "
                          "--compiler imx500 --data DATA.yaml` or `npuyolo deploy plan RUN -t imx500 --data DATA.yaml`")
    return build


def _imx_nms(graph) -> dict:
    """The NMS layer Ultralytics wraps around MCT's model (edge-mdt-cl's MultiClassNMS*): its thresholds."""
    nodes = [n for n in graph.node if "nms" in n.op_type.lower()]
    if len(nodes) != 1:
        return {}
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    out = {"op": f"{nodes[0].domain}::{nodes[0].op_type}" if nodes[0].domain else nodes[0].op_type}
    for key in ("score_threshold", "iou_threshold", "max_detections"):
        if isinstance(attrs.get(key), (int, float)):
            out[key] = round(float(attrs[key]), 6) if key != "max_detections" else int(attrs[key])
    return out


def _imx500_artefact(path: Path) -> Artefact:
    """An IMX500 build: packerOut.zip (what the camera runs, after `imx500-package` on the board), MCT's model_imx.onnx
    (the same network for a host check) and labels.txt; names and size from the FP32 graph npu compile exported beside
    it; the outputs and NMS thresholds from model_imx.onnx's graph."""
    build = _imx500_folder(path)
    dense = build / IMX_DENSE
    redo = "compile it again with `npuyolo npu compile MODEL --compiler imx500 --data DATA.yaml`"
    try:
        record = json.loads(manifest_path(dense).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{manifest_path(dense)}: not a readable manifest ({e}); {redo}") from None
    if not isinstance(record, dict) or record.get("kind") != "onnx" or record.get("mct") is not True or not isinstance(record.get("onnx"), str):
        raise BundleError(f"{manifest_path(dense)}: not an IMX500 build's manifest (kind/mct/onnx); {redo}")
    reference = (build / record["onnx"]).resolve()
    if not reference.is_relative_to(build.resolve()) or file_problem(reference, empty_ok=False) is not None:
        raise BundleError(f"{manifest_path(dense)}: its FP32 graph {reference} is gone; {redo}")
    meta = _metadata(reference)
    converted = sorted(d for d in build.glob("*_imx_model") if d.is_dir())
    if len(converted) != 1:
        raise BundleError(f"{build}: expected one converter output folder *_imx_model, found {len(converted)}; {redo}")
    package, model, labels = (converted[0] / f for f in (IMX_PACKAGE, IMX_MODEL, IMX_LABELS))
    for f, what in ((package, "the converter did not finish"), (model, "MCT did not write its model")):
        if file_problem(f, empty_ok=False) is not None:
            raise BundleError(f"{build}: no {f.name} in {converted[0].name} ({what}; see {build / 'imx500.log'}); {redo}")
    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception as e:  # protobuf's DecodeError and friends
        raise BundleError(f"{model}: not a readable ONNX model ({type(e).__name__}); {redo}") from None
    size, nc = meta["imgsz"], len(meta["names"])
    inits = {i.name for i in graph.initializer}
    inputs = [_value_info(i) for i in graph.input if i.name not in inits]
    outs = [_value_info(o) for o in graph.output]
    nms = _imx_nms(graph)
    if set(nms) != {"op", "score_threshold", "iou_threshold", "max_detections"}:
        raise BundleError(f"{model}: no NMS layer with its thresholds (found {nms or 'none'}); {redo}")
    n = nms["max_detections"]
    want = [[1, n, 4], [1, n], [1, n], [1, 1]]  # MCT's export leaves these dims symbolic (-1 here): checked where set

    def fits(got: list[int], shape: list[int]) -> bool:
        return len(got) == len(shape) and all(g in (-1, d) for g, d in zip(got, shape))

    if (len(inputs) != 1 or inputs[0][1][1:] != [3, size, size] or len(outs) != 4
            or not all(fits(o[1], w) for o, w in zip(outs, want))):
        raise BundleError(f"{model}: not the {size} px detection model with on-sensor NMS npu compile builds (input "
                          f"{[i[1] for i in inputs]}, outputs {[o[1] for o in outs]}); {redo}")
    shipped = [(IMX_MODEL, model)]
    if labels.is_file():
        listed = labels.read_text(encoding="utf-8", errors="replace").splitlines()
        if listed != list(meta["names"].values()):
            raise BundleError(f"{labels}: its class names {listed[:5]} are not the model's {list(meta['names'].values())[:5]}; {redo}")
        shipped.append((IMX_LABELS, labels))
    inp = InputSpec(inputs[0][0], [1, 3, size, size], "NCHW", "RGB", "0-1", "float32")
    outputs = [OutputSpec(o[0], w, o[2], role, None, "as given (picamera2: float32)", None)
               for o, w, role in zip(outs, want, IMX_ROLES)]
    device = {"nms": "on the sensor", **nms, "boxes": "x1 y1 x2 y2 in input-tensor pixels", "host_model": IMX_MODEL,
              "host_model_sha256": sha256_file(model), "package": IMX_PACKAGE, "rpk": "network.rpk",
              "build": build.name}
    return Artefact(package, "imx500", reference, "imx500", meta["head"], size, meta["strides"], meta["reg_max"],
                    meta["class_sigmoid"], meta["names"], inp, outputs, tuple(shipped), device)


def inspect_artefact(path: str | Path) -> Artefact:
    """What `path` is and how to run it: every way it cannot be bundled is one BundleError."""
    path = Path(path)
    if path.is_dir():  # an IMX500 build folder (or its converter output folder)
        return _imx500_artefact(path)
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise BundleError(f"artefact not found: {path}" if why == "not found" else f"artefact {path} {why}")
    suffix = path.suffix.lower()
    compiled = manifest_path(path)
    if path.name in (IMX_PACKAGE, IMX_MODEL, IMX_DENSE):
        return _imx500_artefact(path)
    if suffix == ".onnx" and not compiled.is_file():
        meta = _metadata(path)
        (name, shape, dtype), outputs = _graph_io(path, meta)
        inp = InputSpec(name, [1, 3, meta["imgsz"], meta["imgsz"]], "NCHW", "RGB", "0-1", "float32")
        return Artefact(path, "onnx", path, None, meta["head"], meta["imgsz"], meta["strides"], meta["reg_max"],
                        meta["class_sigmoid"], meta["names"], inp, outputs)
    if suffix == ".onnx":  # MCT's model under another name: a vendor's ONNX file npu compile marked
        return _imx500_artefact(path)
    if suffix not in (".rknn", ".tflite"):
        raise BundleError(f"{path.name}: not an artefact deploy bundle can ship (an npuyolo .onnx export, or a .rknn / "
                          "int8 .tflite built by `npuyolo npu compile`)")
    kind = suffix[1:]
    if not compiled.is_file():
        raise BundleError(f"{path.name} has no {compiled.name} beside it: only models built by `npuyolo npu compile` can be"
                          " bundled (it names the ONNX graph whose outputs the runner decodes)")
    try:
        record = json.loads(compiled.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{compiled}: not a readable manifest ({e}); compile it again with `npuyolo npu compile`") from None
    if not isinstance(record, dict) or record.get("kind") != kind or not isinstance(record.get("onnx"), str):
        raise BundleError(f"{compiled}: damaged (kind/onnx); compile it again with `npuyolo npu compile`")
    reference = (path.parent / record["onnx"]).resolve()
    if file_problem(reference, empty_ok=False) is not None:
        raise BundleError(f"{compiled}: its ONNX graph {reference} is gone; compile it again with `npuyolo npu compile`")
    meta = _metadata(reference)
    (name, _, _), outputs = _graph_io(reference, meta)
    size = meta["imgsz"]
    if kind == "rknn":  # the build's config divides by 255 itself (std 255): RGB uint8 NHWC; rknnlite returns floats
        inp = InputSpec(name, [1, size, size, 3], "NHWC", "RGB", "0-255", "uint8")
        platform = record.get("target") if isinstance(record.get("target"), str) else None
    else:  # onnx2tf's full-integer TFLite: NHWC int8, scale/zero point from the interpreter; outputs int8, maybe NHWC
        inp = InputSpec(name, [1, size, size, 3], "NHWC", "RGB", "0-1", "int8", quantization="runtime")
        outputs = [OutputSpec(o.name, o.shape, "int8", o.role, o.stride, "NCHW or NHWC (matched by shape)", "runtime")
                   for o in outputs]
        platform = None
    return Artefact(path, kind, reference, platform, meta["head"], size, meta["strides"], meta["reg_max"],
                    meta["class_sigmoid"], meta["names"], inp, outputs)


# -------------------------------------------------------------------------------------------------- writing
def vela_builds(tflite: Path, target: str) -> list[tuple[str, Path]]:
    """Vela's compilations of an int8 .tflite that `npu compile` left beside it (`<build>/vela-<config>/<stem>_vela.tflite`,
    the file an Ethos-U runs), as (accelerator config, path): those for `target` (ethos-u55 -> ethos-u55-128) when
    any is, else all of them."""
    build = tflite.parent.parent if tflite.parent.name == "tflite" else tflite.parent
    found = sorted((d.name.removeprefix("vela-"), d / f"{tflite.stem}_vela.tflite") for d in build.glob("vela-*") if d.is_dir())
    found = [(config, f) for config, f in found if file_problem(f, empty_ok=False) is None]
    mine = [(config, f) for config, f in found if config == target or config.startswith(f"{target}-")]
    return mine or found


def _template(name: str) -> str:
    return resources.files("npuyolo.deploy.bundle").joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def _check_thresholds(conf: float, iou: float, max_det: int) -> None:
    for name, v in (("conf", conf), ("iou", iou)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise BundleError(f"{name} must be in (0, 1], got {v!r}", param=name)
    if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
        raise BundleError(f"max_det must be at least 1, got {max_det!r}", param="max_det")


def _is_bundle(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def c_workspace_bytes(imgsz: int, strides: list[int]) -> int:
    """What `npuyolo_workspace_size()` in postprocess.c returns for this model (kept equal to it; tested)."""
    def align16(n: int) -> int:
        return (n + 15) & ~15

    anchors = sum((imgsz // s) ** 2 for s in strides)
    return align16(anchors * 24) + 2 * align16(anchors * 4) + align16(anchors) + 16


def render_readme(manifest: BundleManifest, name: str) -> str:
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    template = "README-imx500.md.j2" if manifest.runtime == "picamera2" else "README.md.j2"
    return env.from_string(_template(template)).render(m=manifest, name=name,
                                                             workspace=c_workspace_bytes(manifest.imgsz, manifest.strides))


def build_bundle(artefact: str | Path, out: str | Path, *, target: str | None = None, conf: float | None = None,
                 iou: float | None = None, max_det: int = DEFAULT_MAX_DET, plan: PlanFigures | None = None,
                 name: str | None = None) -> Bundle:
    """`out/<name>/` (model, npuyolo_infer.py, postprocess.c/.h, manifest.json, README.md) and `out/<name>.tar.gz`;
    for an IMX500 build: packerOut.zip, model_imx.onnx and labels.txt, no C files, the build's NMS IoU.

    `target`: the label the bundle is for (default: the artefact's platform, else its runtime); `conf` defaults to the
    plan's deployment threshold, else 0.25. An earlier bundle of the same name is replaced; any other folder of that
    name is refused. Nothing is written outside `out`.
    """
    conf_given, iou_given = conf is not None, iou is not None
    conf = (plan.conf if plan is not None else DEFAULT_CONF) if conf is None else conf
    iou = DEFAULT_IOU if iou is None else iou
    _check_thresholds(conf, iou, max_det)
    art = inspect_artefact(artefact)
    target = target or art.platform or art.runtime
    imx = art.kind == "imx500"
    if imx:  # the sensor's NMS ran at the build's IoU; the host only thresholds what it kept
        if iou_given and abs(iou - art.device["iou_threshold"]) > 1e-6:
            raise BundleError(f"iou {iou}: the IMX500 runs NMS on the sensor at IoU {art.device['iou_threshold']}, fixed "
                              "when the model was compiled; leave iou out", param="iou")
        iou = art.device["iou_threshold"]
        max_det = min(max_det, art.device["max_detections"])
        if conf < art.device["score_threshold"] and conf_given:
            raise BundleError(f"conf {conf} is below the sensor's NMS score threshold {art.device['score_threshold']}", param="conf")
        conf = max(conf, art.device["score_threshold"])  # a plan's lower threshold: the sensor already cut there
    stem = art.path.parent.parent.name.removeprefix("imx500-imx500-") if imx else art.path.stem
    name = slug(name or f"{stem}-{target}", "bundle")
    out = make_dir(out)
    folder, archive = safe_join(out, name), safe_join(out, f"{name}.tar.gz")
    if folder.exists() and not (folder.is_dir() and _is_bundle(folder)):
        raise BundleError(f"out {folder} exists and is not a bundle npuyolo wrote; choose another folder", param="out")
    model_file = slug(art.path.name, "model")
    companions, device = art.companions, art.device
    if art.kind == "tflite":  # Vela's compilation ships beside the int8 file it was made from: the Ethos-U runs it
        builds = vela_builds(art.path, target)
        names = [slug(f"{art.path.stem}_vela{'' if len(builds) == 1 else '_' + config}.tflite", "vela") for config, _ in builds]
        companions = tuple(zip(names, (f for _, f in builds)))
        device = {"npu_models": [{"file": n, "accelerator": config, "sha256": sha256_file(f), "bytes": f.stat().st_size}
                                 for n, (config, f) in zip(names, builds)]} if builds else None
    manifest = BundleManifest(
        npuyolo_version=npuyolo_version(), target=target, runtime=art.runtime,
        artefact={"file": model_file, "sha256": sha256_file(art.path), "bytes": art.path.stat().st_size, "kind": art.kind,
                  "source": str(art.path.resolve()), "reference_onnx": art.reference.name},
        head=art.head, imgsz=art.imgsz, strides=list(art.strides), reg_max=art.reg_max, class_sigmoid=art.class_sigmoid,
        names=art.names, conf=float(conf), iou=float(iou), max_det=int(max_det), input=art.input, outputs=list(art.outputs),
        plan=plan, device=device)
    tmp = safe_join(out, f".{name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        shutil.copyfile(art.path, tmp / model_file)
        for shipped, source in companions:
            shutil.copyfile(source, tmp / shipped)
        runner = _template("npuyolo_infer.py.tmpl").replace("@NPUYOLO_VERSION@", npuyolo_version()).replace(
            "@TARGET@", target).replace("@RUNTIME@", art.runtime)
        write_text(tmp / "npuyolo_infer.py", runner)
        (tmp / "npuyolo_infer.py").chmod(0o755)
        for c_file in () if imx else ("postprocess.c", "postprocess.h"):  # the sensor's outputs need no decode
            write_text(tmp / c_file, _template(c_file))
        write_text(tmp / "manifest.json", json.dumps(manifest.as_dict(), indent=1, sort_keys=True) + "\n")
        write_text(tmp / "README.md", render_readme(manifest, name))
        old = None
        if folder.exists():  # an earlier bundle: moved aside, then removed once the new one is in place
            old = safe_join(out, f".{name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_path(archive) as partial:
        with tarfile.open(partial, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                info = tar.gettarinfo(str(path), arcname=f"{name}/{path.name}")
                info.mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return Bundle(folder, archive, manifest)
