"""`npuyolo compare` / `Workspace.compare`: models scored once on one data set, intervals, verdicts, both doors."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from npuyolo.api import Workspace
from npuyolo.cli import app
from npuyolo.deploy.export import export_onnx
from npuyolo.errors import NpuyoloError
from npuyolo.stats.compare import Verdict
from npuyolo.variants.build import build_model
from npuyolo.variants.checkpoint import load_weights

from .conftest import perturbed

runner = CliRunner()
NAMES = ["speed_limit", "warning", "stop", "mandatory", "yield", "no_entry"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different detectors (.pt), a byte-for-byte copy of the first, and the first's FP32 ONNX export."""
    root = tmp_path_factory.mktemp("compare-models")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model = perturbed(build_model("L4-relu", nc=6, names=NAMES), scale=0.1, seed=seed, class_bias=-3.0)
        model.args = {"imgsz": 64}
        out[name] = root / name / "best.pt"
        out[name].parent.mkdir()
        torch.save({"model": None, "ema": copy.deepcopy(model).half(), "epoch": -1, "train_args": {"imgsz": 64}}, out[name])
    out["a_copy"] = root / "copy" / "best.pt"
    out["a_copy"].parent.mkdir()
    shutil.copyfile(out["a"], out["a_copy"])
    out["a_onnx"] = export_onnx(load_weights(out["a"]), root / "a.onnx", imgsz=64, head="npu")
    return out


def test_identical_models_are_tied_by_exactly_zero_through_the_api(models, synth_data, tmp_path):
    ws = Workspace(tmp_path / "reg" / "npuyolo.db")
    result = ws.compare([models["a"], models["a_copy"]], synth_data, bootstrap=200)
    assert [m.label for m in result.models] == ["a/best.pt", "copy/best.pt"]
    for pair in result.comparison.pairs:
        assert pair.diff.value == pair.diff.low == pair.diff.high == 0.0 and pair.verdict is Verdict.TIED
    assert result.plot is not None and result.plot.is_file() and result.plot.read_bytes()[:4] == b"\x89PNG"
    # the statistics were kept: the same comparison again runs no model
    again = ws.compare([models["a"], models["a_copy"]], synth_data, bootstrap=200, draw=False)
    assert all(m.cached for m in again.models) and again.comparison == result.comparison and again.plot is None


def test_cli_and_api_give_the_same_comparison(models, synth_data, tmp_path, monkeypatch):
    db = tmp_path / "reg" / "npuyolo.db"
    monkeypatch.chdir(tmp_path)
    refs = [str(models["a"]), str(models["b"]), str(models["a_onnx"])]
    res = runner.invoke(app, ["compare", *refs, "--data", str(synth_data), "--bootstrap", "150", "--seed", "3",
                              "--json", "--registry", str(db)])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    api = Workspace(db).compare(refs, synth_data, bootstrap=150, seed=3).as_dict()
    assert got["models"] == json.loads(json.dumps(api["models"]))
    assert [(p["a"], p["b"], p["metric"], p["verdict"]) for p in got["pairs"]] == \
           [(p["a"], p["b"], p["metric"], p["verdict"]) for p in api["pairs"]]
    assert len(got["pairs"]) == 3 * 4 and got["bootstrap"] == 150 and got["images"] == 8
    # .pt and its ONNX export go through one pipeline: their mAP50 agree closely
    a, onnx = got["models"][0], got["models"][2]
    assert abs(a["map50"]["value"] - onnx["map50"]["value"]) < 0.02
    for m in got["models"]:
        assert m["map50"]["low"] <= m["map50"]["value"] <= m["map50"]["high"]
    table = runner.invoke(app, ["compare", *refs[:2], "--data", str(synth_data), "--bootstrap", "150", "--registry", str(db)])
    assert table.exit_code == 0 and ("tied within noise" in table.stdout or "ahead" in table.stdout), table.output
    assert "forest plot:" in table.stdout
    assert not (tmp_path / "runs" / "detect").exists()  # the validator leaves no ./runs/detect/val-N behind


@pytest.mark.parametrize("args, message", [
    (["MISSING.pt"], "not found"),
    (["SAME", "SAME"], "named twice"),
    (["L4-relu", "L4-leaky"], "untrained variant"),
])
def test_bad_models_are_one_line(models, synth_data, tmp_path, args, message):
    args = [str(models["a"]) if a == "SAME" else str(tmp_path / a) if a.endswith(".pt") else a for a in args]
    res = runner.invoke(app, ["compare", *args, str(models["b"]), "--data", str(synth_data),
                              "--registry", str(tmp_path / "r.db")])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_models_of_another_data_set_are_one_clear_error(models, synth_data, tmp_path):
    from npuyolo.deploy.eval.compare import model_stats
    from npuyolo.registry.db import Registry
    from npuyolo.stats.compare import compare_stats
    from npuyolo.stats.matched import StatsError

    from npuyolo.data.synth import synthesize

    other = synthesize(tmp_path / "other", n_train=4, n_val=5, imgsz=96, seed=3)
    reg = Registry(tmp_path / "reg.db")
    a, _ = model_stats(reg, str(models["a"]), synth_data)
    b, _ = model_stats(reg, str(models["b"]), other)
    with pytest.raises(StatsError, match="same images"):
        compare_stats([a, b], ["a", "b"], n=100)


def test_api_checks_its_arguments(models, synth_data, tmp_path):
    ws = Workspace(tmp_path / "reg.db")
    with pytest.raises(NpuyoloError, match="models must be a list"):
        ws.compare(str(models["a"]), synth_data)
    with pytest.raises(NpuyoloError, match="bootstrap"):
        ws.compare([models["a"], models["b"]], synth_data, bootstrap=5)
    with pytest.raises(NpuyoloError, match="bootstrap must be an int"):
        ws.compare([models["a"], models["b"]], synth_data, bootstrap="1000")


def copy_data(src_yaml, dst):
    shutil.copytree(src_yaml.parent, dst)
    yaml_path = dst / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(str(src_yaml.parent.resolve()), str(dst.resolve())))
    return yaml_path


def test_kept_statistics_are_not_reused_once_an_image_or_a_label_changes(models, synth_data, tmp_path):
    """The cache key is the content of every val image and label: an image rewritten with other pixels of the same
    byte size, or an emptied label, is new data and is scored again (both were read back stale before)."""
    from PIL import Image

    data = copy_data(synth_data, tmp_path / "d")
    for jpg in sorted((data.parent / "images" / "val").iterdir()):  # BMP: other pixels, the same byte size
        Image.open(jpg).convert("RGB").save(jpg.with_suffix(".bmp"))
        jpg.unlink()
    ws = Workspace(tmp_path / "reg" / "npuyolo.db")
    refs = [models["a"], models["b"]]
    assert not any(m.cached for m in ws.compare(refs, data, bootstrap=100, draw=False).models)
    assert all(m.cached for m in ws.compare(refs, data, bootstrap=100, draw=False).models)
    first, second = sorted((data.parent / "images" / "val").iterdir())[:2]
    size = first.stat().st_size
    Image.open(second).save(first)  # another photo's pixels under this name
    assert first.stat().st_size == size
    assert not any(m.cached for m in ws.compare(refs, data, bootstrap=100, draw=False).models)
    label = sorted((data.parent / "labels" / "val").glob("*.txt"))[0]
    label.write_text("")
    assert not any(m.cached for m in ws.compare(refs, data, bootstrap=100, draw=False).models)


def test_a_link_or_a_folder_at_the_cache_place_is_neither_read_nor_fatal(models, synth_data, tmp_path):
    ws = Workspace(tmp_path / "reg" / "npuyolo.db")
    first = ws.compare([models["a"], models["b"]], synth_data, bootstrap=100, draw=False)
    a_file, b_file = (m.stats_file for m in first.models)
    b_file.unlink()
    b_file.symlink_to(a_file)  # another model's statistics behind a link: must not be read as b's
    a_file.unlink()
    a_file.mkdir()  # a folder where a's statistics go: nothing kept, the answer still comes
    again = ws.compare([models["a"], models["b"]], synth_data, bootstrap=100, draw=False)
    assert not any(m.cached for m in again.models) and again.comparison == first.comparison


@pytest.mark.parametrize("case, message", [
    ("one", "two or more models"),
    ("same_file", "name the same file"),
    ("tiny", "too few for an interval"),
    ("plot_dir", "not a regular file"),
    ("plot_text", "not a PNG"),
    ("plot_pdf", "must be a .png"),
])
def test_compare_refuses_what_it_cannot_answer_in_one_line(models, synth_data, tmp_path, monkeypatch, case, message):
    monkeypatch.chdir(tmp_path)
    a, b = str(models["a"]), str(models["b"])
    data, extra = synth_data, []
    if case == "one":
        args = [a]
    elif case == "same_file":
        (tmp_path / "link.pt").symlink_to(models["a"])
        args = [a, str(tmp_path / "link.pt")]
    elif case == "tiny":
        data = copy_data(synth_data, tmp_path / "tiny")
        for img in sorted((data.parent / "images" / "val").iterdir())[4:]:
            img.unlink()
        args = [a, b]
    else:
        args = [a, b]
        target = {"plot_dir": tmp_path / "adir.png", "plot_text": tmp_path / "notes.png", "plot_pdf": tmp_path / "f.pdf"}[case]
        if case == "plot_dir":
            target.mkdir()
        elif case == "plot_text":
            target.write_text("my notes")
        extra = ["--plot", str(target)]
    res = runner.invoke(app, ["compare", *args, "--data", str(data), "--bootstrap", "100", *extra,
                              "--registry", str(tmp_path / "r" / "npuyolo.db")])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    if case == "plot_text":
        assert (tmp_path / "notes.png").read_text() == "my notes"  # never overwritten


def test_seeds_of_a_series_must_be_whole_numbers(tmp_path, synth_data):
    import yaml

    from npuyolo.train.recipe import RecipeError
    from npuyolo.train.series import SeriesSpec

    spec = tmp_path / "s.yaml"
    for seeds in ([True], [0, 0], [-1]):
        spec.write_text(yaml.safe_dump({"name": "s", "data": str(synth_data), "variants": ["L4-relu"], "seeds": seeds}))
        with pytest.raises(RecipeError):
            SeriesSpec.load(spec)


# ------------------------------------------------------------------------------------ a read-only registry (review)
def finished_runs(db, weights: dict, names=NAMES) -> Path:
    """Finished runs in the registry `db`, one per name in `weights`, each with that file as its best.pt, recorded as
    trained for one epoch at 64 px on data of the classes `names`."""
    from npuyolo.registry.db import Registry
    from npuyolo.train.recipe import Recipe

    reg = Registry(db)
    for name, pt in weights.items():
        rid = reg.create_run(name=name, variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=64).model_dump(),
                             data_path="/data/d.yaml", data_hash="h", class_names=list(names), weights_source=None,
                             device="cpu", versions={})
        best = Path(reg.get_run(rid).save_dir) / "weights" / "best.pt"
        best.parent.mkdir(parents=True)
        shutil.copyfile(pt, best)
        reg.add_artifact(rid, "weights/best", best)
        reg.set_status(rid, "finished")
    reg.close()
    return db


def unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` run so that file modes bind: as root (where chmod stops nothing), without the capabilities that
    override them."""
    if os.geteuid() != 0:
        return cmd
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    if shutil.which("setpriv") is None or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
        pytest.skip("root, and its file-mode override cannot be dropped here")
    return [*drop, *cmd]


def tree(folder: Path) -> dict:
    return {p: p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


API = ("import json, sys; from npuyolo.api import Workspace; r = Workspace(sys.argv[1]).compare(sys.argv[2:4], sys.argv[4], "
       "bootstrap=100); print(r.note or '', file=sys.stderr); print(json.dumps(r.as_dict()))")


@pytest.mark.parametrize("door, mode", [("cli", "file"), ("cli", "folder"), ("api", "folder")])
def test_a_read_only_registry_still_compares_runs_and_says_once_that_nothing_is_kept(models, synth_data, tmp_path, door, mode):
    """Seen as a user (not root): a registry whose folder cannot be written could not be opened for compare ('not an
    npuyolo registry (attempt to write a readonly database)'); compare only reads the registry, so it now answers,
    writes nothing there and says so in one line. A registry file of mode 0444 in a writable folder also answers."""
    db = finished_runs(tmp_path / "reg" / "npuyolo.db", {"a": models["a"], "b": models["b"]})
    if mode == "file":
        db.chmod(0o444)
    folders = [p for p in [db.parent, *db.parent.rglob("*")] if p.is_dir()] if mode == "folder" else []
    for folder in folders:
        folder.chmod(0o555)
    before = tree(db.parent)
    if door == "cli":
        cmd = [sys.executable, "-c", "from npuyolo.cli import app; app()", "compare", "a", "b", "--data", str(synth_data),
               "--bootstrap", "100", "--json", "--registry", str(db)]
    else:
        cmd = [sys.executable, "-c", API, str(db), "a", "b", str(synth_data)]
    try:
        res = subprocess.run(unprivileged(cmd), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    finally:
        for folder in folders:
            folder.chmod(0o755)
        db.chmod(0o644)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout if door == "cli" else res.stdout.strip().splitlines()[-1])  # the API lets Ultralytics print
    assert [m["label"] for m in got["models"]] == ["a", "b"] and got["bootstrap"] == 100
    said = [line for line in res.stderr.splitlines() if "not kept" in line]
    assert len(said) <= 1, res.stderr
    if mode == "folder":
        assert len(said) == 1 and "read-only" in said[0] and "--" not in said[0], res.stderr
        assert got["note"] == said[0].removeprefix("note: ")
        assert not any(m["cached"] for m in got["sources"]) and got["plot"] is None
        assert tree(db.parent) == before  # nothing written


def test_a_registry_opened_read_only_reads_kept_statistics_and_writes_nothing(models, synth_data, tmp_path):
    """`compare` given a registry opened read-only (as read commands open it): the runs' kept statistics are read
    back; where there are none, the models are scored and nothing is written under the registry's folder (before:
    each run's stats folder and the data check's cache were created there, which a read-only folder refuses)."""
    from npuyolo.registry.db import Registry
    from npuyolo.services import compare

    db = finished_runs(tmp_path / "reg" / "npuyolo.db", {"a": models["a"], "b": models["b"]})
    before = tree(db.parent)
    fresh = compare(Registry(db, readonly=True), ["a", "b"], synth_data, bootstrap=100)
    assert tree(db.parent) == before
    assert not any(m.cached for m in fresh.models) and fresh.plot is None
    assert fresh.note.count("not kept") == 1 and "read-only" in fresh.note and "\n" not in fresh.note and "--" not in fresh.note
    kept = Workspace(db).compare(["a", "b"], synth_data, bootstrap=100, draw=False)  # writable: kept beside each run
    assert not any(m.cached for m in kept.models) and kept.note is None
    before = tree(db.parent)
    again = compare(Registry(db, readonly=True), ["a", "b"], synth_data, bootstrap=100)
    assert all(m.cached for m in again.models) and again.comparison == fresh.comparison == kept.comparison
    assert tree(db.parent) == before


def test_statistics_that_cannot_be_kept_are_said_once(models, synth_data, tmp_path):
    """A writable registry whose stats folder cannot be made (a file holds its name): the answer comes, and one line
    says that the statistics were not kept (before, nothing was said)."""
    db = tmp_path / "reg" / "npuyolo.db"
    Workspace(db).compare([models["a"], models["b"]], synth_data, bootstrap=100, draw=False)
    shutil.rmtree(tmp_path / "reg" / "stats")
    (tmp_path / "reg" / "stats").write_text("not a folder")
    res = runner.invoke(app, ["compare", str(models["a"]), str(models["b"]), "--data", str(synth_data), "--bootstrap", "100",
                              "--registry", str(db)])
    assert res.exit_code == 0 and "tied within noise" in res.output, res.output
    said = [line for line in res.output.splitlines() if "not kept" in line]
    assert len(said) == 1 and "--" not in said[0], res.output
    assert (tmp_path / "reg" / "stats").read_text() == "not a folder"


# ------------------------------------------------------------------------------------ classes checked first (review)
@pytest.fixture(scope="module")
def other_classes(tmp_path_factory):
    """Detectors of other classes: two classes (stop, yield), and six classes named otherwise than the data set's."""
    root = tmp_path_factory.mktemp("compare-other")
    out = {}
    for name, names in (("two", ["stop", "yield"]), ("renamed", [f"sign_{i}" for i in range(6)])):
        torch.manual_seed(2)
        model = perturbed(build_model("L4-relu", nc=len(names), names=names), scale=0.1, seed=2, class_bias=-3.0)
        out[name] = root / name / "best.pt"
        out[name].parent.mkdir()
        torch.save({"model": None, "ema": copy.deepcopy(model).half(), "epoch": -1, "train_args": {"imgsz": 64}}, out[name])
    return out


@pytest.mark.parametrize("first, second, shown", [
    ("a", "two", ["speed_limit, warning", "stop, yield"]),
    ("two", "a", ["speed_limit, warning", "stop, yield"]),
    ("a_onnx", "renamed", ["speed_limit, warning", "sign_0, sign_1"]),
    ("run_two", "a", ["speed_limit, warning", "stop, yield"]),
    ("renamed", "data", ["sign_0, sign_1", "sign_0, warning"]),  # both models alike, the data set's classes not
])
def test_a_class_mismatch_is_refused_before_any_model_runs(models, other_classes, synth_data, tmp_path, monkeypatch,
                                                           first, second, shown):
    """Before: found when the second model was scored (another count) or only once every model was scored (other
    names, the same count), minutes in on a real data set; a data set of other names was not refused at all."""
    import npuyolo.deploy.eval.compare as compare_module

    db = finished_runs(tmp_path / "reg" / "npuyolo.db", {"run_two": other_classes["two"]}, names=["stop", "yield"])
    refs = {**{k: str(v) for k, v in {**models, **other_classes}.items()}, "run_two": "run_two"}
    data = synth_data
    if second == "data":
        model_refs = [refs["renamed"], str(tmp_path / "renamed2.pt")]
        shutil.copyfile(other_classes["renamed"], model_refs[1])
        data = copy_data(synth_data, tmp_path / "d")
        data.write_text(data.read_text().replace("speed_limit", "sign_0"))  # six classes, the first alike
    else:
        model_refs = [refs[first], refs[second]]

    def scored(*a, **k):
        raise AssertionError("a model was scored before the classes were compared")

    for name in ("validate_matched", "evaluate_compiled", "torch_predictor", "onnx_predictor"):
        monkeypatch.setattr(compare_module, name, scored)
    with pytest.raises(NpuyoloError) as refused:
        Workspace(db).compare(model_refs, data, bootstrap=100)
    message = str(refused.value)
    assert "\n" not in message and "--" not in message and len(message) < 400, message
    assert "class" in message and all(s in message for s in shown), message
    monkeypatch.undo()
    res = runner.invoke(app, ["compare", *model_refs, "--data", str(data), "--bootstrap", "100", "--registry", str(db)])
    assert res.exit_code == 2 and "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output
    assert res.output.strip() == f"error: {message}"
