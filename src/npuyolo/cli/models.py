"""Variants and export: `npuyolo variants`, `npuyolo export`."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, Table, app, console, print_json, user_errors, variants_app


@variants_app.callback()
@user_errors
def variants_list(ctx: typer.Context, as_json: JsonOpt = False,
                  scale: Annotated[str, typer.Option(help="Width/depth scale: n, s, m, l, x.")] = "n") -> None:
    """List every level x activation variant."""
    if ctx.invoked_subcommand:
        return
    from npuyolo.variants.spec import all_variants, levels

    rows = [{"name": v.name, "level": f"L{v.level}", "activation": v.activation, "slope": v.slope, "scale": v.scale,
             **v.settings.model_dump(include={"activation_scope", "attention", "sppf_pool", "head"})} for v in all_variants(scale)]
    if as_json:
        return print_json(rows)
    table = Table(title="npuyolo variants (levels are cumulative)")
    for col in ("name", "activation_scope", "attention", "sppf_pool", "head"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["activation_scope"], r["attention"], r["sppf_pool"], r["head"])
    console.print(table)
    for lv in levels().values():
        console.print(f"[bold]{lv.name}[/] {lv.title}: {lv.summary}", highlight=False)


@variants_app.command("show")
@user_errors
def variants_show(name: str, nc: Annotated[int, typer.Option(help="Number of classes.")] = 80,
                  imgsz: Annotated[int, typer.Option(help="Input size for GFLOPs.")] = 640, as_json: JsonOpt = False) -> None:
    """Print a variant's Ultralytics model YAML, parameter count and GFLOPs."""
    from npuyolo.deploy.export import check_imgsz
    from npuyolo.variants.build import activation_census, build_model, format_model_yaml, model_summary, model_yaml
    from npuyolo.variants.spec import parse_variant

    check_imgsz(imgsz)
    spec = parse_variant(name)
    d = model_yaml(spec, nc=nc)
    model = build_model(d, nc=nc)
    info = {"name": spec.name, **model_summary(model, imgsz), "imgsz": imgsz, "activations": activation_census(model),
            "level": spec.settings.model_dump(), "yaml": d}
    if as_json:
        return print_json(info)
    console.print(f"# {spec.name}: {spec.settings.summary}", highlight=False, markup=False)
    sys.stdout.write(format_model_yaml(d))
    console.print(f"parameters: {info['parameters']:,}   GFLOPs@{imgsz}: {info['gflops']:.2f}   activations: {info['activations']}")


@app.command()
@user_errors
def export(model: Annotated[str, typer.Argument(help="Variant name (untrained), run id/name, or .pt checkpoint.")],
           imgsz: Annotated[Optional[int], typer.Option(help="Static input size [default: the size it was trained at (run or .pt), else 640].")] = None,
           head: Annotated[Optional[str], typer.Option(help="npu (L4 cut) or ultralytics [default: the level's head]")] = None,
           out: Annotated[Optional[str], typer.Option(help="Output .onnx file.")] = None,
           nc: Annotated[int, typer.Option(help="Classes, for an untrained variant.")] = 80,
           force: Annotated[bool, typer.Option("--force", help="Let --out replace a file npuyolo did not write, or a symlink (never the registry).")] = False,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a static-shape ONNX file (a run's goes to its folder's export/, anything else to the working directory)."""
    from npuyolo.services import export_model

    record = export_model(model, out, registry=registry, imgsz=imgsz, head=head, nc=nc, force=force)
    if as_json:
        return print_json(record.as_dict())
    path = record.onnx
    console.print(f"wrote {path}", highlight=False, markup=False)
