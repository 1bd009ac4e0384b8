"""Reports: `npuyolo report`, `npuyolo series report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, app, console, open_registry, print_json, series_app, user_errors


@app.command()
@user_errors
def report(run: Annotated[str, typer.Argument(help="Run id or name.")],
           compare: Annotated[Optional[str], typer.Option(help="Run to compare with (e.g. the ReLU twin).")] = None,
           lang: Annotated[str, typer.Option(help="ko or en.")] = "en",
           fmt: Annotated[str, typer.Option("--format", help="md or html (one self-contained file).")] = "md",
           out: Annotated[Optional[Path], typer.Option(help="Output folder [default: the run's folder, reports/].")] = None,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a training report from the registry (every number is a recorded one)."""
    from npuyolo.report.render import render_run

    path = render_run(open_registry(registry, readonly=True), run, out, lang=lang, fmt=fmt, compare=compare)
    if as_json:
        return print_json({"report": str(Path(path).resolve()), "folder": str(Path(path).resolve().parent)})
    console.print(f"wrote {path}", highlight=False, markup=False)


@series_app.command("report")
@user_errors
def series_report(name: str, lang: Annotated[str, typer.Option(help="ko or en.")] = "en",
                  target: Annotated[str, typer.Option("--target", "-t", help="NPU target for the accuracy vs compatibility plot.")] = "relu-only",
                  fmt: Annotated[str, typer.Option("--format", help="md or html (one self-contained file).")] = "md",
                  out: Annotated[Optional[Path], typer.Option(help="Output folder [default: <registry dir>/reports/series-<name>].")] = None,
                  as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write the series overview: ranking table, all members' curves, accuracy vs NPU compatibility."""
    from npuyolo.report.render import render_series

    path = render_series(open_registry(registry, readonly=True), name, out, lang=lang, target=target, fmt=fmt)
    if as_json:
        return print_json({"report": str(Path(path).resolve())})
    console.print(f"wrote {path}", highlight=False, markup=False)
