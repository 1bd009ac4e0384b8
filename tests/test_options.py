"""One options object per operation (issue 32, point 2): each default stated once, in `npuyolo.services.options`; the
CLI reads its flags' defaults and help from there, the API takes the object or its fields, unknown keys are refused."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer

import npuyolo
from npuyolo import NpuyoloError
from npuyolo.cli import app
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.services import options as opts

SRC = Path(npuyolo.__file__).resolve().parent
CLASSES = [c for c in vars(opts).values() if isinstance(c, type) and issubclass(c, opts.Options) and c is not opts.Options]

# each command and the options class its flags come from
COMMANDS = {
    "export": opts.ExportOptions, "npu check": opts.CheckOptions, "npu compile": opts.CompileOptions,
    "npu rewrite": opts.RewriteOptions, "variants show": opts.VariantOptions, "data synth": opts.SynthOptions,
    "distill": opts.DistillOptions, "prune": opts.PruneOptions, "series run": opts.ExecutorOptions,
    "hybrid search": opts.HybridOptions, "study relu-gap": opts.ReluGapOptions, "deploy plan": opts.PlanOptions,
    "series plan": opts.PlanOptions, "deploy qat": opts.QatOptions, "deploy eval": opts.EvalOptions,
    "deploy bench": opts.BenchOptions, "predict": opts.PredictOptions, "deploy bundle": opts.BundleOptions,
    "compare": opts.CompareOptions, "report": opts.ReportOptions, "series report": opts.SeriesReportOptions,
    "deploy quantize": QuantizeOptions, "variants": opts.VariantsOptions, "runs export": opts.MlflowOptions,
    "study report": opts.StudyReportOptions,
}
NOT_FLAGS = {"draw", "seed"}  # compare(draw=False) and quantize(seed=...): the API's only (the CLI draws; quantizes with the run's seed)


def command(path: str):
    cmd = typer.main.get_command(app)
    for word in path.split():
        cmd = cmd.commands[word]
    return cmd


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_flag_takes_its_default_and_help_from_the_options(path):
    cls, params = COMMANDS[path], {p.name: p for p in command(path).params}
    for f in opts.fields_of(cls):
        if f.name in NOT_FLAGS and not (cls is opts.CompareOptions and f.name == "seed"):
            continue
        assert f.name in params, f"{path}: no flag for {cls.__name__}.{f.name}"
        default = params[f.name].default
        want = ",".join(map(str, f.default)) if f.name == "seeds" else f.default
        assert default == want or (default == () and want is None), (path, f.name, default, want)
        if f.help and f.name != "imgsz":  # `series plan --imgsz` says "each run's"
            assert params[f.name].help == f.help, (path, f.name)


def forbidden_defaults() -> dict[str, set]:
    """(field name -> its defaults) of every options class: what a door or a service must not state again."""
    found: dict[str, set] = {}
    for cls in [*CLASSES, QuantizeOptions]:
        for f in opts.fields_of(cls):
            if f.name == "name":  # a label (a series' or study's own name), not a setting; `name=` is everywhere
                continue
            if f.default is not None and not isinstance(f.default, bool):
                found.setdefault(f.name, set()).add(f.default if not isinstance(f.default, list) else tuple(f.default))
    return found


def restated_defaults(tree: ast.AST, rel: str, forbidden: dict[str, set]) -> list[str]:
    """Parameters whose default, and keyword arguments whose value, is a literal an options class already states
    (`calib: int = 200`, `build_plan(..., conf=0.25)`)."""
    found = []
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs += list(zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults))
            pairs += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        elif isinstance(node, ast.Call):
            pairs += [(k.arg, k.value) for k in node.keywords if k.arg]
        for name, value in pairs:
            if isinstance(value, ast.Constant) and not isinstance(value.value, bool) and value.value in forbidden.get(name, ()):
                found.append(f"{rel}:{value.lineno}: {name}={value.value!r}")
    return found


def test_no_door_or_service_restates_a_default():
    """40 defaults were stated 151 times (calib=200 x5, holdout=50 x6, conf=0.25 x8): the CLI's flags, the API's
    keywords and the services now read them from the options classes."""
    forbidden = forbidden_defaults()
    assert {"calib", "holdout", "conf", "iou", "max_det", "runs", "bootstrap", "nc", "anneal_schedule"} <= set(forbidden)
    found = []
    for path in [*sorted((SRC / "cli").glob("*.py")), *sorted((SRC / "services").glob("*.py")), SRC / "api.py",
                 SRC / "deploy" / "int8" / "run.py"]:
        if path.name == "options.py":
            continue
        rel = path.relative_to(SRC).as_posix()
        found += restated_defaults(ast.parse(path.read_text(encoding="utf-8")), rel, forbidden)
    assert not found, "defaults stated again (take them from npuyolo.services.options):\n" + "\n".join(found)


def test_the_scan_sees_a_restated_default():
    code = ("def quantize(run, calib: int = 200, *, holdout=50): ...\n"
            "build_plan(reg, m, conf=0.25, iou=0.7)\n"
            "fine(calib=PlanOptions.calib, label='n')\n")
    found = restated_defaults(ast.parse(code), "x.py", forbidden_defaults())
    assert [f.split(": ")[1] for f in found] == ["calib=200", "holdout=50", "conf=0.25", "iou=0.7"], found


def test_options_refuse_unknown_keys_and_wrong_types_in_one_line():
    with pytest.raises(NpuyoloError, match=r"unknown option\(s\) calibs for plan; accepted: conf, calib"):
        opts.PlanOptions.of(calibs=3)
    for bad, said in [(dict(conf="0.3"), "conf must be a number, got str '0.3'"), (dict(calib=4.0), "calib must be an int"),
                      (dict(sweep="no"), "sweep must be True or False"), (dict(workers=True), "workers must be an int")]:
        with pytest.raises(NpuyoloError) as e:
            opts.PlanOptions.of(**bad)
        assert said in str(e.value) and "\n" not in str(e.value) and e.value.param == next(iter(bad))
    with pytest.raises(NpuyoloError, match="options must be a PlanOptions, got PredictOptions"):
        opts.PlanOptions.of(opts.PredictOptions())
    base = opts.PlanOptions(calib=8)
    assert opts.PlanOptions.of(base, sweep=False) == opts.PlanOptions(calib=8, sweep=False) and base.sweep is True
    assert opts.ReluGapOptions(seeds="2, 0").seeds == [2, 0] and opts.CompareOptions(plot="f.png").plot == Path("f.png")
    with pytest.raises(AttributeError, match="frozen"):
        base.calib = 3
    with pytest.raises(NpuyoloError, match="unknown option"):
        opts.PlanOptions(calibs=3)


def test_one_default_for_what_lower_layers_state_too():
    """The stages keep defaults of their own for direct callers; where both state one, they agree."""
    from npuyolo.compilers.calibration import CALIB_IMAGES
    from npuyolo.deploy.plan import DEPLOY_CONF
    from npuyolo.train.ray_executor import RayOptions

    assert opts.PlanOptions.conf == opts.PredictOptions.conf == DEPLOY_CONF and opts.CompileOptions.calib == CALIB_IMAGES
    ray = {f.name: f.default for f in opts.fields_of(RayOptions)}
    assert {k: v for k, v in opts.ExecutorOptions().as_dict().items() if k != "executor"} == ray


def test_numbers_of_other_libraries_are_taken_as_the_python_number_of_their_field():
    """A value read from an array (numpy's int64, float32, bool_) was taken by QuantizeOptions when it was a dataclass;
    an Options class takes it too, as the plain number (JSON-writable), while a str number stays refused."""
    import json

    import numpy as np

    from npuyolo.errors import NpuyoloError

    q = QuantizeOptions(calib=np.int64(5), percentile=np.float32(99.5), per_channel=np.True_)
    assert (q.calib, q.percentile, q.per_channel) == (5, 99.5, True)
    assert (type(q.calib), type(q.percentile), type(q.per_channel)) == (int, float, bool)
    plan = opts.PlanOptions.of(conf=np.float64(0.3), calib=np.int32(8))
    assert json.dumps({"conf": plan.conf, "calib": plan.calib}) == '{"conf": 0.3, "calib": 8}'
    with pytest.raises(NpuyoloError, match="calib must be an int, got str '5'"):
        QuantizeOptions(calib="5")
    with pytest.raises(NpuyoloError, match="calib must be an int, got float"):
        QuantizeOptions(calib=np.float64(5.0))
