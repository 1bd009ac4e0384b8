"""NPU placement and vendor compilers: `npuyolo npu`, `npuyolo compilers`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from npuyolo.cli.common import (
    JsonOpt,
    RegistryOpt,
    Table,
    compilers_app,
    console,
    err,
    npu_app,
    open_registry,
    print_json,
    quiet_stdout,
    user_errors,
)
from npuyolo.cli.tables import print_imx500, print_referee


@npu_app.command("targets")
@user_errors
def npu_targets(as_json: JsonOpt = False) -> None:
    """List NPU target profiles with their sources."""
    from npuyolo.npu.profiles import targets

    profiles = targets()
    if as_json:
        return print_json({name: p.model_dump() for name, p in profiles.items()})
    table = Table(title="NPU targets (rules: op -> npu/cpu/unknown + constraints, each with a source)")
    for col in ("target", "title", "fallback", "rules", "fused activations", "sources"):
        table.add_column(col)
    for p in profiles.values():
        table.add_row(p.name, p.title, p.fallback, str(len(p.ops)), ", ".join(p.fusable_activations), "; ".join(p.sources.values()))
    console.print(table)


@npu_app.command("check")
@user_errors
def npu_check(model: Annotated[str, typer.Argument(help="Run id/name, .pt, .onnx or variant name.")],
              target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
              imgsz: Annotated[Optional[int], typer.Option(help="Export size for non-ONNX models [default: the size it was trained at (run or .pt), else 640].")] = None,
              head: Annotated[Optional[str], typer.Option(help="npu or ultralytics [default: the level's head]")] = None,
              nc: Annotated[int, typer.Option(help="Classes, for an untrained variant.")] = 80,
              nodes: Annotated[bool, typer.Option("--nodes", help="Also print every node not on the NPU.")] = False,
              referee: Annotated[Optional[str], typer.Option(help="Also compile with this vendor compiler (rknn: node by node; vela: by operator counts; imx500: pass/fail and memory fit) and compare.")] = None,
              data: Annotated[Optional[Path], typer.Option(help="With --referee: data.yaml whose train images calibrate [default: synthetic images].")] = None,
              as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Place every ONNX node on each target and report shares, partitions and fallbacks."""
    from npuyolo.deploy.check import check_model, record

    if referee is not None:
        from npuyolo.compilers.compile import profile_for
        from npuyolo.compilers.envs import require

        for t in target:  # every target and the compiler checked before a registry is opened or a slow export starts
            profile_for(referee, t)
        require(referee)
        _check_calibration_data(data)
        return _npu_referee(model, target, referee, data, open_registry(registry), imgsz, head, nc, as_json)
    reg = open_registry(registry)
    result = check_model(model, target, reg, imgsz=imgsz, head=head, nc=nc)
    record(result, reg, head)
    if as_json:
        return print_json([{**r.as_dict(), "onnx": result.onnx_paths[r.target], "notes": result.notes.get(r.target, [])}
                           for r in result.reports])
    table = Table(title=f"NPU compatibility of {result.model_ref}")
    for col in ("target", "nodes", "NPU share", "share (fused act.)", "MAC share", "partitions NPU/host", "transitions", "fallback ops", "unknown ops"):
        table.add_column(col)
    for r in result.reports:
        table.add_row(r.target, str(r.nodes_total), f"{r.share_nodes:.1%}", f"{r.share_nodes_fused:.1%}", f"{r.share_macs:.1%}",
                      f"{r.partitions_npu}/{r.partitions_host}", str(r.transitions),
                      ", ".join(f"{k}×{v}" for k, v in r.fallback_ops.items()) or "-",
                      ", ".join(f"{k}×{v}" for k, v in r.unknown_ops.items()) or "-")
    console.print(table)
    for r in result.reports:
        for note in result.notes.get(r.target, []):
            console.print(f"[dim]{r.target}: {escape(note)}[/]", highlight=False)
        if nodes:
            t = Table(title=f"{r.target}: nodes not on the NPU")
            for col in ("node", "op", "placement", "reason", "source"):
                t.add_column(col)
            for p in r.placements:
                if p.placement in ("cpu", "unknown"):
                    t.add_row(p.name, p.op, p.placement, p.reason, p.source or "-")
            console.print(t)


def _check_calibration_data(data: Path | None) -> None:
    """A wrong data.yaml is one line before a registry file is created."""
    if data is not None:
        from npuyolo.data.calibration import calibration_images

        calibration_images(data, 1)


def _npu_referee(model, targets, compiler, data, reg, imgsz, head, nc, as_json) -> None:
    """`npu check --referee`: our placement beside the compiler's, every disagreement listed."""
    from npuyolo.deploy.compile import compile_model
    from npuyolo.deploy.compile import record as record_compile
    from npuyolo.npu.check import CheckResult, record

    results = []
    with quiet_stdout(as_json):
        for t in targets:
            res = compile_model(model, compiler, t, data, reg, imgsz=imgsz, head=head, nc=nc)
            record_compile(res, reg)
            record(CheckResult(res.model_ref, res.run_id, [res.ours], {res.profile: res.build.onnx},
                               {res.profile: [f"referee {res.build.compiler} {res.build.version}: {res.agreement.agree}/"
                                              f"{res.agreement.mapped} mapped nodes agree"]}), reg, head)
            results.append(res)
    if as_json:
        return print_json([r.as_dict() for r in results])
    print_referee(results)


@npu_app.command("compile")
@user_errors
def npu_compile(model: Annotated[str, typer.Argument(help="Run id/name, .pt, .onnx or variant name.")],
                compiler: Annotated[str, typer.Option(help="Vendor compiler: rknn, vela or imx500.")],
                target: Annotated[Optional[str], typer.Option("--target", "-t", help="Compiler target: rk3588, rk3566 (rknn); ethos-u55-128, ethos-u85-256 (vela); imx500 (imx500, the default there).")] = None,
                data: Annotated[Optional[Path], typer.Option(help="data.yaml: its train images (never val) calibrate the INT8 build [imx500: default synthetic images].")] = None,
                imgsz: Annotated[Optional[int], typer.Option(help="Export size for non-ONNX models [default: the size it was trained at (run or .pt), else 640].")] = None,
                head: Annotated[Optional[str], typer.Option(help="npu or ultralytics [default: the level's head]")] = None,
                nc: Annotated[int, typer.Option(help="Classes, for an untrained variant.")] = 80,
                calib: Annotated[int, typer.Option(help="Training images the vendor quantizer calibrates on (rknn, vela; imx500: at least 16, what MCT's mixed-precision search needs); placement does not depend on it, the accuracy `deploy eval` of the build measures does.")] = 8,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Compile with a real vendor compiler (installed by `npuyolo compilers install`) and record its placement."""
    from npuyolo.compilers.compile import profile_for
    from npuyolo.compilers.envs import CompilerError, require
    from npuyolo.deploy.compile import compile_model, record

    if target is None and compiler == "imx500":
        target = "imx500"
    if target is None:
        raise CompilerError(f"--target is required for the {compiler} compiler")
    if data is None and compiler != "imx500":
        raise CompilerError(f"--data is required for the {compiler} compiler: its train images calibrate the INT8 build")
    profile_for(compiler, target)
    require(compiler)  # a missing compiler is one line, before any registry is created
    _check_calibration_data(data)
    reg = open_registry(registry)
    with quiet_stdout(as_json):
        res = compile_model(model, compiler, target, data, reg, imgsz=imgsz, head=head, nc=nc, calib=calib)
        record(res, reg)
    if as_json:
        return print_json(res.as_dict(with_nodes=True))
    if compiler == "imx500":
        return print_imx500(res)
    s = res.build.summary()
    memory = ", ".join(f"{k.removesuffix('_kb').removesuffix('_kib')} {v:.0f} KiB" for k, v in res.build.memory.items()) or "not reported"
    mapped = f"{s['nodes_mapped']}/{s['nodes']} of our nodes mapped" if res.build.mappings else "TFLite operators, compared by counts"
    console.print(f"{res.build.compiler} {res.build.version} on {res.build.platform}: {s['rows_npu']} NPU / {s['rows_cpu']} CPU "
                  f"operators in {res.build.seconds:.1f} s; {mapped}; memory {memory}", highlight=False, markup=False)
    for row in s["cpu_rows"]:
        console.print(f"  CPU: {row}", highlight=False, markup=False)
    if s.get("inference_ms") is not None:
        console.print(f"estimated inference time ({res.build.platform}, Vela's default system config): {s['inference_ms']:.1f} ms",
                      highlight=False, markup=False)
    console.print(f"log: {res.build.log}" + (f"; model: {res.build.rknn_file}" if res.build.rknn_file else ""), highlight=False, markup=False)
    print_referee([res])


@compilers_app.command("list")
@user_errors
def compilers_list(as_json: JsonOpt = False) -> None:
    """Known vendor compilers: installed version and where their environment lives."""
    from npuyolo.compilers.envs import compilers_root, listing

    rows = listing()
    if as_json:
        return print_json({"root": str(compilers_root()), "compilers": rows})
    table = Table(title=f"NPU compilers (environments under {compilers_root()})")
    for col in ("compiler", "title", "installed", "version", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["title"], "yes" if r["installed"] else f"no: npuyolo compilers install {r['name']}",
                      r["version"] or "-", r["path"])
    console.print(table)


@compilers_app.command("install")
@user_errors
def compilers_install(name: Annotated[str, typer.Argument(help="rknn, vela or imx500.")],
                      force: Annotated[bool, typer.Option("--force", help="Reinstall even if installed.")] = False,
                      as_json: JsonOpt = False) -> None:
    """Create the compiler's own virtual environment and pip-install its pinned packages (this downloads)."""
    from dataclasses import asdict

    from npuyolo.compilers.envs import COMPILERS, install, spec

    s = spec(name)
    if not as_json:
        err.print(f"installing {s.title} into its own environment (pip output: install.log beside it)...", highlight=False, markup=False)
    env = install(name, force=force)
    if as_json:
        return print_json({**asdict(env), "licence": COMPILERS[name].licence})
    console.print(f"{name} {env.version} installed: {env.python}", highlight=False, markup=False)
    console.print(f"licence: {s.licence}", highlight=False, markup=False)


@npu_app.command("rewrite")
@user_errors
def npu_rewrite(model: Annotated[Path, typer.Argument(help="ONNX file.")],
                leaky: Annotated[str, typer.Option(help="relu-decomp (a*x + (1-a)*relu(x)), relu-exact or max.")] = "relu-decomp",
                out: Annotated[Optional[str], typer.Option(help="Output file [default: MODEL.<method>.onnx].")] = None,
                force: Annotated[bool, typer.Option("--force", help="Let the output replace a file npuyolo did not write, or a symlink (never the registry).")] = False,
                as_json: JsonOpt = False) -> None:
    """Replace every LeakyRelu with an equivalent built from ReLU-NPU ops."""
    from npuyolo.npu.rewrite import rewrite_file

    dst, count = rewrite_file(model, out, leaky, force=force)
    if as_json:
        return print_json({"onnx": str(Path(dst).resolve()), "rewritten": count, "method": leaky})
    console.print(f"rewrote {count} LeakyRelu node(s) as {leaky}: {dst}", highlight=False, markup=False)
