"""Sony IMX500 as a pass/fail + memory-fit referee: Ultralytics' `format='imx'` export (model-compression-toolkit,
then Sony's `imxconv-pt`) run in the `imx500` venv, and parsers for what the converter prints.

The converter places nothing on a host CPU: a layer it cannot map fails the build, and a model that does not fit the
sensor's memory fails too. So the verdict is pass/fail plus the memory report, and the activations the converted
graph holds (LeakyReLU arrives as PReLU; shared/research/real-compilers.md). Everything here except `compile_model`
is a pure function of log text (tested on a trimmed real log). Calibration images are the user's TRAINING images
(never val) through a data.yaml whose train and val both list them, so Ultralytics never falls back to coco8.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npuyolo.compilers.calibration import write_calibration
from npuyolo.compilers.envs import CompilerError, clean_env, require
from npuyolo.compilers.manifest import manifest_path
from npuyolo.paths import write_text

__all__ = ["Imx500Build", "activation_layers", "compile_model", "parse_activations", "parse_l2memory", "parse_layer_types", "parse_driver", "parse_error", "parse_memory", "converter_ran",
           "write_data_yaml"]

PLATFORM = "imx500"
CALIB_IMAGES = 16  # MCT's mixed-precision search wants 10 representative images; 8 makes it warn and repeat
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNITS = {"B": 1 / 2**20, "KB": 1 / 2**10, "MB": 1.0, "GB": 2**10}  # dnnParams.xml: 8388480 B of L2 = "8.00MB"


def _clean(text: str) -> list[str]:
    return [_ANSI.sub("", x).rstrip() for x in text.splitlines()]


_REPORT_KEYS = {"Memory Usage": "used_mb", "Total Memory Available On Chip": "available_mb",
                "Runtime Memory Physical Size": "runtime_mb", "Model Memory Physical Size": "model_mb", "Reserved Memory": "reserved_mb"}


def _mb(value: str) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*(B|KB|MB|GB)\s*", value, re.I)
    return round(float(m.group(1)) * _UNITS[m.group(2).upper()], 6) if m else None


def parse_memory(log: str) -> dict:
    """The converter's memory report (`<model>_MemoryReport.json`, which npuyolo appends to the log): MB used of MB
    on the chip, runtime vs model (coefficient) memory, utilization and the converter's own fit verdict.

    The top-level report comes first; the per-network entries repeat some keys and are not read. Missing facts are
    absent from the dict, never invented."""
    out: dict = {}
    for key, value in re.findall(r'"([A-Za-z ]+)":\s*("[^"]*"|true|false)', log):
        value = value.strip('"')
        if key in _REPORT_KEYS and _REPORT_KEYS[key] not in out:
            mb = _mb(value)
            if mb is not None:
                out[_REPORT_KEYS[key]] = mb
        elif key == "Memory Utilization" and "utilization_pct" not in out:
            m = re.fullmatch(r"([\d.]+)\s*%", value)
            if m:
                out["utilization_pct"] = float(m.group(1))
        elif key == "Fit In Chip" and "fits" not in out:
            out["fits"] = value == "true"
    if "fits" not in out and "used_mb" in out and "available_mb" in out:
        out["fits"] = out["used_mb"] <= out["available_mb"]
    return out


def converter_ran(log: str) -> bool:
    """Did Sony's converter start (as opposed to a failure in Ultralytics or MCT before it)?"""
    return bool(re.search(r"Starting SDSPconv|Converting \S*model_imx\.onnx", log))


_ACTIVATIONS = ("PReLU", "LeakyReLU", "ReLU6", "ReLU", "SiLU", "Swish", "HardSwish", "Hardswish", "Sigmoid", "Tanh", "Softmax")


def parse_activations(text: str) -> dict[str, int]:
    """Activation op types named in the converter's output or the exported graph's op list: {type: count}."""
    counts: dict[str, int] = {}
    for name in _ACTIVATIONS:
        n = len(re.findall(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z0-9])", text))
        if n:
            counts[name] = n
    return counts


def parse_layer_types(pbtxt: str) -> dict[str, int]:
    """Layer types of the converter's own graph (`model_imx.pbtxt`, written beside packerOut.zip): {type: count}.
    This is where LeakyReLU shows as `Prelu` and SiLU as `Swish` (MCT's ONNX still says LeakyRelu / Sigmoid*Mul)."""
    counts: dict[str, int] = {}
    for t in re.findall(r'^layer \{\n\s+name: "[^"\n]*"\n\s+type: "([^"]+)"', pbtxt, re.M):
        counts[t] = counts.get(t, 0) + 1
    return counts


def activation_layers(layer_types: dict[str, int]) -> dict[str, int]:
    return {t: n for t, n in layer_types.items() if re.search(r"relu|swish|silu|sigmoid|tanh|softmax|gelu|hardswish", t, re.I)}


def parse_l2memory(text: str) -> dict:
    """Exact bytes from dnnParams.xml's `<l2memory .../>` (npuyolo appends that line to the log): the report's MB
    round PReLU's extra coefficients away."""
    m = re.search(r"<l2memory ([^>]*)/?>", text)
    if not m:
        return {}
    attrs = dict(re.findall(r'(\w+)="(\d+)"', m.group(1)))
    keys = {"totalSize": "total_bytes", "coefficientsSize": "coefficients_bytes", "networksRuntimeSize": "runtime_bytes",
            "reservedMemorySize": "reserved_bytes"}
    return {keys[k]: int(v) for k, v in attrs.items() if k in keys}


def parse_driver(stdout: str) -> dict | None:
    """The driver's last `NPUYOLO-DRIVER: {json}` line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("NPUYOLO-DRIVER: {"):
            try:
                return json.loads(line.split(": ", 1)[1])
            except ValueError:
                return None
    return None


def parse_error(log: str) -> str | None:
    """The line that says why the build failed: the converter's own error line, else the last exception line."""
    lines = [x.strip() for x in _clean(log) if x.strip()]
    for line in lines:
        if re.match(r"(?:[\d-]+ [\d:.,]+ )?(?:\[?ERROR\]?|Error:|FATAL)", line) and "NPUYOLO-DRIVER" not in line:
            return line[:300]
    for line in reversed(lines):
        if re.match(r"[A-Za-z_.]*(Error|Exception)\b.*:", line):
            return line[:300]
    return None


@dataclass
class Imx500Build:
    """One `format='imx'` export + conversion; no per-node placement (the sensor runs all or nothing)."""

    compiler: str
    version: str
    platform: str
    onnx: str  # MCT's quantized model_imx.onnx, the converter's input ("" when it was not written)
    log: str
    seconds: float
    ok: bool
    error: str | None
    memory: dict
    activations: dict  # activation layer types: the converter's (Prelu, Swish) when it ran, else MCT's ONNX ops
    output: str | None  # the exported folder (packerOut.zip for the camera)
    calibration: str = ""
    converter_ran: bool = False
    layers: dict = field(default_factory=dict)  # layer types of the converter's graph (model_imx.pbtxt)
    notes: list[str] = field(default_factory=list)
    mappings: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    network: dict = field(default_factory=dict)
    rknn_file: str | None = None
    scored: str = ""  # MCT's quantized model without its NMS layer, which `deploy eval` scores ("" when not written)

    def summary(self) -> dict:
        return {"ok": self.ok, "error": self.error, "used_mb": self.memory.get("used_mb"),
                "available_mb": self.memory.get("available_mb"), "fits": self.memory.get("fits"),
                "activations": self.activations, "rows": 0, "rows_npu": 0, "rows_cpu": 0, "cpu_rows": [], "nodes": 0,
                "nodes_mapped": 0, "inference_ms": None, "mapped_by": {}}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d


def write_data_yaml(data: str | Path | None, imgsz: int, workdir: Path, names: dict | list,
                    count: int = CALIB_IMAGES) -> tuple[Path, str]:
    """A data.yaml for Ultralytics' calibration loader whose train AND val list only training images (Ultralytics
    calibrates on `val` by default), written as letterboxed PNGs (synthetic ones without `data`)."""
    import yaml


    listing, what = write_calibration(data, imgsz, workdir, count=max(count, CALIB_IMAGES))
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): str(v) for k, v in dict(names).items()}
    d = {"path": str(workdir.resolve()), "train": str(listing.resolve()), "val": str(listing.resolve()), "nc": len(names),
         "names": names}
    dst = workdir / "calib-data.yaml"
    write_text(dst, yaml.safe_dump(d, sort_keys=False))
    return dst, what


def _driver() -> Path:
    return Path(__file__).with_name("imx500_driver.py")


def compile_model(model, workdir: Path, data: str | Path | None, imgsz: int = 640, timeout: float = 3600,
                  calib: int = CALIB_IMAGES) -> Imx500Build:
    """Save `model` as an Ultralytics checkpoint, run the driver in the imx500 venv, parse what it printed.
    `calib`: training images MCT calibrates on (at least CALIB_IMAGES, what its mixed-precision search needs)."""
    import copy

    import torch

    env = require("imx500")
    workdir.mkdir(parents=True, exist_ok=True)
    names = getattr(model, "names", None) or {i: f"class{i}" for i in range(int(getattr(model.model[-1], "nc", 80)))}
    data_yaml, what = write_data_yaml(data, imgsz, workdir, names, count=calib)
    weights = workdir / "model.pt"
    m = copy.deepcopy(model).float().eval()
    m.names = dict(enumerate(names)) if isinstance(names, list) else dict(names)
    torch.save({"model": m, "ema": None, "train_args": {"imgsz": imgsz}, "date": None}, weights)
    log = workdir / "imx500.log"
    import shutil

    shutil.rmtree(workdir / "model_imx_model", ignore_errors=True)  # never read a previous run's memory report
    dense = workdir / "model_imx_dense.onnx"
    for stale in (dense, manifest_path(dense), workdir / "model_fp32.onnx"):  # never score a previous build's model
        stale.unlink(missing_ok=True)
    cmd = [str(env.python), str(_driver()), "--weights", str(weights.resolve()), "--data", str(data_yaml.resolve()),
           "--imgsz", str(imgsz), "--dense", str(dense.resolve())]
    run_env = {**clean_env(), "YOLO_AUTOINSTALL": "false", "YOLO_OFFLINE": "true", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    try:
        with log.open("w", encoding="utf-8") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=workdir, timeout=timeout, env=run_env)
    except subprocess.TimeoutExpired:
        raise CompilerError(f"the IMX500 export took over {timeout:.0f} s; see {log}") from None
    seconds = round(time.perf_counter() - started, 1)
    for report in sorted(workdir.glob("*_imx_model/*_MemoryReport.json")):  # the memory report lives in a file: keep it in the log
        with log.open("a", encoding="utf-8") as f:
            f.write(f"### {report.name}\n{report.read_text(encoding='utf-8')}\n")
    for params in sorted(workdir.glob("*_imx_model/dnnParams.xml")):
        line = re.search(r"<l2memory [^>]*>", params.read_text(encoding="utf-8", errors="replace"))
        if line:
            with log.open("a", encoding="utf-8") as f:
                f.write(f"### {params.name}\n{line.group(0)}\n")
    text = log.read_text(encoding="utf-8", errors="replace")
    result = parse_driver(text) or {"ok": False, "error": f"the driver exited with code {done.returncode} without a result"}
    ok = bool(result.get("ok")) and done.returncode == 0
    output = result.get("output")
    onnx_path = Path(output) / "model_imx.onnx" if output else next(iter(sorted(workdir.glob("*_imx_model/model_imx.onnx"))), None)
    activations, layers = parse_activations(text), {}
    if onnx_path is not None and Path(onnx_path).is_file():
        activations = _graph_activations(Path(onnx_path)) or activations
    pbtxt = sorted(workdir.glob("*_imx_model/*.pbtxt"))
    if pbtxt:  # the converter's own graph: its layer types are what runs on the sensor
        layers = parse_layer_types(pbtxt[0].read_text(encoding="utf-8", errors="replace"))
        activations = activation_layers(layers) or activations
    error = None if ok else (parse_error(text) or result.get("error"))
    return Imx500Build(compiler="imx500", version=env.version, platform=PLATFORM,
                       onnx=str(onnx_path) if onnx_path and Path(onnx_path).is_file() else "", log=str(log), seconds=seconds,
                       ok=ok, error=error, memory={**parse_memory(text), **parse_l2memory(text)}, activations=activations,
                       output=output, calibration=what, converter_ran=converter_ran(text), layers=layers,
                       scored=str(dense) if dense.is_file() else "")


def _graph_activations(onnx_path: Path) -> dict[str, int]:
    """Activation op types in MCT's exported graph (its custom-domain op names included), e.g. {'PRelu': 87}."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency of npuyolo
        return {}
    g = onnx.load(str(onnx_path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for n in g.node:
        if re.search(r"relu|silu|swish|sigmoid|tanh|softmax|gelu", n.op_type, re.I):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


if __name__ == "__main__":  # pragma: no cover
    print(parse_memory(sys.stdin.read()))
