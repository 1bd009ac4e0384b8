"""Runs INSIDE the isolated rknn venv (python rknn_driver.py ARGS); it must import nothing from npuyolo.

Loads an ONNX file, builds it for one Rockchip target with INT8 quantization on a calibration list and exports
the .rknn file for the user. The compiler prints its per-layer placement table while building (verbose=True);
npuyolo reads only that printed log. `init_runtime` is never called: with a target it starts a bundled adb
server and writes ~/.android/adbkey, and no board is needed to compile.
"""

import argparse
import os
import sys



def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--disable-rule", action="append", default=[])
    a = ap.parse_args()
    # this file's folder also holds npuyolo's own rknn.py: as the script's folder it would shadow the toolkit's `rknn`
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    from rknn.api import RKNN

    rknn = RKNN(verbose=True)
    config = dict(target_platform=a.target, mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]])
    if a.disable_rule:
        config["disable_rules"] = a.disable_rule
    rknn.config(**config)
    steps = (("load_onnx", lambda: rknn.load_onnx(model=a.onnx)),
             ("build", lambda: rknn.build(do_quantization=True, dataset=a.dataset)),
             ("export_rknn", lambda: rknn.export_rknn(a.out + ".partial")))  # renamed below: never a half-written .rknn
    for name, step in steps:
        ret = step()
        if ret != 0:
            print(f"NPUYOLO-DRIVER: {name} failed with code {ret}", flush=True)
            rknn.release()
            return 3
    rknn.release()
    os.replace(a.out + ".partial", a.out)
    print("NPUYOLO-DRIVER: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
