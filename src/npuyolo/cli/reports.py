"""Reports: `npuyolo report`, `npuyolo series report`: thin translations of `npuyolo.services.reports`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, app, console, option, print_json, series_app, user_errors
from npuyolo.services.options import ReportOptions, SeriesReportOptions


@app.command()
@user_errors
def report(run: Annotated[str, typer.Argument(help="Run id or name.")],
           compare: Annotated[Optional[str], typer.Option(help="Run to compare with (e.g. the ReLU twin).")] = None,
           lang: Annotated[str, option(ReportOptions, "lang")] = ReportOptions.lang,
           fmt: Annotated[str, option(ReportOptions, "fmt")] = ReportOptions.fmt,
           out: Annotated[Optional[Path], typer.Option(help="Output folder [default: the run's folder, reports/].")] = None,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a training report from the registry (every number is a recorded one)."""
    from npuyolo.services import reports

    path = reports.report(registry, run, ReportOptions.pick(locals()), compare=compare, out=out)
    if as_json:
        return print_json({"report": str(Path(path).resolve()), "folder": str(Path(path).resolve().parent)})
    console.print(f"wrote {path}", highlight=False, markup=False)


@series_app.command("report")
@user_errors
def series_report(name: str, lang: Annotated[str, option(SeriesReportOptions, "lang")] = SeriesReportOptions.lang,
                  target: Annotated[str, option(SeriesReportOptions, "target")] = SeriesReportOptions.target,
                  fmt: Annotated[str, option(SeriesReportOptions, "fmt")] = SeriesReportOptions.fmt,
                  out: Annotated[Optional[Path], typer.Option(help="Output folder [default: <registry dir>/reports/series-<name>].")] = None,
                  as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write the series overview: ranking table, all members' curves, accuracy vs NPU compatibility."""
    from npuyolo.services import reports

    path = reports.series_report(registry, name, SeriesReportOptions.pick(locals()), out=out)
    if as_json:
        return print_json({"report": str(Path(path).resolve())})
    console.print(f"wrote {path}", highlight=False, markup=False)
