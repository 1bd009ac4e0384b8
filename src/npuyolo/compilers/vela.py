"""Arm Vela (Ethos-U) as a referee: ONNX -> full-integer TFLite (onnx2tf) -> `vela`, and parsers for what it prints.

Vela needs a *fully* integer TFLite model (shared/research/real-compilers.md): onnx2tf writes
`*_full_integer_quant.tflite` when calibrated. Both tools run in the `vela` environment. Nothing is fetched:
onnx2tf's own sample calibration file (`calibration_image_sample_data_20x128x128x3_float32.npy`, downloaded
when absent) is written first from the user's training images, and the calibration data proper is ours (-cind).
Vela places TFLite operators, whose names are not our ONNX node names: placement is compared by operator
counts and CPU operator lists, not node by node. Its estimated inference time comes from its summary CSV.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from npuyolo.compilers.envs import CompilerError, clean_env, require
from npuyolo.compilers.manifest import write_manifest

__all__ = ["VelaBuild", "compile_onnx", "parse_summary_csv", "parse_vela"]

SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"


def parse_vela(stdout: str) -> dict:
    """Network summary of `vela --show-cpu-operations`: configuration, NPU/CPU operator counts, CPU operators,
    memory used and MACs. Missing facts are absent from the dict, never invented."""
    out: dict = {}
    keys = {"Accelerator configuration": "accelerator", "System configuration": "system_config", "Memory mode": "memory_mode"}
    for line in stdout.splitlines():
        for label, key in keys.items():
            if line.startswith(label):
                out[key] = line[len(label):].strip()
        m = re.match(r"Accelerator clock\s+([\d.]+)\s*MHz", line)
        if m:
            out["clock_mhz"] = float(m.group(1))
        m = re.match(r"Total (SRAM|DRAM|Off-chip Flash|On-chip Flash) used\s+([\d.]+)\s*KiB", line)
        if m:
            out[f"{m.group(1).lower().replace('-', '_').replace(' ', '_')}_kib"] = float(m.group(2))
        m = re.match(r"(CPU|NPU) operators = (\d+)", line)
        if m:
            out[f"{m.group(1).lower()}_ops"] = int(m.group(2))
        m = re.match(r"Neural network macs\s+(\d+)", line)
        if m:
            out["macs"] = int(m.group(1))
    out["cpu_operators"] = [{"op": m.group(1), "name": m.group(2)}
                            for m in re.finditer(r"^\s+CPU: (\S+) = (.+?)(?: \(outputs .*\))?$", stdout, re.M)]
    return out


def parse_summary_csv(text: str) -> dict:
    """Vela's `*_summary_<system>.csv`: estimated inference time (ms) and inferences per second."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return {}
    row = rows[-1]
    out = {"accelerator": row.get("accelerator_configuration"), "system_config": row.get("system_config")}
    if row.get("inference_time"):
        out["inference_ms"] = float(row["inference_time"]) * 1000.0
    if row.get("inferences_per_second"):
        out["inferences_per_second"] = float(row["inferences_per_second"])
    return out


@dataclass
class VelaBuild:
    """One compile for one accelerator configuration; per-node mappings are empty (TFLite names are not ours)."""

    compiler: str
    version: str
    platform: str
    onnx: str
    tflite: str
    log: str
    seconds: float
    network: dict
    performance: dict
    memory: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mappings: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    disabled_rules: list = field(default_factory=list)
    rknn_file: str | None = None

    def summary(self) -> dict:
        n = self.network
        return {"rows": n.get("npu_ops", 0) + n.get("cpu_ops", 0), "rows_npu": n.get("npu_ops", 0), "rows_cpu": n.get("cpu_ops", 0),
                "cpu_rows": [f"{c['op']}:{c['name']}" for c in n.get("cpu_operators", [])], "nodes": 0, "nodes_mapped": 0,
                "inference_ms": self.performance.get("inference_ms"), "mapped_by": {}}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d


def write_calibration_npy(images_rgb01: list[np.ndarray], folder: Path) -> Path:
    """Our calibration array (NHWC float32 in [0, 1], as onnx2tf's -cind wants) and onnx2tf's sample file from the
    same images (20 x 128 x 128), so onnx2tf never downloads its own."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    data = np.stack([im.transpose(1, 2, 0) for im in images_rgb01]).astype(np.float32)
    np.save(folder / "calibration.npy", data)
    small = [cv2.resize(im.transpose(1, 2, 0), (128, 128), interpolation=cv2.INTER_AREA) for im in images_rgb01]
    sample = np.stack([small[i % len(small)] for i in range(20)]).astype(np.float32)
    np.save(folder / SAMPLE_NAME, sample)
    return folder / "calibration.npy"


def to_tflite(onnx_path: Path, calib_npy: Path, workdir: Path, timeout: float = 1800) -> tuple[Path, str]:
    """onnx2tf with INT8 calibration on our data; returns the full-integer TFLite file and onnx2tf's output."""
    import onnx

    env = require("vela")
    out_dir = workdir / "tflite"
    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name  # 'images' in npuyolo's exports
    cmd = [str(env.bin / "onnx2tf"), "-i", str(Path(onnx_path).resolve()), "-o", str(out_dir.resolve()), "-oiqt",
           "-cind", input_name, str(calib_npy.resolve()), "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=calib_npy.parent, timeout=timeout, env=clean_env())
    except subprocess.TimeoutExpired:
        raise CompilerError(f"onnx2tf on {onnx_path.name} took over {timeout:.0f} s") from None
    log = done.stdout + done.stderr
    (workdir / "onnx2tf.log").write_text(log, encoding="utf-8")
    tflite = out_dir / f"{Path(onnx_path).stem}_full_integer_quant.tflite"
    if done.returncode != 0 or not tflite.is_file():
        raise CompilerError(f"onnx2tf could not write a full-integer TFLite model of {onnx_path.name}; see {workdir / 'onnx2tf.log'}")
    return tflite, log


def compile_onnx(onnx_path: Path, accelerator: str, calib_npy: Path, workdir: Path, tflite: Path | None = None) -> VelaBuild:
    """Vela on the full-integer TFLite (converted here unless `tflite` is given) for one accelerator configuration."""
    env = require("vela")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    notes = []
    if tflite is None:
        tflite, _ = to_tflite(onnx_path, calib_npy, workdir)
        notes.append(f"full-integer TFLite by onnx2tf: {tflite.name}")
    out_dir = workdir / f"vela-{accelerator}"
    cmd = [str(env.bin / "vela"), str(tflite), "--accelerator-config", accelerator, "--show-cpu-operations",
           "--verbose-performance", "--output-dir", str(out_dir)]
    log = workdir / f"vela-{accelerator}.log"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=900, env=clean_env())
    except subprocess.TimeoutExpired:
        raise CompilerError(f"vela did not finish within 900 s on {tflite.name} for {accelerator}") from None
    log.write_text(f"$ {' '.join(cmd)}\n### stdout\n{done.stdout}\n### stderr\n{done.stderr}\n", encoding="utf-8")
    if done.returncode != 0:
        tail = next((x for x in reversed(done.stderr.strip().splitlines()) if x.strip()), "no output")
        raise CompilerError(f"vela failed on {tflite.name} for {accelerator} ({tail.strip()[:200]}); see {log}")
    network = parse_vela(done.stdout)
    if "npu_ops" not in network:  # an unreadable log must not pass for "0 CPU operators"
        raise CompilerError(f"vela's output for {tflite.name} has no operator summary npuyolo can read; see {log}")
    summaries = sorted(out_dir.glob(f"{tflite.stem}_summary_*.csv"))
    if not summaries:
        raise CompilerError(f"vela wrote no {tflite.stem}_summary_*.csv in {out_dir}; see {log}")
    performance = parse_summary_csv(summaries[-1].read_text(encoding="utf-8"))
    memory = {k: v for k, v in network.items() if k.endswith("_kib")}
    write_manifest(Path(tflite), "tflite", Path(onnx_path))  # `deploy eval` scores this file as Vela was given it
    return VelaBuild(compiler="vela", version=env.version, platform=accelerator, onnx=str(onnx_path), tflite=str(tflite), log=str(log),
                     seconds=round(time.perf_counter() - started, 2), network=network, performance=performance, memory=memory, notes=notes)
