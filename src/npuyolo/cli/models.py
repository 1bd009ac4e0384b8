"""Variants and export: `npuyolo variants`, `npuyolo export`: thin translations of `npuyolo.services.models`."""


import sys
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, Table, app, console, option, print_json, user_errors, variants_app
from npuyolo.services.options import ExportOptions, VariantOptions, VariantsOptions


@variants_app.callback()
@user_errors
def variants_list(ctx: typer.Context, as_json: JsonOpt = False,
                  scale: Annotated[str, option(VariantsOptions, "scale")] = VariantsOptions.scale) -> None:
    """List every level x activation variant."""
    from npuyolo.services import models

    if ctx.invoked_subcommand:
        return
    listing = models.variants(scale)
    if as_json:
        return print_json(listing["variants"])
    table = Table(title="npuyolo variants (levels are cumulative)")
    for col in ("name", "activation_scope", "attention", "sppf_pool", "head"):
        table.add_column(col)
    for r in listing["variants"]:
        table.add_row(r["name"], r["activation_scope"], r["attention"], r["sppf_pool"], r["head"])
    console.print(table)
    for lv in listing["levels"]:
        console.print(f"[bold]{lv['name']}[/] {lv['title']}: {lv['summary']}", highlight=False)


@variants_app.command("show")
@user_errors
def variants_show(name: str, nc: Annotated[int, option(VariantOptions, "nc")] = VariantOptions.nc,
                  imgsz: Annotated[int, option(VariantOptions, "imgsz")] = VariantOptions.imgsz, as_json: JsonOpt = False) -> None:
    """Print a variant's Ultralytics model YAML, parameter count and GFLOPs."""
    from npuyolo.services import models

    info = models.variant_show(name, VariantOptions.pick(locals()))
    text, summary = info.pop("text"), info.pop("summary")
    if as_json:
        return print_json(info)
    console.print(f"# {info['name']}: {summary}", highlight=False, markup=False)
    sys.stdout.write(text)
    console.print(f"parameters: {info['parameters']:,}   GFLOPs@{info['imgsz']}: {info['gflops']:.2f}   activations: {info['activations']}")


@app.command()
@user_errors
def export(model: Annotated[str, typer.Argument(help="Variant name (untrained), run id/name, or .pt checkpoint.")],
           imgsz: Annotated[Optional[int], option(ExportOptions, "imgsz")] = ExportOptions.imgsz,
           head: Annotated[Optional[str], option(ExportOptions, "head")] = ExportOptions.head,
           out: Annotated[Optional[str], typer.Option(help="Output .onnx file.")] = None,
           nc: Annotated[int, option(ExportOptions, "nc")] = ExportOptions.nc,
           force: Annotated[bool, option(ExportOptions, "force")] = ExportOptions.force,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a static-shape ONNX file (a run's goes to its folder's export/, anything else to the working directory)."""
    from npuyolo.services import models

    record = models.export_model(registry, model, out, ExportOptions.pick(locals()))
    if as_json:
        return print_json(record.as_dict())
    console.print(f"wrote {record.onnx}", highlight=False, markup=False)
