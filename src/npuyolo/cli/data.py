"""Data sets: `npuyolo data synth|check`: thin translations of `npuyolo.services.data`."""


from pathlib import Path
from typing import Annotated

import typer

from npuyolo.cli.common import JsonOpt, Table, console, data_app, err, option, print_json, user_errors
from npuyolo.services.options import SynthOptions


@data_app.command("synth")
@user_errors
def data_synth(out: Path, train: Annotated[int, option(SynthOptions, "train")] = SynthOptions.train,
               val: Annotated[int, option(SynthOptions, "val")] = SynthOptions.val,
               imgsz: Annotated[int, option(SynthOptions, "imgsz")] = SynthOptions.imgsz,
               seed: Annotated[int, option(SynthOptions, "seed")] = SynthOptions.seed,
               force: Annotated[bool, option(SynthOptions, "force")] = SynthOptions.force,
               as_json: JsonOpt = False) -> None:
    """Write a synthetic traffic-sign set (6 classes) in YOLO format with a data.yaml, into a new or empty folder."""
    from npuyolo.services import data as datasets
    from rich.progress import Progress

    with Progress(console=err) as progress:
        bar = []
        r = datasets.synth(out, SynthOptions.pick(locals()), on_start=lambda total: bar.append(progress.add_task("drawing signs", total=total)),
                       progress=lambda n: progress.advance(bar[0], n))
    if as_json:
        return print_json(r)
    console.print(f"wrote {r['data']} ({r['train']} train / {r['val']} val images, classes: {', '.join(r['classes'])})",
                  highlight=False, markup=False)


@data_app.command("check")
@user_errors
def data_check(data: Path, as_json: JsonOpt = False) -> None:
    """Validate a data set and print per-split image and per-class instance counts."""
    from npuyolo.services import data as datasets

    report = datasets.check(data)
    for warning in report["warnings"]:  # legal, likely a mistake (duplicate boxes): said on stderr, in JSON too
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if as_json:
        return print_json(report)
    table = Table(title=f"{data}  ({report['nc']} classes, content hash {report['content_hash']})")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("background", justify="right")
    for n in report["names"]:
        table.add_column(n, justify="right")
    for split, s in report["splits"].items():
        table.add_row(split, str(s["images"]), str(s["background_images"]), *(str(s["instances"][n]) for n in report["names"]))
    console.print(table)
    console.print("[green]OK[/]: no problems found" + (f" ({len(report['warnings'])} warning(s) above)" if report["warnings"] else ""))
