"""NPU placement and vendor compilers: `npuyolo npu`, `npuyolo compilers`: thin translations of `npuyolo.services.models`
(and, for listing and installing compilers, of `npuyolo.compilers.registry`)."""


from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from npuyolo.cli.common import (
    CompilersHelp,
    JsonOpt,
    RegistryOpt,
    Table,
    compilers_app,
    console,
    err,
    npu_app,
    option,
    print_json,
    quiet_stdout,
    user_errors,
)
from npuyolo.cli.tables import print_referee, print_whole_model
from npuyolo.services.options import CheckOptions, CompileOptions, RewriteOptions


@npu_app.command("targets")
@user_errors
def npu_targets(as_json: JsonOpt = False) -> None:
    """List NPU target profiles with their sources."""
    from npuyolo.services import models

    profiles = models.npu_targets()
    if as_json:
        return print_json({name: p.model_dump() for name, p in profiles.items()})
    table = Table(title="NPU targets (rules: op -> npu/cpu/unknown + constraints, each with a source)")
    for col in ("target", "title", "fallback", "rules", "fused activations", "sources"):
        table.add_column(col)
    for p in profiles.values():
        table.add_row(p.name, p.title, p.fallback, str(len(p.ops)), ", ".join(p.fusable_activations), "; ".join(p.sources.values()))
    console.print(table)


@npu_app.command("check", cls=CompilersHelp)  # {referees}: from the compiler registry, when the help is shown
@user_errors
def npu_check(model: Annotated[list[str], typer.Argument(help="Run id/name, .pt, .onnx or variant name (several: each in turn, one start).")],
              target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
              imgsz: Annotated[Optional[int], option(CheckOptions, "imgsz")] = CheckOptions.imgsz,
              head: Annotated[Optional[str], option(CheckOptions, "head")] = CheckOptions.head,
              nc: Annotated[int, option(CheckOptions, "nc")] = CheckOptions.nc,
              nodes: Annotated[bool, typer.Option("--nodes", help="Also print every node not on the NPU.")] = False,
              referee: Annotated[Optional[str], typer.Option(help="Also compile with this vendor compiler ({referees}) and compare.")] = None,
              data: Annotated[Optional[Path], typer.Option(help="With --referee: data.yaml whose train images calibrate [default: synthetic images].")] = None,
              as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Place every ONNX node on each target and report shares, partitions and fallbacks; several models are checked
    one after the other in this one process (--json: one list, each row naming its model)."""
    from npuyolo.services import models

    options = CheckOptions.pick(locals())
    if referee is not None:  # our placement beside the compiler's, every disagreement listed
        with quiet_stdout(as_json):
            results = [r for m in model for r in models.referee(registry, m, target, referee, data, options)]
        return print_json([r.as_dict() for r in results]) if as_json else print_referee(results)
    rows = []
    for m in model:  # each model's table as soon as it is checked
        result = models.check(registry, m, target, options)
        if not as_json:
            _print_check(result, nodes)
            continue
        rows += [{**r.as_dict(), "model": result.model_ref, "onnx": result.onnx_paths[r.target],
                  "notes": result.notes.get(r.target, [])} for r in result.reports]
    if as_json:
        print_json(rows)


def _print_check(result, nodes: bool) -> None:
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


@npu_app.command("compile", cls=CompilersHelp)  # {compilers}, {targets}, {synthetic}: from the compiler registry
@user_errors
def npu_compile(model: Annotated[str, typer.Argument(help="Run id/name, .pt, .onnx or variant name.")],
                compiler: Annotated[str, typer.Option(help="Vendor compiler: {compilers}.")],
                target: Annotated[Optional[str], typer.Option("--target", "-t", help="Compiler target: {targets}.")] = None,
                data: Annotated[Optional[Path], typer.Option(help="data.yaml: its train images (never val) calibrate the INT8 build{synthetic}.")] = None,
                imgsz: Annotated[Optional[int], option(CompileOptions, "imgsz")] = CompileOptions.imgsz,
                head: Annotated[Optional[str], option(CompileOptions, "head")] = CompileOptions.head,
                nc: Annotated[int, option(CompileOptions, "nc")] = CompileOptions.nc,
                calib: Annotated[int, option(CompileOptions, "calib")] = CompileOptions.calib,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Compile with a real vendor compiler (installed by `npuyolo compilers install`) and record its placement."""
    from npuyolo.services import models

    options = CompileOptions.pick(locals())
    with quiet_stdout(as_json):
        res = models.compile_model(registry, model, compiler, target, data, options)
    if as_json:
        return print_json(res.as_dict(with_nodes=True))
    if models.whole_model(res.build.compiler):  # the whole model on the device or nothing: its fit and memory
        return print_whole_model(res)
    s = res.build.summary()
    memory = res.memory or "not reported"  # in the compiler's own unit (`CompilerSpec.memory_text`)
    mapped = f"{s['nodes_mapped']}/{s['nodes']} of our nodes mapped" if res.build.mappings else "TFLite operators, compared by counts"
    console.print(f"{res.build.compiler} {res.build.version} on {res.build.platform}: {s['rows_npu']} NPU / {s['rows_cpu']} CPU "
                  f"operators in {res.build.seconds:.1f} s; {mapped}; memory {memory}", highlight=False, markup=False)
    for row in s["cpu_rows"]:
        console.print(f"  CPU: {row}", highlight=False, markup=False)
    if s.get("inference_ms") is not None:
        console.print(f"estimated inference time ({res.estimated_on}): {s['inference_ms']:.1f} ms",
                      highlight=False, markup=False)
    console.print(f"log: {res.build.log}" + (f"; model: {res.build.rknn_file}" if res.build.rknn_file else ""), highlight=False, markup=False)
    print_referee([res])


@compilers_app.command("list")
@user_errors
def compilers_list(as_json: JsonOpt = False) -> None:
    """Known vendor compilers: installed version and where their environment lives."""
    from npuyolo.compilers.envs import compilers_root
    from npuyolo.compilers.registry import listing

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


@compilers_app.command("install", cls=CompilersHelp)  # {compilers}: from the compiler registry
@user_errors
def compilers_install(name: Annotated[str, typer.Argument(help="{compilers}.")],
                      force: Annotated[bool, typer.Option("--force", help="Reinstall even if installed.")] = False,
                      as_json: JsonOpt = False) -> None:
    """Create the compiler's own virtual environment and pip-install its pinned packages (this downloads)."""
    from dataclasses import asdict

    from npuyolo.compilers.registry import COMPILERS, install, spec

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
                leaky: Annotated[str, option(RewriteOptions, "leaky")] = RewriteOptions.leaky,
                out: Annotated[Optional[str], typer.Option(help="Output file [default: MODEL.<method>.onnx].")] = None,
                force: Annotated[bool, option(RewriteOptions, "force")] = RewriteOptions.force,
                as_json: JsonOpt = False) -> None:
    """Replace every LeakyRelu with an equivalent built from ReLU-NPU ops."""
    from npuyolo.services import models

    r = models.rewrite(None, model, out, RewriteOptions.pick(locals()))
    if as_json:
        return print_json(r)
    console.print(f"rewrote {r['rewritten']} LeakyRelu node(s) as {leaky}: {r['onnx']}", highlight=False, markup=False)
