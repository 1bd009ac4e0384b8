"""What every command module shares: the Typer apps, the consoles, the options, the one-line error wrapper."""


import contextlib
import functools
import inspect
import json
import re
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

MARKUP = None  # help texts are plain: "[default: ...]" must not be read as Rich markup and vanish
app = typer.Typer(help="Build, train, check and report NPU-ready YOLO11 detectors.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=MARKUP)
variants_app = typer.Typer(help="Model variants: NPU optimization levels x activations.", invoke_without_command=True, rich_markup_mode=MARKUP)
runs_app = typer.Typer(help="Runs recorded in the registry.", invoke_without_command=True, rich_markup_mode=MARKUP)
series_app = typer.Typer(help="Series: several variants, one recipe, one data set.", no_args_is_help=True, rich_markup_mode=MARKUP)
data_app = typer.Typer(help="Data sets: synthesize and check.", no_args_is_help=True, rich_markup_mode=MARKUP)
hybrid_app = typer.Typer(help="Hybrid activations: LeakyReLU only in the stages where it pays.", no_args_is_help=True, rich_markup_mode=MARKUP)
deploy_app = typer.Typer(help="Deployment: INT8 quantization, evaluation of ONNX artefacts, latency.", no_args_is_help=True, rich_markup_mode=MARKUP)
study_app = typer.Typer(help="Studies: several routes x seeds on equal terms, summarised with their spread.", no_args_is_help=True, rich_markup_mode=MARKUP)
npu_app = typer.Typer(help="NPU compatibility: target profiles, per-node placement, graph rewrites.", no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(variants_app, name="variants")
app.add_typer(runs_app, name="runs")
app.add_typer(series_app, name="series")
app.add_typer(data_app, name="data")
app.add_typer(npu_app, name="npu")
app.add_typer(deploy_app, name="deploy")
app.add_typer(hybrid_app, name="hybrid")
app.add_typer(study_app, name="study")
compilers_app = typer.Typer(help="Vendor NPU compilers as referees, each in its own environment (installed only on request).",
                            no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(compilers_app, name="compilers")

class FilledHelp(TyperCommand):
    """A command whose help (its text and its parameters') holds `{name}` phrases that `fields()` fills each time the
    help is shown, so their source is read only then; the templates stay, so a later help reads it afresh."""

    def fields(self) -> dict:
        raise NotImplementedError

    def format_help(self, ctx, formatter):
        fields = self.fields()
        templates = [(self, self.help), *((p, getattr(p, "help", None)) for p in self.params)]
        try:
            for holder, text in templates:
                if text:
                    holder.help = text.format_map(fields)
            super().format_help(ctx, formatter)
        finally:
            for holder, text in templates:
                holder.help = text


class RecipeDefaultsHelp(FilledHelp):
    """A command whose help quotes the report's recipe: `{epochs}` and the like are filled from default_recipe.yaml
    only when this help is shown, so that `npuyolo --help` and every other command start without PyYAML (issue 23)."""

    def fields(self) -> dict:
        from npuyolo.train.defaults import recipe_defaults  # PyYAML; measured: 10 ms of a 150 ms start

        return recipe_defaults()


class CompilersHelp(FilledHelp):
    """A command whose help names the vendor compilers (`{compilers}`, `{referees}`, `{targets}`, `{synthetic}`): each
    phrase from the compiler registry (`services.models.compiler_help`), read only when this help is shown (the
    registry imports ONNX: most of a second), so a compiler added there is named here without an edit."""

    def fields(self) -> dict:
        from npuyolo.services.models import compiler_help

        return compiler_help()


console = Console(width=None if sys.stdout.isatty() else 160)  # no truncated tables when piped
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def option(options: type, name: str, *flags: str, **kwargs):
    """A command's flag for one field of an operation's options class (`npuyolo.services.options`): its help and, where
    it is not --<name>, its flags come from the field; the parameter's default is the class's (`= PlanOptions.conf`),
    so each default is stated once, there."""
    flags = flags or (options.flags(name) if hasattr(options, "flags") else ())
    if "help" not in kwargs:  # an options class without help of its own (QuantizeOptions) gets it from the command
        kwargs["help"] = options.help(name)
    return typer.Option(*flags, **kwargs)


def _flag_type(options: type, annotation: str):
    """A field's annotation (text, as the options class keeps it) as the type Typer reads: `int | None` is Optional[int]."""
    import sys as _sys
    import types

    made = eval(annotation, vars(_sys.modules[options.__module__]))  # noqa: S307 - the options classes' own annotations
    if isinstance(made, types.UnionType) and type(None) in made.__args__:
        (inner,) = [a for a in made.__args__ if a is not type(None)]
        return Optional[inner]
    return made


def with_options(options: type, **flags: dict):
    """A command whose flags are the fields of one options class, stated once there: each field becomes a flag (its
    default and help from the field, `flags[name]` any other keyword of `option`, e.g. a help of its own), placed
    before --json, and the command receives them as one `options` object (`options.pick`). Two commands that take the
    same options (`deploy plan`, `series plan`) list none of them."""
    from npuyolo.services.options import fields_of

    def wrap(fn):
        names = [f.name for f in fields_of(options)]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**{k: v for k, v in kwargs.items() if k not in names}, options=options.pick(kwargs))

        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        at = next(i for i, p in enumerate(own) if p.name == "as_json")
        added = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                                   annotation=Annotated[_flag_type(options, f.type),
                                                        option(options, f.name, **flags.get(f.name, {}))])
                 for f in fields_of(options)]
        parameters = own[:at] + added + own[at:]
        command.__signature__ = signature.replace(parameters=parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
        return command

    return wrap


RegistryOpt = Annotated[Optional[Path], typer.Option("--registry", envvar="NPUYOLO_REGISTRY", help="SQLite registry file [default: runs/npuyolo.db]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class Table(RichTable):
    """A Rich table whose title, headers and cells are plain text: a run or class named '[/bold]' stays text."""

    def __init__(self, *args, title=None, **kwargs):
        super().__init__(*args, title=Text(title) if isinstance(title, str) else title, **kwargs)

    def add_column(self, header="", *args, **kwargs):
        return super().add_column(Text(header) if isinstance(header, str) else header, *args, **kwargs)

    def add_row(self, *cells, **kwargs):
        return super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def _version(value: bool) -> None:
    if value:
        from npuyolo import __version__

        sys.stdout.write(f"npuyolo {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                       help="Print the version and exit.")] = False) -> None:
    """Build, train, check and report NPU-ready YOLO11 detectors."""


def user_errors(fn):
    """Turn npuyolo's own errors (bad input, unknown names, unusable files) into one red line and exit code 2.

    So is an OS error the user fixes (full disk, read-only or forbidden place) that no layer below named better.
    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from npuyolo.errors import NpuyoloError, storage_error

        try:
            return fn(*args, **kwargs)
        except (NpuyoloError, OSError) as e:
            said = e if isinstance(e, NpuyoloError) else storage_error(e)
            if said is None:
                raise
            err.print("[bold red]error:[/] " + escape(as_flags(said, inspect.signature(fn).parameters)), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


FLAG_NAMES: dict[str, str] = {}  # a parameter whose flag is not --<name with dashes>


def as_flags(e: BaseException, names: Collection[str] = ()) -> str:
    """An error as the CLI says it: the parameter the message is about (`max_parallel`) becomes its flag
    (`--max-parallel`), and so does a parameter of this command that the message quotes in backticks (`force`); the
    same error reaches a Python API user with the parameters' own names. `names`: the command's parameters."""
    text = str(e)
    param = getattr(e, "param", None)
    if param:
        text = re.sub(rf"(?<![\w-]){re.escape(param)}(?![\w-])", _flag(param), text, count=1)
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: _flag(m[1]) if m[1] in names else m[0], text)


def _flag(param: str) -> str:
    return FLAG_NAMES.get(param, "--" + param.replace("_", "-"))


def quiet_stdout(as_json: bool = True):
    """With --json, stdout carries the JSON alone: prints, Ultralytics' progress and its logger go to stderr."""
    if not as_json:
        return contextlib.nullcontext()
    from npuyolo.ultra import stdout_to_stderr

    return stdout_to_stderr()



def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def duration(seconds: float | None) -> str:
    """42.3 s, 12 min 05 s, 3 h 02 min: how long a run took, the way a person reads it."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def fmt(v, digits: int = 3) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def open_registry(path: Path | None, readonly: bool = False):
    """The registry; read commands open it read-only (no file created, nothing written, not even reaping)."""
    from npuyolo.registry.db import Registry

    return Registry(path, readonly=readonly)
