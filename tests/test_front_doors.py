"""The CLI and the Python API are two front doors onto the same services: the same operation through either writes
the same files at the same size and records the same artefacts (issue 23, point 1)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from npuyolo import Workspace
from npuyolo.cli import app
from npuyolo.registry.db import Registry
from npuyolo.resolve import ModelRef
from npuyolo.variants.build import build_model

from .test_seams import EVAL_JSON, QUANTIZE_JSON

NAMES = ["stop", "speedlimit"]


def cli(*args) -> dict | list:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # stdout alone: Ultralytics' training log goes to stderr


def input_side(path: str | Path) -> int:
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An L4-relu .pt that says it was trained at 64 px (its args, as Ultralytics saves them)."""
    model = build_model("L4-relu", nc=len(NAMES), names=NAMES)
    model.args = {"imgsz": 64}
    path = tmp_path_factory.mktemp("front-doors") / "signs64.pt"
    torch.save({"model": None, "ema": model.half(), "epoch": -1, "train_args": {"imgsz": 64}}, path)
    return path


def finished_run(db: Path, checkpoint: Path, imgsz: int = 96) -> int:
    reg = Registry(db)
    run_id = reg.create_run(name="signs", variant="L4-relu", recipe={"imgsz": imgsz}, data_path="x", data_hash="0",
                            class_names=NAMES, weights_source=None, device="cpu", versions={})
    reg.add_artifact(run_id, "weights/best", checkpoint.resolve())
    reg.set_status(run_id, "finished")
    return run_id


def test_a_model_reference_is_parsed_in_one_place(tmp_path, checkpoint):
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    kinds = {ref: ModelRef.parse(ref).kind for ref in
             ("m.onnx", "M.ONNX", str(checkpoint), "missing.pt", str(odd), "L4-leaky", "L2-leaky0.1015625", "7", "#7", "signs")}
    assert kinds == {"m.onnx": "onnx", "M.ONNX": "onnx", str(checkpoint): "pt", "missing.pt": "pt", str(odd): "pt",
                     "L4-leaky": "variant", "L2-leaky0.1015625": "variant", "7": "run", "#7": "run", "signs": "run"}
    assert [ModelRef.parse(r).is_run for r in ("7", "L4-relu", "a.pt")] == [True, False, False]


def test_export_of_a_run_records_the_same_artefact_through_either_door(tmp_path, checkpoint):
    """`npuyolo export` recorded the run's onnx/<head> artefact; `Workspace.export` wrote the file and recorded nothing."""
    written = {}
    for door in ("cli", "api"):
        db = tmp_path / door / "npuyolo.db"
        run_id = finished_run(db, checkpoint)
        out = tmp_path / door / "signs.onnx"
        if door == "cli":
            path = Path(cli("export", "signs", "--out", out, "--head", "npu", "--registry", db, "--json")["onnx"])
        else:
            path = Workspace(db).export("signs", out, head="npu")
        run = Registry(db, readonly=True).get_run(run_id)
        onnx_rows = [(a.kind, a.path, a.meta) for a in run.artifacts if a.kind.startswith("onnx/")]
        written[door] = (path, onnx_rows)
    for door, (path, rows) in written.items():
        assert path == (tmp_path / door / "signs.onnx").resolve() and input_side(path) == 96  # the run's recipe size
        assert rows == [("onnx/npu", str(path), {"imgsz": 96})], door


def test_a_checkpoint_is_exported_and_checked_at_the_size_it_was_trained_at(tmp_path, checkpoint, monkeypatch):
    """export took 640 for a .pt while check took the checkpoint's own 64: the same file, two default sizes."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "npuyolo.db"
    sides = {
        "cli export": input_side(cli("export", checkpoint, "--registry", db, "--json")["onnx"]),
        "api export": input_side(Workspace(db).export(str(checkpoint), tmp_path / "api.onnx")),
        "cli check": input_side(cli("npu", "check", checkpoint, "-t", "relu-only", "--registry", db, "--json")[0]["onnx"]),
        "api check": input_side(Workspace(db).check(str(checkpoint), ["relu-only"]).onnx_paths["relu-only"]),
    }
    assert set(sides.values()) == {64}, sides


def test_train_through_either_door_records_the_same_run(tmp_path, synth_data):
    """The CLI and Workspace.train wired recipe, anneal options and registry each on their own; both now go through
    npuyolo.services.train_model, so the same request records the same recipe, epochs and artefact kinds."""
    args = dict(epochs=1, imgsz=64, batch=8, workers=0, plots=False)
    recorded = {}
    for door in ("cli", "api"):
        db = tmp_path / door / "npuyolo.db"
        if door == "cli":
            flags = [x for k, v in args.items() for x in ((f"--{k}", v) if not isinstance(v, bool) else (f"--{'' if v else 'no-'}{k}",))]
            run_id = cli("train", "--variant", "L4-relu", "--data", synth_data, "--name", "signs", *flags, "--registry", db, "--json")["run_id"]
        else:
            run_id = Workspace(db).train("L4-relu", synth_data, name="signs", verbose=False, **args).id
        run = Registry(db, readonly=True).get_run(run_id)
        recorded[door] = (run.status, run.recipe, [e.epoch for e in run.epochs], sorted(a.kind for a in run.artifacts))
    assert recorded["cli"] == recorded["api"] and recorded["cli"][0] == "finished"


def test_a_stray_file_named_like_a_run_id_does_not_hide_the_run(tmp_path, checkpoint, monkeypatch):
    """Issue 36: with a file `1` in the working folder, `export 1`, `deploy plan 1` and `deploy quantize 1` said
    "expected a .pt checkpoint". An all-digit reference (or `#1`) names a run; `./1` still names the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "1").write_text("notes")
    (tmp_path / "#2").write_text("notes")
    assert [ModelRef.parse(r).kind for r in ("1", "#2", " 1 ", "./1")] == ["run", "run", "run", "pt"]
    db = tmp_path / "reg" / "npuyolo.db"
    run_id = finished_run(db, checkpoint)
    assert run_id == 1
    out = tmp_path / "one.onnx"
    assert Path(cli("export", "1", "--out", out, "--registry", db, "--json")["onnx"]) == out.resolve()
    assert Workspace(db).export(1, tmp_path / "two.onnx") == (tmp_path / "two.onnx").resolve()
    # a file named like a run's *name* (not its id): which one was meant is said, not guessed
    (tmp_path / "signs").write_text("notes")
    for args in (["export", "signs", "--out", str(tmp_path / "three.onnx")], ["npu", "check", "signs", "-t", "relu-only"]):
        result = CliRunner().invoke(app, [*args, "--registry", str(db)])
        assert result.exit_code == 2 and "names both a file in this folder and run #1" in result.output, result.output


# ------------------------------------------------------------------------------------------------ every operation, both doors (issue 32)
import ast  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402

import typer  # noqa: E402

import npuyolo.api  # noqa: E402
from npuyolo.cli import common as cli_common  # noqa: E402
from npuyolo.data.synth import CLASSES  # noqa: E402
from npuyolo.train.recipe import Recipe  # noqa: E402

# each CLI command and the Workspace method that is its other door; both translate one service
DOORS = {
    "train": "train", "runs": "runs", "runs show": "run", "runs export": "mlflow_export", "series run": "series",
    "series rank": "rank", "series plan": "series_plan", "series report": "series_report", "distill": "distill",
    "prune": "prune", "hybrid search": "hybrid_search", "study relu-gap": "study_relu_gap", "study report": "study_report",
    "variants": "variants", "variants show": "variant", "export": "export", "npu targets": "targets", "npu check": "check",
    "npu compile": "compile", "npu rewrite": "rewrite", "data synth": "synth", "data check": "check_data",
    "deploy quantize": "quantize", "deploy qat": "qat", "deploy eval": "evaluate", "deploy plan": "plan",
    "deploy bundle": "bundle", "deploy bench": "bench", "predict": "predict", "compare": "compare", "report": "report",
}
CLI_ONLY = {"compilers list", "compilers install"}  # installing a referee: a tool's own business, no API method
SERVICE_MODULES = {"training", "runs", "models", "datasets", "deploy", "reports", "comparison"}
# what a command may import besides the services: printing helpers and the options a stage keeps (QuantizeOptions)
DOOR_IMPORTS = ("npuyolo.services", "npuyolo.cli", "npuyolo.errors", "npuyolo.ultra", "npuyolo.train.members",
                "npuyolo.deploy.int8.options", "rich", "dataclasses")


def cli_commands() -> dict[str, object]:
    """Every command of `npuyolo` by its words ('deploy plan'), a group's own callback under the group's name."""
    found = {}

    def walk(cmd, words):
        for name, sub in getattr(cmd, "commands", {}).items():
            if getattr(sub, "commands", None):
                if sub.callback is not None and sub.invoke_without_command:
                    found[" ".join([*words, name])] = sub.callback
                walk(sub, [*words, name])
            else:
                found[" ".join([*words, name])] = sub.callback
    walk(typer.main.get_command(app), [])
    return found


def test_every_operation_has_both_doors():
    commands = cli_commands()
    assert set(commands) == set(DOORS) | CLI_ONLY, set(commands) ^ (set(DOORS) | CLI_ONLY)
    missing = [m for m in DOORS.values() if not callable(getattr(Workspace, m, None))]
    assert not missing, missing


def called_services(func) -> set[str]:
    tree = ast.parse(_dedent(inspect.getsource(inspect.unwrap(func))))
    return {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in SERVICE_MODULES}


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def stage_imports(func) -> list[str]:
    tree = ast.parse(_dedent(inspect.getsource(inspect.unwrap(func))))
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return [n for n in names if not n.startswith(DOOR_IMPORTS)]


def test_every_door_is_a_thin_translation_of_one_service():
    """27 of 31 commands and 15 of 19 Workspace methods wired the stages themselves, and drifted (issue 32): each
    command and each method now calls a service and imports no stage."""
    commands = cli_commands()
    for words, method in DOORS.items():
        cli_fn, api_fn = commands[words], getattr(Workspace, method)
        assert called_services(cli_fn), f"`npuyolo {words}` calls no service"
        assert called_services(api_fn), f"Workspace.{method} calls no service"
        assert not stage_imports(cli_fn), f"`npuyolo {words}` imports {stage_imports(cli_fn)}"
        assert not stage_imports(api_fn), f"Workspace.{method} imports {stage_imports(api_fn)}"
    api_imports = [n.module for n in ast.parse(inspect.getsource(npuyolo.api)).body if isinstance(n, ast.ImportFrom)]
    assert all(m.startswith(("npuyolo.services", "npuyolo.deploy.int8.options", "__future__", "pathlib", "typing"))
               for m in api_imports), api_imports
    assert cli_common.option  # the CLI's flags come from the options classes (tests/test_options.py)


def strip(value, *roots: Path):
    """A record with each door's own folder replaced by <root>, so the two doors' records compare."""
    text = json.dumps(value, default=str, sort_keys=True)
    for root in roots:
        text = text.replace(str(Path(root).resolve()), "<root>").replace(str(root), "<root>")
    return json.loads(text)


def test_data_variants_and_targets_answer_alike_through_either_door(tmp_path, synth_data):
    ws = Workspace(tmp_path / "r.db")
    cli_set = cli("data", "synth", tmp_path / "cli", "--train", "3", "--val", "2", "--imgsz", "64", "--seed", "4", "--json")
    api_set = ws.synth(tmp_path / "api", train=3, val=2, imgsz=64, seed=4)
    assert strip(cli_set, tmp_path / "cli") == strip(api_set, tmp_path / "api")
    files = {door: sorted((p.relative_to(tmp_path / door).as_posix(), p.read_bytes()) for p in (tmp_path / door).rglob("*")
                          if p.is_file() and p.name != "data.yaml") for door in ("cli", "api")}
    assert files["cli"] == files["api"] and len(files["cli"]) >= 10  # the same images and labels, byte for byte
    assert cli("data", "check", synth_data, "--json") == json.loads(json.dumps(ws.check_data(synth_data), default=str))
    assert cli("variants", "--json") == ws.variants()
    assert cli("variants", "show", "L4-relu", "--nc", "2", "--imgsz", "64", "--json") == json.loads(
        json.dumps(ws.variant("L4-relu", nc=2, imgsz=64), default=str))
    assert cli("npu", "targets", "--json") == {n: p.model_dump() for n, p in ws.targets().items()}
    assert not (tmp_path / "r.db").exists()  # none of these opens a registry


def test_check_and_rewrite_record_and_write_alike_through_either_door(tmp_path):
    """`npu check` recorded its rows in the CLI and `Workspace.check(record=True)` did it again itself ("check, then
    record" written three times): one service records both; `npu rewrite` writes the same bytes."""
    rows, written = {}, {}
    for door in ("cli", "api"):
        db = tmp_path / door / "r.db"
        if door == "cli":
            cli("npu", "check", "L4-leaky", "-t", "relu-only", "-t", "hailo-8", "--imgsz", "64", "--nc", "2", "--registry", db, "--json")
        else:
            Workspace(db).check("L4-leaky", ["relu-only", "hailo-8"], imgsz=64, nc=2)
        checks = Registry(db, readonly=True).npu_checks(model_ref="L4-leaky")
        rows[door] = strip([(c.target, c.model_ref, c.head, c.report) for c in checks], tmp_path / door)
        onnx_file = Path(Registry(tmp_path / "cli" / "r.db", readonly=True).npu_checks(model_ref="L4-leaky")[0].onnx_path)
        out = tmp_path / door / "leaky.relu-decomp.onnx"  # one input for both: an untrained variant's weights are random
        if door == "cli":
            cli("npu", "rewrite", onnx_file, "--out", out, "--json")
        else:
            Workspace(db).rewrite(onnx_file, out)
        written[door] = out.read_bytes()
    assert rows["cli"] == rows["api"] and len(rows["cli"]) == 2
    assert written["cli"] == written["api"]


@pytest.fixture(scope="module")
def signs(tmp_path_factory) -> Path:
    """An untrained L4-relu .pt with the synthetic set's 6 classes, trained (it says) at 64 px."""
    model = build_model("L4-relu", nc=len(CLASSES), names=list(CLASSES))
    model.args = {"imgsz": 64}
    path = tmp_path_factory.mktemp("front-doors") / "signs6.pt"
    torch.save({"model": None, "ema": model.half(), "epoch": -1, "train_args": {"imgsz": 64}}, path)
    return path


def fake_run(db: Path, checkpoint: Path, imgsz: int = 64) -> int:
    """A finished run (one recorded epoch, best weights on disk) without training."""
    reg = Registry(db)
    rid = reg.create_run(name="signs", variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=imgsz, workers=0).model_dump(),
                         data_path="d.yaml", data_hash="h", class_names=list(CLASSES), weights_source=None, device="cpu", versions={})
    reg.add_artifact(rid, "weights/best", checkpoint.resolve())
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
    reg.set_status(rid, "finished")
    return rid


def test_runs_and_reports_read_alike_through_either_door(tmp_path, signs):
    db = tmp_path / "r.db"
    rid = fake_run(db, signs)
    ws = Workspace(db)
    assert cli("runs", "--registry", db, "--json") == json.loads(json.dumps([r.as_dict() for r in ws.runs()], default=str))
    assert cli("runs", "show", rid, "--registry", db, "--json") == json.loads(json.dumps(ws.run(rid).as_dict(), default=str))
    text = {}
    for door in ("cli", "api"):
        out = tmp_path / f"report-{door}"
        if door == "cli":
            path = Path(cli("report", rid, "--lang", "ko", "--out", out, "--registry", db, "--json")["report"])
        else:
            path = ws.report(rid, lang="ko", out=out)
        text[door] = strip(path.read_text(encoding="utf-8"), out)
    assert text["cli"] == text["api"] and "signs" in text["cli"]


def test_predict_writes_the_same_detections_through_either_door(tmp_path, signs, synth_data):
    images = synth_data.parent / "images" / "val"
    got = {}
    for door in ("cli", "api"):
        out = tmp_path / door
        if door == "cli":
            r = cli("predict", signs, images, "--conf", "0.01", "--max-det", "5", "--out", out, "--json")
        else:
            r = Workspace(tmp_path / "r.db").predict(signs, images, conf=0.01, max_det=5, out=out).as_dict()
        got[door] = (strip(r, out), json.loads((out / "predictions.json").read_text()))
    assert strip(got["cli"], tmp_path / "cli") == strip(got["api"], tmp_path / "api")
    assert got["cli"][0]["images"] == 8 and got["cli"][0]["conf"] == 0.01


def test_quantize_evaluate_and_bench_record_alike_through_either_door(tmp_path, signs, synth_data):
    """The INT8 artefacts, their scores and the deploy-eval rows of one run, through `deploy quantize|eval|bench` and
    through the Workspace: the same files and the same records."""
    got = {}
    for door in ("cli", "api"):
        db = tmp_path / door / "r.db"
        rid = fake_run(db, signs)
        if door == "cli":
            q = cli("deploy", "quantize", rid, "--data", synth_data, "--calib", "4", "--per-channel", "--registry", db, "--json")
            e = cli("deploy", "eval", q["int8"], "--data", synth_data, "--registry", db, "--json")
            b = cli("deploy", "bench", q["int8"], "--runs", "2", "--threads", "1", "--json")
            assert list(q) == QUANTIZE_JSON and list(e) == EVAL_JSON  # the keys, in the order, they had as dicts
        else:
            ws = Workspace(db)
            quantized = ws.quantize(rid, synth_data, calib=4, per_channel=True)
            scored = ws.evaluate(quantized.int8, synth_data)
            assert scored.kind == "int8" and scored.drop_pp is not None and scored.map50 == scored.as_dict()["map50"]
            q, e = quantized.as_dict(), scored.as_dict()  # what the CLI prints
            b = ws.bench(q["int8"], runs=2, threads=1)
        run = Registry(db, readonly=True).get_run(rid)
        arts = [(a.kind, a.meta) for a in run.artifacts if a.kind.startswith("onnx/")]
        evals = [(x.precision_kind, x.result) for x in Registry(db, readonly=True).deploy_evals(rid)]
        got[door] = strip({"quantize": q, "eval": e, "artefacts": arts, "evals": evals, "bench": sorted(b)}, tmp_path / door)
        got[door]["int8 sha256"] = hashlib.sha256(Path(q["int8"]).read_bytes()).hexdigest()
    api = got["api"]["quantize"]  # the CLI prints how many calibration images, the API returns their names
    api["calibration_count"] = len(api.pop("calibration_images"))
    got["cli"]["quantize"].pop("holdout_images", None), api.pop("holdout_images", None)
    timing = ("seconds", "time_s", "elapsed_s")
    for d in got.values():  # wall-clock figures differ between any two calls
        for key in ("quantize", "eval"):
            for t in timing:
                d[key].pop(t, None)
    for key in got["cli"]:
        assert got["cli"][key] == got["api"][key], (key, got["cli"][key], got["api"][key])
    assert got["cli"]["eval"]["kind"] == "int8" and "drop_pp" in got["cli"]["eval"]


def test_distill_takes_a_recipe_and_the_study_writes_its_reports_through_either_door(tmp_path, signs, synth_data, monkeypatch):
    """Issue 32: the CLI's distill took a recipe file, the API's could not; `study relu-gap` wrote its ko/en reports
    from the CLI only. The training itself is stubbed here (the stages have tests of their own): what each door
    hands the stage, and what the service writes after it, are compared."""
    import npuyolo.distill.run
    import npuyolo.report.render
    import npuyolo.study.relu_gap

    seen = []

    class Done:
        run_id = 1

    def distill(registry, teacher, student, data, recipe, **kw):
        seen.append((teacher, student, recipe.model_dump(), kw))
        return Done()

    def study(registry, data, **kw):
        seen.append(("study", kw.pop("on_member") is None, kw))
        return []

    def render(registry, name, out, lang):
        path = Path(out) / f"{name}.{lang}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lang)
        return path

    monkeypatch.setattr(npuyolo.distill.run, "distill", distill)
    monkeypatch.setattr(npuyolo.study.relu_gap, "relu_gap_study", study)
    monkeypatch.setattr(npuyolo.report.render, "render_study", render)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr0: 0.002\nbatch: 4\n")
    db = tmp_path / "r.db"
    fake_run(db, signs)
    cli("distill", "--teacher", "signs", "--student-variant", "L4-relu", "--data", synth_data, "--recipe", recipe,
        "--epochs", "2", "--gamma", "0.5", "--registry", db, "--json")
    Workspace(db).distill("signs", "L4-relu", synth_data, recipe=recipe, epochs=2, gamma=0.5, verbose=False)
    assert seen[0][2]["lr0"] == 0.002 and seen[0][2]["epochs"] == 2 and seen[0][3]["gamma"] == 0.5
    assert seen[0][:3] == seen[1][:3] and {k: v for k, v in seen[0][3].items() if k != "verbose"} == \
        {k: v for k, v in seen[1][3].items() if k != "verbose"}
    reports = {}
    for door in ("cli", "api"):
        out = tmp_path / f"study-{door}"
        if door == "cli":
            reports[door] = cli("study", "relu-gap", "--data", synth_data, "--seeds", "0,3", "-t", "hailo-8", "--out", out,
                                "--registry", db, "--json")["reports"]
        else:
            reports[door] = [str(p) for p in Workspace(db).study_relu_gap(synth_data, seeds=[0, 3], targets=["hailo-8"], out=out,
                                                                           verbose=False).reports]
        assert [Path(p).read_text() for p in reports[door]] == ["en", "ko"], door
    assert {k: v for k, v in seen[2][2].items() if k != "verbose"} == {k: v for k, v in seen[3][2].items() if k != "verbose"}
    assert seen[2][2]["seeds"] == [0, 3] and seen[2][2]["targets"] == ["hailo-8"]


class Stub:
    """A stage stood in for: each call's arguments kept (paths as text, other objects by their type and fields, a
    callback by the word 'callback'), a fixed answer given."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    @staticmethod
    def text(v):
        if isinstance(v, Path):
            return str(v)
        if callable(v) or isinstance(v, Registry):
            return type(v).__name__ if isinstance(v, Registry) else "callback"
        fields = {k: x for k, x in vars(v).items() if x is not None and not callable(x)} if hasattr(v, "__dict__") else {}
        return [type(v).__name__, fields]

    def __call__(self, *args, **kwargs):
        kwargs.pop("verbose", None)  # what is printed while it works: each door's own (quiet under --json)
        self.calls.append(json.loads(json.dumps([args, kwargs], default=self.text)))
        return self.answer


class Answer(dict):
    """A stage's record as the doors print it (`as_dict()`) or read it (attributes)."""

    def __getattr__(self, name):
        return self[name]

    def as_dict(self):
        return dict(self)


def test_every_other_operation_hands_its_stage_the_same_request_through_either_door(tmp_path, signs, synth_data, monkeypatch):
    """The operations too slow to run twice here (training, plans, bundles, QAT, MLflow) have tests of their own; this
    stands their stage in and checks that both doors hand it the same request (the services decide it, once)."""
    import npuyolo.deploy.bundle.service
    import npuyolo.deploy.plan
    import npuyolo.deploy.qat
    import npuyolo.prune.prune
    from npuyolo.deploy.int8.run import QuantizeResult
    from npuyolo.deploy.qat import QatResult
    from npuyolo.prune.prune import PruneResult
    import npuyolo.registry.mlflow_export
    import npuyolo.report.render
    import npuyolo.study.hybrid
    import npuyolo.train.series
    import npuyolo.train.trainer

    db = tmp_path / "r.db"
    rid = fake_run(db, signs)
    ws = Workspace(db)
    spec = tmp_path / "series.yaml"
    spec.write_text(f"name: s\ndata: {synth_data}\nvariants: [L4-relu]\nrecipe: {{epochs: 1}}\n")
    report = tmp_path / "report.md"
    report.write_text("#")
    quantized = QuantizeResult(run_id=rid, fp32="f.onnx", int8="q.onnx", calibration_images=["a.jpg"], holdout_images=[],
                               auto_float=[], calibration="minmax", method="minmax", percentile=None, calib=1,
                               per_channel=False, keep_float=[], float_tail=[], cle_pairs=0, bias_corrected=0,
                               ends=None, int16_nodes=[], sweep=[], holdout=0, imgsz=64, head="npu")
    pruned = PruneResult(run_id=rid, parent_run=rid, ratio=0.5, method="l1", finetune_epochs=2, before={},
                         pruned_before_finetune={}, after={}, ort_p50_ms={}, pruned_checkpoint="p.pt")
    cases = {  # stage to stand in, its answer, the CLI's words, the API's call
        "resume": ((npuyolo.train.trainer, "resume_run"), Answer(run_id=rid), ["train", "--resume", rid, "--from", "best"],
                   lambda: ws.resume(rid, "best")),
        "series run": ((npuyolo.train.series, "run_series"), [{"variant": "L4-relu"}], ["series", "run", spec, "--max-retries", "1"],
                       lambda: ws.series(spec)),
        "series rank": ((npuyolo.train.series, "rank_series"), [{"variant": "L4-relu"}], ["series", "rank", "s"], lambda: ws.rank("s")),
        "series plan": ((npuyolo.deploy.plan, "build_series_plan"), Answer(cells={}), ["series", "plan", "s", "-t", "edgetpu", "--calib", "9"],
                        lambda: ws.series_plan("s", ["edgetpu"], calib=9)),
        "series report": ((npuyolo.report.render, "render_series_all"), [report], ["series", "report", "s", "--format", "html", "-t", "edgetpu"],
                          lambda: ws.series_report("s", fmt="html", target="edgetpu")),
        "study report": ((npuyolo.report.render, "render_study"), report, ["study", "report", "st", "--lang", "ko"],
                         lambda: ws.study_report("st", "ko")),
        "prune": ((npuyolo.prune.prune, "prune_run"), pruned, ["prune", rid, "--ratio", "0.5", "--epochs", "2"],
                  lambda: ws.prune(rid, ratio=0.5, finetune_epochs=2)),
        "hybrid search": ((npuyolo.study.hybrid, "hybrid_search"), [], ["hybrid", "search", "--data", synth_data, "--candidate", "L4-hybrid:a",
                                                                        "--epochs", "3", "-t", "edgetpu"],
                          lambda: ws.hybrid_search(synth_data, candidates=["L4-hybrid:a"], budget=3, target="edgetpu")),
        "qat": ((npuyolo.deploy.qat, "qat_run"), QatResult(parent_run=rid, qat_run=rid, qat_name="q", quantized=quantized,
                                                           parent_name="signs", parent_weights=str(signs), epochs=2, lr0=0.001),
                ["deploy", "qat", rid, "--epochs", "2", "--per-tensor"], lambda: ws.qat(rid, epochs=2, per_channel=False)),
        "plan": ((npuyolo.deploy.plan, "build_plan"), Answer(targets={}), ["deploy", "plan", rid, "-t", "edgetpu", "-t", "hailo-8",
                                                                          "--data", synth_data, "--no-sweep", "--workers", "1"],
                 lambda: ws.plan(rid, ["edgetpu", "hailo-8"], synth_data, sweep=False, workers=1)),
        "bundle": ((npuyolo.deploy.bundle.service, "bundle_model"), Answer(folder="b"), ["deploy", "bundle", rid, "-t", "edgetpu", "--iou", "0.5"],
                   lambda: ws.bundle(rid, "edgetpu", iou=0.5)),
        "runs export": ((npuyolo.registry.mlflow_export, "export_runs"), [], ["runs", "export", "--mlflow", "sqlite:///m.db", "--run", rid],
                        lambda: ws.mlflow_export("sqlite:///m.db", [rid])),
    }
    monkeypatch.setattr(npuyolo.train.series, "has_replicates", lambda reg, name: False)
    for name, ((module, attr), answer, words, api) in cases.items():
        stub = Stub(answer)
        monkeypatch.setattr(module, attr, stub)
        registry = ["--registry", db] if words[0] != "runs" else []
        if words[0] == "runs":
            words = ["runs", "--registry", db, *words[1:]]
        result = CliRunner().invoke(app, [str(w) for w in [*words, *registry, *(["--json"] if "report" not in words else [])]])
        assert result.exit_code == 0, (name, result.output, result.exception)
        api()
        assert len(stub.calls) == 2 and stub.calls[0] == stub.calls[1], (name, stub.calls)
