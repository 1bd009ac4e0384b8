"""Typed seams (issue 32, item 5): a run's status is a `RunStatus`, never a bare string; no error raised below the CLI
names a `--flag` (the CLI turns a parameter's name into its flag, see `cli.common.as_flags`)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import npuyolo
from npuyolo.registry.db import DamagedRowError, Registry
from npuyolo.registry.schema import RunStatus

SRC = Path(npuyolo.__file__).resolve().parent
STATUSES = frozenset(s.value for s in RunStatus)
FLAG = re.compile(r"(?<![\w-])--[a-z]")
# a whole command line the user can run (`npuyolo train --resume 3`) is a suggestion, not a flag of the call that failed
COMMAND = re.compile(r"`npuyolo [^`]*`")
PENDING_STATUS: set[tuple[str, str]] = set()  # (module prefix, snippet) allowed while another change lands; none now


def modules(*, cli: bool = True) -> list[tuple[str, ast.Module, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if cli or not rel.startswith("cli/"):
            text = path.read_text(encoding="utf-8")
            found.append((rel, ast.parse(text), text))
    return found


def text_of(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with `{}` where each value goes (so a quoted span is seen whole)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def test_no_error_below_the_cli_names_a_flag():
    """A Python API user was told to pass `--imgsz`, `--registry`, `--name`: flags of a command they never ran."""
    found = []
    for rel, tree, _ in modules(cli=False):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            inner = {id(v) for n in ast.walk(node.exc) if isinstance(n, ast.JoinedStr) for v in n.values}
            for part in (n for n in ast.walk(node.exc) if id(n) not in inner):  # an f-string is read whole
                said = text_of(part)
                if said is not None and FLAG.search(COMMAND.sub("", said)):
                    found.append(f"{rel}:{part.lineno}: {said!r}")
    assert not found, "errors below the CLI name a --flag (name the parameter, param=... or `name`):\n" + "\n".join(found)


def is_status(node: ast.AST) -> bool:
    """`x.status`, `x["status"]`, `x.get("status")` or a name `status`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "status"
    if isinstance(node, ast.Name):
        return node.id == "status"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "status"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        return isinstance(node.args[0], ast.Constant) and node.args[0].value == "status"
    return False


def bare(node: ast.AST | None) -> bool:
    """A status spelled as a string literal ("finished"), or a tuple/list/set holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in STATUSES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(bare(e) for e in node.elts)
    if isinstance(node, ast.IfExp):
        return bare(node.body) or bare(node.orelse)
    return False


def bare_status_uses(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(is_status(o) for o in operands) and any(bare(o) for o in operands):
                yield node
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name == "set_status" and any(bare(a) for a in node.args):
                yield node
            if any(k.arg == "status" and bare(k.value) for k in node.keywords):
                yield node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            flat = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            if any(is_status(t) and bare(v) for t, v in zip(flat, values)) or (
                    len(flat) == 1 and is_status(flat[0]) and bare(node.value)):
                yield node


def test_no_bare_status_strings():
    """A run's status is compared with, set to and passed as a `RunStatus` member, never a string literal."""
    found = []
    for rel, tree, text in modules():
        for node in bare_status_uses(tree):
            segment = ast.get_source_segment(text, node) or ""
            if not any(rel.startswith(f) and snippet in segment for f, snippet in PENDING_STATUS):
                found.append(f"{rel}:{node.lineno}: {segment.splitlines()[0] if segment else ''}")
    assert not found, "bare status strings (use RunStatus):\n" + "\n".join(found)


SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
QUOTED_STATUS = re.compile("'(" + "|".join(sorted(STATUSES)) + ")'")


def sql_status_literals(rel: str, tree: ast.Module) -> list[str]:
    """SQL text that spells a status ('running'): the query takes the RunStatus member as a parameter instead. The
    migrations that created and widened the CHECK constraint keep their text (they are the schema's history)."""
    if rel == "registry/schema.py":
        return []
    return [f"{rel}:{node.lineno}: {node.value[:80]!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
            and QUOTED_STATUS.search(node.value)]


def test_no_status_spelled_in_sql():
    found = [hit for rel, tree, _ in modules() for hit in sql_status_literals(rel, tree)]
    assert not found, "statuses spelled in SQL (pass RunStatus.X.value as a parameter):\n" + "\n".join(found)
    assert sql_status_literals("registry/db.py", ast.parse('q = "SELECT id FROM runs WHERE status = \'running\'"'))


def test_the_scan_sees_what_it_looks_for():
    """The two scans above find what they forbid (a scan that matches nothing would pass forever)."""
    tree = ast.parse('if run.status == "finished": pass\nregistry.set_status(1, "failed")\nstate.status = "running"\n'
                     'x = r["status"] in ("finished", "stopped")\nMember(status="interrupted")\n'
                     'ok = run.status == RunStatus.FINISHED and row.get("status") == "derived"\n')
    assert len(list(bare_status_uses(tree))) == 5
    said = text_of(ast.parse('f"drop --imgsz or pass {size}"', mode="eval").body)
    assert FLAG.search(COMMAND.sub("", said))
    assert not FLAG.search(COMMAND.sub("", "resume it with `npuyolo train --resume {}`"))


def test_rows_carry_a_run_status_stored_as_its_text(tmp_path):
    reg = Registry(tmp_path / "r.db")
    run_id = reg.create_run(name="a", variant="L4-relu", recipe={"epochs": 1}, data_path="d.yaml", data_hash="h",
                            class_names=["x"], weights_source=None, device="cpu", versions={})
    reg.upsert_series("s", {"variants": ["L4-relu"]})
    reg.set_series_member("s", "L4-relu", run_id)
    reg.set_status(run_id, RunStatus.FINISHED)
    run = reg.get_run(run_id)
    assert type(run.status) is RunStatus and run.status is RunStatus.FINISHED
    summary, = reg.runs()
    assert type(summary.status) is RunStatus and summary.status is RunStatus.FINISHED
    member, = reg.series("s").members
    assert type(member.status) is RunStatus and member.status is RunStatus.FINISHED
    assert reg.conn.execute("SELECT status, typeof(status) FROM runs").fetchone()[:] == ("finished", "text")
    assert json.loads(json.dumps(run.as_dict()))["status"] == "finished" and f"{run.status}" == "finished"
    assert json.loads(json.dumps(summary.as_dict()))["status"] == "finished"


def test_set_status_refuses_an_unknown_status(tmp_path):
    reg = Registry(tmp_path / "r.db")
    run_id = reg.create_run(name="a", variant="L4-relu", recipe={"epochs": 1}, data_path="d.yaml", data_hash="h",
                            class_names=["x"], weights_source=None, device="cpu", versions={})
    with pytest.raises(ValueError):
        reg.set_status(run_id, "done")


def test_the_api_says_the_parameter_and_the_cli_its_flag(tmp_path):
    """What used to say `--imgsz`, `--seed`, `--force`, `--cpus-per-member`, `--registry` to a Python API user."""
    from npuyolo.cli.common import as_flags
    from npuyolo.compilers.calibration import calibration_arrays
    from npuyolo.data.check import DataError
    from npuyolo.data.synth import check_synth_args
    from npuyolo.errors import NpuyoloError
    from npuyolo.train.ray_executor import RayOptions

    with pytest.raises(DataError) as e:
        check_synth_args(tmp_path / "d", imgsz=16, seed=0)
    assert str(e.value) == "imgsz must be at least 32 px to draw signs, got 16"
    assert as_flags(e.value, ["imgsz", "seed", "force"]) == "--imgsz must be at least 32 px to draw signs, got 16"
    with pytest.raises(DataError) as e:
        check_synth_args(tmp_path / "d", imgsz=64, seed=-1)
    assert as_flags(e.value) == "--seed must be 0 or more, got -1"
    (tmp_path / "d").mkdir(exist_ok=True)
    (tmp_path / "d" / "x.txt").write_text("x")
    check_synth_args(tmp_path / "e", imgsz=64, seed=0)  # a set npuyolo wrote: its marker is there
    (tmp_path / "e" / "images").mkdir()
    with pytest.raises(DataError) as e:
        check_synth_args(tmp_path / "e", imgsz=64, seed=0)
    assert "`force` to empty it" in str(e.value) and "--force to empty it" in as_flags(e.value, ["force"])

    with pytest.raises(NpuyoloError) as e:
        RayOptions(cpus_per_member=0)
    assert str(e.value) == "cpus_per_member must be more than 0, got 0" and as_flags(e.value).startswith("--cpus-per-member must")
    with pytest.raises(NpuyoloError) as e:
        RayOptions(gpus_per_member=-1)
    assert as_flags(e.value) == "--gpus-per-member must be 0 or more, got -1"

    with pytest.raises(NpuyoloError) as e:
        Registry(tmp_path)  # a folder
    assert "; `registry` names the SQLite file" in str(e.value) and "; --registry names" in as_flags(e.value, ["registry"])
    with pytest.raises(NpuyoloError) as e:
        Registry(tmp_path / "none.db", readonly=True)
    assert str(e.value).endswith("(a mistyped `registry`?)") and as_flags(e.value, ["registry"]).endswith("(a mistyped --registry?)")

    _, what = calibration_arrays(None, 64, count=1)  # recorded with the compile: no flag of a command never run
    assert "--" not in what and "no data set given" in what


# what `deploy quantize --json` and `deploy eval --json` printed before they returned typed records (issue 32): the same
# keys in the same order (tests/test_front_doors.py checks the commands' own output against these)
QUANTIZE_JSON = ["run_id", "fp32", "int8", "auto_float", "calibration", "method", "percentile", "calib", "per_channel",
                 "keep_float", "float_tail", "cle_pairs", "bias_corrected", "ends", "int16_nodes", "sweep", "holdout",
                 "calibration_count"]
EVAL_JSON = ["kind", "run_id", "artefact", "head", "precision", "recall", "map50", "map50_95", "images", "imgsz",
             "per_class", "data_fingerprint", "pt", "fp32", "drop_pp", "drop_pp_per_class", "drop_interval"]
SCORES = {"precision": 0.5, "recall": 0.4, "map50": 0.3, "map50_95": 0.2, "images": 8, "imgsz": 64,
          "per_class": {"stop": {"precision": 0.5, "recall": 0.4, "map50": 0.3, "map50_95": 0.2}}}


def quantize_result(**changes):
    from npuyolo.deploy.int8.run import QuantizeResult

    return QuantizeResult(**{"run_id": 1, "fp32": "f.onnx", "int8": "q.onnx", "calibration_images": ["a.jpg", "b.jpg"],
                             "holdout_images": [], "auto_float": [], "calibration": "minmax", "method": "minmax",
                             "percentile": None, "calib": 2, "per_channel": True, "keep_float": [], "float_tail": [],
                             "cle_pairs": 0, "bias_corrected": 0, "ends": None, "int16_nodes": [], "sweep": [], "holdout": 0,
                             "imgsz": 64, "head": "npu"} | changes)


def test_typed_results_print_the_json_they_always_printed():
    """Quantize, QAT, eval (an ONNX file and a compiled model) and prune return frozen records; `as_dict()` is what the
    CLI's --json printed when they returned dicts, key for key."""
    import dataclasses

    from npuyolo.deploy.eval.evaluate import EvalResult, OnnxScore
    from npuyolo.deploy.eval.vendor import CompiledScore
    from npuyolo.deploy.qat import QatResult
    from npuyolo.prune.prune import PruneResult

    q = quantize_result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.int8 = "other.onnx"
    printed = {k: v for k, v in q.as_dict().items() if k not in ("calibration_images", "holdout_images")} | {"calibration_count": 2}
    assert list(printed) == QUANTIZE_JSON  # cli.tables.print_quantized's --json, from as_dict()
    kinds = [(kind, meta) for kind, _, meta in q.artefacts("edgetpu")]
    assert kinds == [("onnx/fp32", {"imgsz": 64, "head": "npu"}),
                     ("onnx/int8", {k: v for k, v in printed.items() if k not in ("run_id", "fp32", "int8", "calibration_count")}
                      | {"int8": "q.onnx", "calibration_count": 2, "target": "edgetpu"})]
    qat = QatResult(parent_run=1, qat_run=2, qat_name="a-qat", quantized=quantize_result(run_id=2), parent_name="a",
                    parent_weights="best.pt", epochs=2, lr0=0.001)
    assert list(qat.as_dict()) == ["parent_run", "qat_run", "qat_name", *quantize_result().as_dict()]
    assert qat.parent_artefact() == ("qat/parent", Path("best.pt"), {"parent_run": 1, "parent_name": "a", "epochs": 2,
                                                                     "lr0": 0.001, "fake_quant": "nvidia-modelopt INT8 (Ultralytics quantize=8)"})

    fp32 = SCORES | {"artefact": "f.onnx", "head": "npu", "data_fingerprint": "abc"}
    e = EvalResult(kind="int8", run_id=1, artefact="q.onnx", head="npu", **SCORES, data_fingerprint="abc", recorded=True,
                   pt=None, fp32=fp32, drop_pp={"map50": 0.0}, drop_pp_per_class={"stop": 0.0}, drop_interval={})
    assert list(e.as_dict()) == EVAL_JSON and e.as_dict()["pt"] is None  # a run without best.pt on disk: "pt": null
    unrecorded = EvalResult(kind="fp32", run_id=None, artefact="f.onnx", head="npu", **SCORES, data_fingerprint="abc")
    assert list(unrecorded.as_dict()) == [k for k in EVAL_JSON[:12]]  # no run: no pt, no FP32 twin
    onnx_score = OnnxScore(artefact="f.onnx", head="npu", **SCORES)  # the deploy-eval row of an ONNX file starts with it
    assert json.dumps(onnx_score.as_dict()) == json.dumps({"artefact": "f.onnx", "head": "npu", **SCORES})
    assert onnx_score.as_dict() | {"data_fingerprint": "abc"} == unrecorded.scores() | {"artefact": "f.onnx", "head": "npu"}

    score = CompiledScore(artefact="m.rknn", kind="rknn", runtime="rknn-toolkit2 simulator", onnx="f.onnx", contract="NHWC uint8",
                          cosine=[0.99, None], result=SCORES | {"data_fingerprint": "abc"}, fp32=fp32, seconds=3.0)
    before = {"run_id": 1, **score.as_dict(), "drop_interval": {"map50": {}}}  # what the eval service returned
    typed = EvalResult(run_id=1, **score.as_dict(), drop_interval={"map50": {}}, recorded=True)
    assert typed.compiled and json.dumps(typed.as_dict()) == json.dumps(before)

    report = {"parent_run": 1, "ratio": 0.3, "method": "l1", "finetune_epochs": 2, "before": {}, "pruned_before_finetune": {},
              "after": {}, "ort_p50_ms": {"parent": 2.0, "pruned": 1.0}, "pruned_checkpoint": "p.pt"}
    pruned = PruneResult(run_id=2, **report)
    assert json.dumps(pruned.as_dict()) == json.dumps({"run_id": 2, **report}) and pruned.report() == report
    assert pruned.artefact() == ("prune/report", Path("p.pt"), report)


def test_the_run_row_carries_a_typed_recipe_read_as_recorded(tmp_path):
    """`run.recipe` is a `RunRecipe`: its settings as fields, parsed when the row is read. An old row loads as it was
    recorded: a setting it lacks is None (not today's default), a setting npuyolo no longer knows is kept, and
    `as_dict()` gives back the stored JSON (runs show --json, run.json, MLflow)."""
    from npuyolo.registry.schema import RunRecipe
    from npuyolo.train.recipe import Recipe

    assert {f for f in RunRecipe.__dataclass_fields__ if f != "stored"} == set(Recipe.model_fields)  # one field each
    reg = Registry(tmp_path / "r.db")
    today = Recipe.load(epochs=3, imgsz=64, workers=0).model_dump()
    new = reg.create_run(name="new", variant="L4-relu", recipe=today, data_path="d.yaml", data_hash="h",
                         class_names=["x"], weights_source=None, device="cpu", versions={})
    old_recipe = {"epochs": 5, "imgsz": 320, "lr0": 0.01, "seed": 2, "mixup_legacy": 0.5}  # no threads, trackers...
    old = reg.create_run(name="old", variant="L4-relu", recipe=old_recipe, data_path="d.yaml", data_hash="h",
                         class_names=["x"], weights_source=None, device="cpu", versions={})
    run = reg.get_run(new)
    assert type(run.recipe) is RunRecipe and run.recipe.imgsz == 64 and run.recipe.epochs == 3 and run.recipe.workers == 0
    assert run.recipe.as_dict() == today and Recipe(**run.recipe.as_dict()) == Recipe(**today)
    legacy = reg.get_run(old).recipe
    assert (legacy.epochs, legacy.imgsz, legacy.lr0, legacy.seed) == (5, 320, 0.01, 2)
    assert legacy.threads is None and legacy.trackers is None and "threads" not in legacy and "epochs" in legacy
    assert legacy.unknown() == {"mixup_legacy": 0.5} and legacy.as_dict() == old_recipe
    assert json.loads(json.dumps(reg.get_run(old).as_dict()))["recipe"] == old_recipe
    legacy.as_dict()["epochs"] = 99  # a copy: the row's recipe does not change under its reader
    assert reg.get_run(old).recipe.epochs == 5 and legacy.epochs == 5
    reg.conn.execute("UPDATE runs SET recipe_json = ? WHERE id = ?", (json.dumps({"epochs": "five"}), old))
    reg.conn.commit()
    with pytest.raises(DamagedRowError, match="column recipe_json is damaged"):  # a setting a report reads, mistyped
        reg.get_run(old)
