"""Our Rockchip profiles against RKNN-Toolkit2 itself, node by node, over the variant grid.

    npuyolo compilers install rknn          # once: its own venv, ~1.5 GB
    python bench/referee.py [--imgsz 640] [--data DATA] [--levels L0 L2 L4] [--acts silu relu leaky hardswish]
    python bench/referee.py --vela [--vela-levels L4]   # also Arm Vela (npuyolo compilers install vela; ~2 min/model)

Grid {levels} x {acts} x {rk3588, rk3566}, plus L4-leaky after `npu rewrite --leaky relu-decomp`. Each variant is
exported once the way `npu check` exports it (one ONNX per head/sigmoid choice), compiled per target, and every
node the build log can be mapped to is compared. Prints a Markdown table and every disagreement; `--json FILE`
also writes the raw results. With `--vela`, each `--vela-levels` variant (and the L4-leaky rewrite) is converted
once to a full-integer TFLite and compiled for ethos-u55-128 and ethos-u85-256: operator counts, CPU operators
and Vela's estimated inference time (its default system configuration per accelerator).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import npuyolo  # noqa: F401
from npuyolo.compilers.compile import agreement, write_calibration
from npuyolo.compilers.registry import COMPILERS
from npuyolo.compilers.envs import require
from npuyolo.compilers.rknn import compile_onnx
from npuyolo.deploy.check import check_model
from npuyolo.npu.rewrite import rewrite_file


def cell(name: str, onnx_path: Path, ours, platform: str, calib: Path, work: Path) -> dict:
    build = compile_onnx(onnx_path, platform, calib, work / f"{name}-{platform}")
    a = agreement(ours, build)
    s = build.summary()
    return {"model": name, "target": platform, "nodes": a.nodes, "mapped": a.mapped, "agree": a.agree, "share": a.share,
            "ours_npu_share": ours.share_nodes, "ours_cpu": ours.nodes_cpu, "ours_unknown": ours.nodes_unknown,
            "rows": s["rows"], "rows_cpu": s["rows_cpu"], "cpu_rows": s["cpu_rows"], "seconds": build.seconds,
            "disabled_rules": build.disabled_rules, "memory": build.memory, "disagreements": a.disagreements,
            "unmapped": [u["node"] for u in a.unmapped], "log": build.log}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--data", default=None, help="data.yaml whose train images calibrate [default: synthetic images]")
    ap.add_argument("--levels", nargs="+", default=["L0", "L2", "L4"])
    ap.add_argument("--acts", nargs="+", default=["silu", "relu", "leaky", "hardswish"])
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--vela", action="store_true", help="also run Arm Vela on the --vela-levels variants")
    ap.add_argument("--vela-levels", nargs="+", default=["L4"])
    ap.add_argument("--skip-rknn", action="store_true")
    args = ap.parse_args()
    if args.skip_rknn:
        if args.vela:
            vela_grid(args)
        return

    env = require("rknn")
    work = Path(tempfile.mkdtemp(prefix="npuyolo-referee-"))
    profiles = COMPILERS["rknn"].platforms  # platform -> our profile
    calib, what = write_calibration(args.data, args.imgsz, work)
    results = []
    started = time.perf_counter()
    jobs = [f"{lv}-{act}" for lv in args.levels for act in args.acts]
    for name in jobs + (["L4-leaky+relu-decomp"] if "L4" in args.levels and "leaky" in args.acts else []):
        if name.endswith("+relu-decomp"):
            base = check_model(None, "L4-leaky", list(profiles.values()), imgsz=args.imgsz, workdir=work / "onnx")
            paths = {}
            for profile, path in base.onnx_paths.items():
                dst = Path(path).with_name(Path(path).stem + ".relu-decomp.onnx")
                if not dst.exists():
                    rewrite_file(path, dst, "relu-decomp")
                paths[profile] = dst
            checks = {p: check_model(None, str(paths[p]), [p]) for p in profiles.values()}
            per = {p: (Path(c.onnx_paths[p]), c.reports[0]) for p, c in checks.items()}
        else:
            c = check_model(None, name, list(profiles.values()), imgsz=args.imgsz, workdir=work / "onnx")
            per = {r.target: (Path(c.onnx_paths[r.target]), r) for r in c.reports}
        for platform, profile in profiles.items():
            onnx_path, ours = per[profile]
            r = cell(name, onnx_path, ours, platform, calib, work)
            results.append(r)
            print(f"  {name:22s} {platform}: {r['agree']}/{r['mapped']} agree ({r['nodes']} nodes), compiler CPU rows "
                  f"{r['rows_cpu']}, {r['seconds']:.1f} s", flush=True)

    print(f"\nRKNN-Toolkit2 {env.version} vs npuyolo profiles, {args.imgsz} px, INT8, calibration: {what}; "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print("| model | target | nodes | mapped | agree | agreement | profile NPU share | profile CPU/unknown | compiler CPU rows |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        share = "-" if r["share"] is None else f"{r['share']:.1%}"
        print(f"| {r['model']} | {r['target']} | {r['nodes']} | {r['mapped']} | {r['agree']} | {share} | {r['ours_npu_share']:.1%} | "
              f"{r['ours_cpu']}/{r['ours_unknown']} | {r['rows_cpu']} |")
    print("\nDisagreements (node, op: profile -> compiler [row]):")
    seen = set()
    for r in results:
        for d in r["disagreements"]:
            print(f"- {r['model']} {r['target']}: {d['node']} ({d['op']}): {d['ours']} ({d['our_reason']}) -> {d['compiler']} [{d['compiler_row']}]")
            seen.add((r["target"], d["op"], d["ours"], d["compiler"]))
    if not seen:
        print("- none")
    print("\nBy (target, op, profile -> compiler): " + "; ".join(f"{t} {op} {o}->{c}" for t, op, o, c in sorted(seen)))
    rules = {(r["model"], r["target"]): r["disabled_rules"] for r in results if r["disabled_rules"]}
    if rules:
        print("Builds that needed a graph rule disabled (the compiler's own suggestion): "
              + "; ".join(f"{m} {t}: {', '.join(v)}" for (m, t), v in rules.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.vela:
        vela_grid(args)


def vela_grid(args) -> None:
    from npuyolo.compilers.compile import calibration_arrays
    from npuyolo.compilers.vela import compile_onnx as vela_compile, to_tflite, write_calibration_npy

    ACCELERATORS = COMPILERS["vela"].platforms  # vela --accelerator-config -> our profile

    env = require("vela")
    work = Path(tempfile.mkdtemp(prefix="npuyolo-vela-"))
    arrays, what = calibration_arrays(args.data, args.imgsz)
    calib = write_calibration_npy(arrays, work / "calib")
    profiles = list(ACCELERATORS.values())
    names = [f"{lv}-{act}" for lv in args.vela_levels for act in args.acts]
    if "L4" in args.vela_levels and "leaky" in args.acts:
        names.append("L4-leaky+relu-decomp")
    rows = []
    started = time.perf_counter()
    for name in names:
        if name.endswith("+relu-decomp"):
            base = check_model(None, "L4-leaky", profiles, imgsz=args.imgsz, workdir=work / "onnx")
            src = Path(next(iter(base.onnx_paths.values())))
            dst = src.with_name(src.stem + ".relu-decomp.onnx")
            if not dst.exists():
                rewrite_file(src, dst, "relu-decomp")
            c = check_model(None, str(dst), profiles)
        else:
            c = check_model(None, name, profiles, imgsz=args.imgsz, workdir=work / "onnx")
        tflites: dict[str, Path] = {}
        for accelerator, profile in ACCELERATORS.items():
            onnx_path = Path(c.onnx_paths[profile])
            if onnx_path not in tflites:
                t0 = time.perf_counter()
                tflites[onnx_path] = to_tflite(onnx_path, calib, work / f"{name}-{onnx_path.stem}")[0]
                print(f"  {name}: onnx2tf {time.perf_counter() - t0:.0f} s", flush=True)
            b = vela_compile(onnx_path, accelerator, calib, work / f"{name}-{accelerator}", tflite=tflites[onnx_path])
            ours = next(r for r in c.reports if r.target == profile)
            rows.append({"model": name, "target": accelerator, "npu": b.network.get("npu_ops"), "cpu": b.network.get("cpu_ops"),
                         "cpu_ops": b.network.get("cpu_operators"), "ms": b.performance.get("inference_ms"),
                         "system": b.network.get("system_config"), "ours_share": ours.share_nodes, "ours_cpu": ours.nodes_cpu,
                         "ours_unknown": ours.nodes_unknown, "log": b.log})
    print(f"\nVela {env.version}, full-integer TFLite by onnx2tf, {args.imgsz} px, calibration: {what}; "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print("| model | target | Vela ops NPU/CPU | est. ms | Vela system config | profile NPU share | profile CPU/unknown |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ms = "-" if r["ms"] is None else f"{r['ms']:.1f}"
        print(f"| {r['model']} | {r['target']} | {r['npu']}/{r['cpu']} | {ms} | {r['system']} | {r['ours_share']:.1%} | "
              f"{r['ours_cpu']}/{r['ours_unknown']} |")
    if args.json:
        Path(args.json).with_suffix(".vela.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
