"""INT8 accuracy as the NPU will compute it: a vendor's own quantized model scored beside npuyolo's ONNX files.

No NPU runs npuyolo's QDQ model. RKNN-Toolkit2, TFLite (behind Vela) and MCT (behind IMX500) quantize in their own
way, so a figure from our QDQ model says little about the device. Each compiler's environment can score its own
quantized model on this CPU (RKNN's simulator; TFLite's reference kernels for the file Vela compiles; MCT's quantized
model without its NMS layer, in ONNX Runtime with MCT's quantizer ops): `compilers/score_driver.py` runs there
and answers inference requests, while the letterbox, host decode, NMS and metrics stay npuyolo's own (the same
`validate` as `deploy eval` of an ONNX file), so the numbers compare.

Before any figure, the input contract is checked on one golden image (`deploy.eval.contract`): a compiled model that
reads BGR for RGB or NHWC for NCHW is one clear error, not a silent zero mAP.

`npu compile` writes `<compiled file>.npuyolo.json` beside each build: which ONNX file the compiler was given and,
for RKNN, the config and calibration list to rebuild it for the simulator (a .rknn file cannot be simulated).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from npuyolo.compilers.envs import clean_env
from npuyolo.compilers.manifest import file_digest, manifest_path
from npuyolo.compilers.registry import COMPILERS, DamagedManifest, ScoreInputs, require, scorer
from npuyolo.data.calibration import calibration_images, letterbox
from npuyolo.deploy.eval.contract import ContractReport, InputContract, check_contract, prepare
from npuyolo.deploy.eval.evaluate import Deployable, DeployError, load_deployable, validate_matched
from npuyolo.stats.matched import MatchedStats
from npuyolo.deploy.eval.layers import LayerRow, check_qdq, compare_layers, parse_error_analysis, qdq_layer_errors
from npuyolo.deploy.int8.quantize import quantize_onnx
from npuyolo.npu.onnxfile import written_by_npuyolo
from npuyolo.paths import FileReadError, file_problem, read_regular_file, write_bytes

__all__ = ["CompiledArtefact", "CompiledScore", "VendorRuntime", "evaluate_compiled", "is_compiled", "read_compiled"]

DRIVER = Path(__file__).resolve().parents[2] / "compilers" / "score_driver.py"
# a compiler's scoring kind (rknn, tflite, onnx: MCT's model for IMX500, ...): its `Scoring` in compilers/registry.py
# says which compiler's environment scores it, how the file is recognised and how its runtime wants the image
Kind = str


def suffixes() -> dict[str, Kind]:
    """A compiled file's suffix -> its kind (`.rknn`, `.tflite`), from the compiler registry."""
    return {s.scoring.suffix: s.scoring.kind for s in COMPILERS.values() if s.scoring.suffix}


def onnx_kinds() -> list[Kind]:
    """The kinds written as ONNX files that a manifest marks as compiled (MCT's model for IMX500), registry order."""
    return [s.scoring.kind for s in COMPILERS.values() if s.scoring.suffix is None]


def scored_files() -> str:
    """What `deploy eval` scores in a compiler's environment, in words, from the registry."""
    said = [s.scoring.description for s in COMPILERS.values()]
    return ", ".join(said[:-1]) + f", or {said[-1]}" if len(said) > 1 else "".join(said)


@dataclass(frozen=True)
class CompiledArtefact:
    """A compiled model and what scoring it needs: its kind, the FP32 ONNX file it came from, the driver's arguments."""

    kind: Kind
    path: Path
    onnx: Path
    args: tuple[str, ...]  # score_driver.py arguments after the kind
    contract: InputContract
    folder: Path  # the driver's working folder (RKNN's calibration list is relative to it)

    @property
    def compiler(self) -> str:
        """The compiler whose environment scores this kind."""
        return scorer(self.kind).name


def is_compiled(path: str | Path) -> bool:
    """A file `deploy eval` scores in a compiler's environment: .rknn, .tflite, or an ONNX file a vendor tool wrote
    (MCT's quantized model for IMX500), which `npu compile` marks with a manifest beside it."""
    path = Path(path)
    if path.suffix.lower() in suffixes():
        return True
    if path.suffix.lower() != ".onnx" or not onnx_kinds() or not manifest_path(path).is_file():
        return False
    try:  # a manifest written for another file (copied beside a plain export) does not make this one compiled
        record = json.loads(read_regular_file(manifest_path(path), MANIFEST_MAX_BYTES).decode("utf-8"))
        recorded = record.get("sha256") if isinstance(record, dict) else None
        if not isinstance(recorded, str):  # written before sizes were recorded: npuyolo's own export is never compiled
            return not written_by_npuyolo(path)
        return file_digest(path)[1] == recorded
    except (FileReadError, OSError, UnicodeDecodeError, ValueError, RecursionError):
        return True  # read_compiled says what is wrong with it


MANIFEST_MAX_BYTES = 1 << 20  # a manifest is a few hundred bytes
CALIB_LIST_MAX_BYTES = 1 << 20


def one_line(text: str, limit: int = 300) -> str:
    """A vendor's message (often a traceback) as one line: its first line and, when they differ, its last."""
    lines = [" ".join(x.split()) for x in str(text).splitlines() if x.strip()] or ["no message"]
    said = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return said if len(said) <= limit else said[:limit - 3] + "..."


def _listing(folder: Path, value, what: str, manifest: Path) -> Path:
    """A file list the manifest names (RKNN's calibration list), inside the build folder, every file it lists too."""
    listing = _file(folder, value, what, manifest, folder)
    _check_calibration_list(listing, folder, manifest)
    return listing


def _file(folder: Path, value, what: str, manifest: Path, root: Path) -> Path:
    """A file the manifest names, relative to the compiled file's folder; it must stay inside `root` (the build's own
    folder, or the export folder npu compile built it from): a manifest can be forged or copied anywhere, and must not
    make any model or list on disk its reference."""
    if not isinstance(value, str) or not value:
        raise DeployError(f"{manifest}: no {what} recorded; compile it again with `npuyolo npu compile`")
    path = (folder / value).resolve()
    if not path.is_relative_to(root):
        raise DeployError(f"{manifest}: its {what} {value!r} lies outside {root}; compile it again with `npuyolo npu compile`")
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise DeployError(f"{manifest}: its {what} {path} {why}; compile it again with `npuyolo npu compile`")
    return path


def read_compiled(path: str | Path) -> CompiledArtefact:
    """The compiled file and its manifest, checked: every way it cannot be scored is one DeployError."""
    path = Path(path)
    why = file_problem(path, empty_ok=False)
    if why is not None:
        raise DeployError(f"compiled model {path} {why}")
    kind = suffixes().get(path.suffix.lower()) or (onnx_kinds()[0] if is_compiled(path) else None)
    if kind is None:
        raise DeployError(f"{path.name}: not a compiled model deploy eval can score ({scored_files()})")
    manifest = manifest_path(path)
    if not manifest.is_file():
        raise DeployError(f"{path.name} has no {manifest.name} beside it: only models built by `npuyolo npu compile` "
                          "can be scored (it records the ONNX file and calibration the build used)")
    try:
        record = json.loads(read_regular_file(manifest, MANIFEST_MAX_BYTES).decode("utf-8"))
    except FileReadError as e:
        raise DeployError(f"{e}; compile it again with `npuyolo npu compile`") from None
    except RecursionError:
        raise DeployError(f"{manifest}: not a readable manifest (nested too deep); compile it again") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{manifest}: not a readable manifest ({one_line(e)}); compile it again") from None
    if isinstance(record, dict) and path.suffix.lower() == ".onnx" and record.get("kind") in onnx_kinds():
        kind = record["kind"]  # of the ONNX kinds, the one its manifest says
    if not isinstance(record, dict) or record.get("kind") != kind:
        raise DeployError(f"{manifest}: it describes a {record.get('kind') if isinstance(record, dict) else '?'} build, "
                          f"not this {kind} file; compile it again")
    folder = path.parent.resolve()
    scoring = scorer(kind).scoring
    # where npu compile puts the ONNX file it compiled, from the compiled file's folder (`Scoring.root`)
    onnx = _file(folder, record.get("onnx"), "ONNX file", manifest, scoring.root(folder))
    try:  # the compiler's own arguments for score_driver.py, from the manifest (`Scoring.args`)
        args = tuple(scoring.args(ScoreInputs(path, record, onnx, lambda key, what: _listing(folder, record.get(key), what,
                                                                                               manifest))))
    except DamagedManifest as e:
        raise DeployError(f"{manifest}: damaged ({e}); compile it again") from None
    _check_unchanged(path, record, manifest)
    imgsz = load_deployable(onnx).imgsz
    return CompiledArtefact(kind, path, onnx, args, InputContract(imgsz, **scoring.contract), folder)


def _check_unchanged(path: Path, record: dict, manifest: Path) -> None:
    """The compiled file is the one npu compile built: RKNN's simulator rebuilds from the manifest and never reads the
    .rknn file, so without this a file cut to 10 bytes would score exactly like the build."""
    size, sha256 = record.get("size"), record.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha256, str):
        raise DeployError(f"{manifest}: records no size and sha256 of the built file (written by an older npuyolo); "
                          "compile it again with `npuyolo npu compile`")
    got_size, got_sha = file_digest(path)
    if (got_size, got_sha) != (size, sha256):
        raise DeployError(f"{path.name} changed since npu compile built it ({got_size} bytes, sha256 {got_sha[:12]}; "
                          f"built: {size} bytes, {sha256[:12]}); compile it again with `npuyolo npu compile`")


def _check_calibration_list(listing: Path, folder: Path, manifest: Path) -> None:
    """RKNN reads every path on every line of its list (one per model input); each must lie in the build folder,
    where npu compile copied the calibration images."""
    try:
        text = read_regular_file(listing, CALIB_LIST_MAX_BYTES).decode("utf-8")
    except (FileReadError, UnicodeDecodeError) as e:
        raise DeployError(f"{manifest}: its calibration list cannot be read ({one_line(e)}); compile it again") from None
    for name in text.split():
        if not (folder / name).resolve().is_relative_to(folder):
            raise DeployError(f"{manifest}: its calibration list {listing.name} names a file outside {folder}; "
                              "compile it again with `npuyolo npu compile`")


def _frame(payload: bytes) -> bytes:
    return struct.pack("<Q", len(payload)) + payload


class VendorRuntime:
    """score_driver.py in the compiler's environment, behind a call: prepared input in, output tensors out."""

    def __init__(self, art: CompiledArtefact, log: Path, timeout: float = 1800):
        env = require(art.compiler)
        self.art, self.log = art, log
        self._stderr = log.open("ab")
        self.proc = subprocess.Popen([env.python, str(DRIVER), art.kind, *art.args], cwd=art.folder, env=clean_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        started = time.monotonic()
        head = self.proc.stdout.read(8)
        if len(head) < 8:  # it died before answering (a truncated .tflite can take TFLite down with it)
            why = self._stopped()
            self.close()
            raise DeployError(f"{art.kind} runtime for {art.path.name} did not start ({why}); see {log}")
        try:
            hello = json.loads(self.proc.stdout.read(struct.unpack("<Q", head)[0]))
        except ValueError:
            hello = {"ok": False, "error": "its first answer is not JSON"}
        if not isinstance(hello, dict) or not hello.get("ok"):
            self.close()
            error = hello.get("error", "no answer") if isinstance(hello, dict) else "no answer"
            raise DeployError(f"{art.kind} runtime for {art.path.name} did not start ({one_line(error)}); see {log}")
        self.info = hello
        self.start_s = round(time.monotonic() - started, 2)

    def _stopped(self) -> str:
        """How the driver ended: its exit code (waited for) and the last line it wrote to its log."""
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.flush()
        try:
            lines = [x for x in self.log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        except OSError:
            lines = []
        said = f"exit {code}" if code is not None else "no answer"
        return f"{said}: {one_line(lines[-1], 200)}" if lines else said

    def _read(self) -> bytes:
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise DeployError(f"the {self.art.kind} runtime stopped ({self._stopped()}); see {self.log}")
        size = struct.unpack("<Q", head)[0]
        return self.proc.stdout.read(size)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(x), allow_pickle=False)
        self.proc.stdin.write(_frame(buf.getvalue()))
        self.proc.stdin.flush()
        head = json.loads(self._read())
        if "error" in head:
            raise DeployError(f"{self.art.kind} inference failed: {one_line(head['error'])}; see {self.log}")
        return [np.load(io.BytesIO(self._read()), allow_pickle=False) for _ in range(head["outputs"])]

    def analyze(self, image: Path, folder: Path) -> dict:
        """RKNN's accuracy_analysis on one image (per-layer cosine, the toolkit's own table). Absolute paths: the driver
        runs in the artefact's folder, not ours."""
        request = {"analyze": str(Path(image).resolve()), "dir": str(Path(folder).resolve())}
        self.proc.stdin.write(_frame(json.dumps(request).encode()))
        self.proc.stdin.flush()
        answer = json.loads(self._read())
        if "error" in answer:
            raise DeployError(f"{self.art.kind} accuracy analysis failed: {one_line(answer['error'])}; see {self.log}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(_frame(b""))
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> VendorRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def runtime_for(art: CompiledArtefact, log: Path):
    """The compiled model's runtime: its compiler's own (`Scoring.runtime`), else score_driver.py in its environment."""
    made = scorer(art.kind).scoring.runtime
    return (made or VendorRuntime)(art, log)


def _onnx_runner(model: Deployable):
    return lambda x: model.sess.run(None, {model.input_name: x})


@dataclass
class CompiledScore:
    """The vendor's quantized model on val beside its FP32 ONNX file, through the same pipeline."""

    artefact: str
    kind: str  # rknn | tflite | onnx (MCT's model for IMX500)
    runtime: str
    onnx: str  # the FP32 file the compiler was given
    contract: str  # the input contract checked on the golden image
    cosine: list[float | None]  # per output, compiled vs FP32, on the golden image (None: too little signal to judge)
    result: dict  # P, R, mAP50, mAP50-95, per class, images, imgsz
    fp32: dict
    seconds: float = 0.0
    layers: list[LayerRow] | None = None  # RKNN's per-layer cosine beside our QDQ model's, worst first (--layers)
    qdq: str | None = None  # our QDQ model the layers were compared with
    deploy_conf: float | None = None  # the deployment threshold both were also scored at (None: not asked)
    at_conf: dict | None = None  # the compiled model at deploy_conf
    fp32_at_conf: dict | None = None  # its FP32 file at deploy_conf
    stats: MatchedStats | None = field(default=None, repr=False)  # the compiled model's per-image statistics (compare)
    fp32_stats: MatchedStats | None = field(default=None, repr=False)  # its FP32 file's, when scored here

    @property
    def retention(self) -> dict[str, float | None] | None:
        """At the deployment threshold, the compiled model against FP32 at the same threshold (1.0: nothing lost)."""
        if self.at_conf is None or self.fp32_at_conf is None:
            return None
        return {m: (self.at_conf[m] / self.fp32_at_conf[m] if self.fp32_at_conf[m] else None)
                for m in ("precision", "recall", "map50")}

    @property
    def drop_pp(self) -> dict[str, float]:
        return {m: (self.fp32[m] - self.result[m]) * 100 for m in ("map50", "map50_95", "precision", "recall")}

    @property
    def drop_pp_per_class(self) -> dict[str, float]:
        base = self.fp32.get("per_class", {})
        return {c: (base[c]["map50"] - v["map50"]) * 100 for c, v in self.result["per_class"].items() if c in base}

    def as_dict(self) -> dict:
        """The shape `deploy eval` prints and records: the compiled model's figures first, FP32 and the drops beside."""
        return {"kind": self.kind, "artefact": self.artefact, "runtime": self.runtime, "onnx": self.onnx,
                "contract": self.contract, "cosine": self.cosine, **self.result, "fp32": self.fp32,
                "drop_pp": self.drop_pp, "drop_pp_per_class": self.drop_pp_per_class, "seconds": self.seconds,
                **({"layers": [asdict(r) for r in self.layers], "qdq": self.qdq} if self.layers is not None else {}),
                **({"deploy_conf": self.deploy_conf, "at_conf": self.at_conf, "fp32_at_conf": self.fp32_at_conf,
                    "retention": self.retention} if self.at_conf is not None else {})}


def evaluate_compiled(path: str | Path, data: str | Path, batch: int = 8, conf: float = 0.001,
                      fp32: dict | None = None, layers: bool = False, qdq: str | Path | None = None,
                      calib: int = 32, deploy_conf: float | None = None) -> CompiledScore:
    """Score a vendor-compiled model on val beside its FP32 ONNX file (`fp32`: that file's score, when known); the
    input contract is checked first, on one real training photo.

    `layers` (RKNN only, the one toolchain that exposes it): the toolkit's accuracy_analysis on that photo, each Conv's
    cosine beside our QDQ model's on the same photo (`qdq`, else quantized here: per-channel MinMax on `calib` train
    images), so a user sees which layer the vendor's quantizer hurts and whether ours does too.

    `deploy_conf`: also score both at the threshold the NPU runtime bakes in (mAP at 0.001 overstates what ships),
    from the same forward passes."""
    started = time.perf_counter()
    art = read_compiled(path)
    if layers and scorer(art.kind).scoring.layers is None:
        have = " or ".join(s.scoring.layers for s in COMPILERS.values() if s.scoring.layers) or "a toolkit's analysis"
        raise DeployError(f"per-layer analysis needs {have}; {art.path.name} is a {art.kind} build")
    require(art.compiler)  # a missing compiler is the first thing the user hears, not after the FP32 validation
    if qdq is not None:  # loadable, and quantized from this build's FP32 graph: before any scoring
        check_qdq(art.onnx, Path(qdq))
    model = load_deployable(art.onnx)
    confs = (conf,) if deploy_conf is None else (conf, deploy_conf)
    fp32_at_conf, fp32_kept = None, []
    if fp32 is None or deploy_conf is not None:
        fp32_scores = _validate_at(model, _onnx_runner(model), None, data, batch, confs, keep=fp32_kept)
        fp32 = fp32 or fp32_scores[0]
        fp32_at_conf = fp32_scores[-1] if deploy_conf is not None else None
    log = art.path.with_name(art.path.name + ".eval.log")
    golden = _golden(data, model.imgsz)
    vendor_rows = None
    with runtime_for(art, log) as runtime:
        report = check_runtime(model, runtime, art, golden)
        kept: list = []
        scored, *at_conf = _validate_at(model, runtime, report, data, batch, confs, art.contract, keep=kept)
        if layers:
            folder = art.path.resolve().with_name(art.path.name + ".layers")
            folder.mkdir(exist_ok=True)
            vendor_rows = parse_error_analysis(runtime.analyze(_write_golden(golden, folder), folder)["error_analysis"])
    rows = None
    if layers:
        if qdq is None:
            qdq = folder / f"{art.onnx.stem}-npuyolo-int8.onnx"
            quantize_onnx(art.onnx, qdq, data, calib=calib, per_channel=True)
        rows = compare_layers(art.onnx, vendor_rows, qdq_layer_errors(art.onnx, Path(qdq), golden))
    return CompiledScore(artefact=str(art.path), kind=art.kind, runtime=runtime.info.get("runtime", art.kind),
                         onnx=str(art.onnx), contract=art.contract.describe() + ("" if report.judged else
                                                                                 " (not judged: no FP32 output varies on the golden image; the model is too weak to judge)"),
                         cosine=[round(c, 5) if s else None for c, s in zip(report.cosine, report.signal)],
                         result=scored, fp32=fp32, seconds=round(time.perf_counter() - started, 1), layers=rows,
                         qdq=str(Path(qdq).resolve()) if rows is not None else None, deploy_conf=deploy_conf,
                         at_conf=at_conf[0] if at_conf else None, fp32_at_conf=fp32_at_conf,
                         stats=kept[0] if kept else None, fp32_stats=fp32_kept[0] if fp32_kept else None)


def compiled_side(info: dict, contract: InputContract) -> int | None:
    """The input side the vendor runtime reports (`input_shape` in its first answer), read in its declared layout."""
    shape = info.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        return None
    side = shape[1] if contract.layout == "NHWC" else shape[2]
    return side if side > 0 else None


def check_runtime(model: Deployable, runtime: VendorRuntime, art: CompiledArtefact, golden: np.ndarray) -> ContractReport:
    """What the runtime said of its model, then the input contract on the golden image (with the input size it
    reports, so a build at another size than its FP32 file is named as such)."""
    info = runtime.info
    refuse = scorer(art.kind).scoring.refuse  # what the runtime's first answer shows wrong with the file, if anything
    why = refuse(info) if refuse is not None else None
    if why:
        raise DeployError(f"{art.path.name} {why}")
    return check_contract(_onnx_runner(model), runtime, art.contract, image=golden,
                          compiled_imgsz=compiled_side(info, art.contract))


def _write_golden(golden: np.ndarray, folder: Path) -> Path:
    """The letterboxed golden image as the PNG the toolkit reads (BGR on disk, lossless, already at the input size:
    the toolkit resizes nothing, so both quantizers see the same pixels)."""
    import cv2

    bgr = np.round(golden[0].transpose(1, 2, 0)[..., ::-1] * 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:
        raise DeployError("cannot encode the golden image as PNG")
    return write_bytes(folder / "golden.png", png.tobytes())


def _validate(model: Deployable, run, report: ContractReport | None, data, batch: int, conf: float,
              contract: InputContract | None = None) -> dict:
    return _validate_at(model, run, report, data, batch, (conf,), contract)[0]


def _validate_at(model: Deployable, run, report: ContractReport | None, data, batch: int, confs: tuple[float, ...],
                 contract: InputContract | None = None, keep: list | None = None) -> list[dict]:
    """`run` (FP32 session, or the vendor runtime with its contract and output matches) under npuyolo's decode and
    Ultralytics' metrics, at each confidence threshold; the model runs once per image, later thresholds replay it."""
    seen: dict[str, torch.Tensor] = {}

    def predict(images: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(images.numpy().tobytes()).hexdigest()
        if key in seen:
            return seen[key]
        out = []
        for im in images.numpy().astype(np.float32):
            if report is None:
                raw = run(im[None])
            else:
                got = run(prepare(im[None], contract))
                raw = [m.take(got) for m in report.matches]
            out.append(model.decode(raw))
        seen[key] = torch.from_numpy(np.concatenate(out))
        return seen[key]

    scored = [validate_matched(predict, data, model.imgsz, model.names, batch, conf=c) for c in confs]
    if keep is not None:  # the matched statistics at the first threshold (0.001: the one intervals are computed at)
        keep.append(scored[0][1])
    return [result for result, _ in scored]


def _golden(data, imgsz: int) -> np.ndarray:
    """One real photo of the user's training split, letterboxed: the golden image of the contract check (a photo has
    objects at every scale, so more outputs carry signal than on a synthetic scene)."""
    import cv2


    path = calibration_images(data, 1)[0]
    image = cv2.imread(str(path))
    if image is None:
        raise DeployError(f"cannot read the image {path}")
    return letterbox(image, imgsz)[None]
