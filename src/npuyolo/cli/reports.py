"""Reports: `npuyolo report`, `npuyolo series report`: thin translations of `npuyolo.services.reports`."""


from pathlib import Path
from typing import Annotated, Optional

import typer

from npuyolo.cli.common import JsonOpt, RegistryOpt, app, console, option, print_json, series_app, user_errors
from npuyolo.services.options import ReportOptions, SeriesReportOptions


@app.command()
@user_errors
def report(run: Annotated[str, typer.Argument(help="Run id or name.")],
           compare: Annotated[Optional[str], typer.Option(help="Run to compare with (e.g. the ReLU twin).")] = None,
           lang: Annotated[list[str], option(ReportOptions, "lang")] = ReportOptions.lang,
           fmt: Annotated[list[str], option(ReportOptions, "fmt")] = ReportOptions.fmt,
           out: Annotated[Optional[Path], typer.Option(help="Output folder [default: the run's folder, reports/].")] = None,
           as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write a training report from the registry (every number is a recorded one), in each language and format asked."""
    from npuyolo.services import reports

    _print_written(reports.report(registry, run, ReportOptions.pick(locals()), compare=compare, out=out), as_json, folder=True)


@series_app.command("report")
@user_errors
def series_report(name: str, lang: Annotated[list[str], option(SeriesReportOptions, "lang")] = SeriesReportOptions.lang,
                  target: Annotated[str, option(SeriesReportOptions, "target")] = SeriesReportOptions.target,
                  fmt: Annotated[list[str], option(SeriesReportOptions, "fmt")] = SeriesReportOptions.fmt,
                  out: Annotated[Optional[Path], typer.Option(help="Output folder [default: <registry dir>/reports/series-<name>].")] = None,
                  as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Write the series overview: ranking table, all members' curves, accuracy vs NPU compatibility."""
    from npuyolo.services import reports

    _print_written(reports.series_report(registry, name, SeriesReportOptions.pick(locals()), out=out), as_json)


def _print_written(written, as_json: bool, folder: bool = False) -> None:
    """`wrote PATH` per report; --json: the first as "report" (as with one), every one under "reports"."""
    paths = [Path(p).resolve() for p in (written if isinstance(written, list) else [written])]
    if as_json:
        return print_json({"report": str(paths[0]), "reports": [str(p) for p in paths],
                           **({"folder": str(paths[0].parent)} if folder else {})})
    for p in (written if isinstance(written, list) else [written]):
        console.print(f"wrote {p}", highlight=False, markup=False)
