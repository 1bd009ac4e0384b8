"""The `npuyolo` command line: thin command modules over `npuyolo.services` and the stage packages.

`common` holds the Typer apps, options and the one-line error wrapper; `tables` everything printed; each other module
one group of commands. Importing this package registers them all on `app`.
"""


# registration order is the order `npuyolo --help` lists the top-level commands in
from npuyolo.cli import data, deploy, models, npu, reports, training, compare  # noqa: F401,I001
from npuyolo.cli.common import app, console
from npuyolo.cli.tables import print_plan, print_series_plan

__all__ = ["app", "console", "main", "print_plan", "print_series_plan"]


def main() -> None:  # pragma: no cover
    app()
