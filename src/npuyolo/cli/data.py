"""Data sets: `npuyolo data synth|check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from npuyolo.cli.common import JsonOpt, Table, console, data_app, err, print_json, user_errors


@data_app.command("synth")
@user_errors
def data_synth(out: Path, train: Annotated[int, typer.Option(help="Training images.")] = 400,
               val: Annotated[int, typer.Option(help="Validation images.")] = 100,
               imgsz: Annotated[int, typer.Option(help="Image side in px.")] = 320,
               seed: Annotated[int, typer.Option()] = 0,
               force: Annotated[bool, typer.Option("--force", help="Empty a set npuyolo wrote there before, then write anew.")] = False,
               as_json: JsonOpt = False) -> None:
    """Write a synthetic traffic-sign set (6 classes) in YOLO format with a data.yaml, into a new or empty folder."""
    from rich.progress import Progress

    from npuyolo.data.check import DataError
    from npuyolo.data.synth import CLASSES, check_synth_args, synthesize

    if train < 1 or val < 1:
        raise DataError(["--train and --val must be at least 1"])
    check_synth_args(out, imgsz, seed, force)
    with Progress(console=err) as progress:
        task = progress.add_task("drawing signs", total=train + val)
        path = synthesize(out, train, val, imgsz, seed, progress=lambda n: progress.advance(task, n), force=force)
    if as_json:
        return print_json({"data": str(Path(path).resolve()), "train": train, "val": val, "classes": list(CLASSES)})
    console.print(f"wrote {path} ({train} train / {val} val images, classes: {', '.join(CLASSES)})", highlight=False, markup=False)


@data_app.command("check")
@user_errors
def data_check(data: Path, as_json: JsonOpt = False) -> None:
    """Validate a data set and print per-split image and per-class instance counts."""
    from npuyolo.data.check import check_dataset

    report = check_dataset(data).as_dict()
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
