"""Replay bad inputs and faults through the real CLI (one process each) and print what every one did.

For each case: the exit code, the first line of what it said, whether the registry still passes SQLite's
integrity check, and whether a finished "precious" run's files and records are untouched. Clean means:
exit 2 with one `error:` line (or 0 where the input is legal), integrity ok, precious intact, no marker file
from a hostile checkpoint or data set, nothing written outside the work folder, done within CASE_TIMEOUT_S
(a case still running then is killed and reported "hung").

    python bench/fault_corpus.py [--keep DIR] [--only "(r5)"]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

CASE_TIMEOUT_S = 30


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    return h.hexdigest()


def setup(work: Path) -> dict:
    from npuyolo.data.synth import synthesize
    from npuyolo.registry.db import Registry
    from npuyolo.train.recipe import Recipe
    from npuyolo.variants.build import build_model

    data = synthesize(work / "data", n_train=12, n_val=4, imgsz=96, seed=0)
    db = work / "reg" / "npuyolo.db"
    reg = Registry(db)
    rid = reg.create_run(name="precious", variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump(),
                         data_path=str(data), data_hash="h", class_names=["a"] * 6, weights_source=None, device="cpu", versions={})
    run = reg.get_run(rid)
    best = Path(run.save_dir) / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    torch.save({"epoch": 0, "model": None, "ema": build_model("L4-relu", nc=6, verbose=False).half(), "train_args": {}}, best)
    reg.add_artifact(rid, "weights/best", best)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
    reg.set_status(rid, "finished")
    interrupted = reg.create_run(name="stopped", variant="L4-relu", recipe=run.recipe.as_dict(), data_path=str(data), data_hash="h",
                                 class_names=["a"] * 6, weights_source=None, device="cpu", versions={})
    reg.set_status(interrupted, "interrupted")
    reg.close()
    marker = work / "PWNED"
    evil = work / "evil.pt"
    torch.save({"epoch": 0, "model": Payload(marker), "ema": None}, evil)
    cfg = yaml.safe_load(data.read_text())

    def data_variant(name: str, **changes) -> Path:
        c = dict(cfg)
        c.update(changes)
        p = work / f"data-{name}.yaml"
        p.write_text(yaml.safe_dump(c))
        return p

    files = {
        "data": data, "db": db, "evil": evil, "marker": marker, "best": best,
        "names_null": data_variant("names_null", names=None), "names_str": data_variant("names_str", names="person"),
        "names_mixed": data_variant("names_mixed", names={0: "a", "b": "c"}), "path_int": data_variant("path_int", path=5),
        "nc_str": data_variant("nc_str", nc="6"), "val_empty": data_variant("val_empty", val=""),
        "nc_wrong": data_variant("nc_wrong", nc=3), "val_missing_dir": data_variant("val_missing", val="nowhere"),
    }
    for name, text in {"list": "- a\n", "string": "hello\n", "int": "5\n", "invalid": "a: [1,\n", "unknown_key": "epoch: 3\n",
                       "ul_key": "ultralytics: {no_such_key: 1}\n", "neg_epochs": "epochs: -1\n"}.items():
        (work / f"recipe-{name}.yaml").write_text(text)
        files[f"recipe_{name}"] = work / f"recipe-{name}.yaml"
    for name, text in {"list": "- a\n", "string": "x\n", "invalid": "name: [\n", "no_variants": "name: s\ndata: d.yaml\nvariants: []\n",
                       "dup": f"name: s\ndata: {data}\nvariants: [L4-relu, L4-relu]\n",
                       "traversal": f"name: ../../../X\ndata: {data}\nvariants: [L4-nope]\n"}.items():
        (work / f"series-{name}.yaml").write_text(text)
        files[f"series_{name}"] = work / f"series-{name}.yaml"
    (work / "garbage.onnx").write_bytes(b"\x00garbage" * 64)
    files["garbage_onnx"] = work / "garbage.onnx"
    (work / "empty.pt").write_bytes(b"")
    files["empty_pt"] = work / "empty.pt"
    (work / "trunc.pt").write_bytes(best.read_bytes()[:4000])
    files["trunc_pt"] = work / "trunc.pt"
    (work / "a-file").write_text("x")
    files["a_file"] = work / "a-file"
    (work / "garbage.db").write_bytes(b"not sqlite" * 100)
    files["garbage_db"] = work / "garbage.db"
    (work / "dir.db").mkdir()
    files["dir_db"] = work / "dir.db"
    neg = sqlite3.connect(work / "neg.db")
    neg.execute("PRAGMA user_version = -1")
    neg.close()
    files["neg_db"] = work / "neg.db"
    return files


def cases(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """(case, argv, env extras, expected exit code)."""
    d, evil = str(f["data"]), str(f["evil"])
    T = ["train", "--variant", "L4-relu", "--data", d, "--epochs", "1", "--imgsz", "64"]
    out = []
    add = lambda case, argv, code=2, env=None: out.append((case, [str(a) for a in argv], env or {}, code))
    # untrusted code
    add("export a code-carrying .pt", ["export", evil, "--imgsz", "64", "--out", f["data"].parent / "e.onnx"])
    add("npu check a code-carrying .pt", ["npu", "check", evil, "-t", "relu-only", "--imgsz", "64"])
    add("train --weights a code-carrying .pt", [*T, "--weights", evil])
    add("distill --teacher a code-carrying .pt", ["distill", "--teacher", evil, "--student-variant", "L4-relu", "--data", d, "--epochs", "1"])
    add("export an empty .pt", ["export", f["empty_pt"], "--imgsz", "64"])
    add("export a truncated .pt", ["export", f["trunc_pt"], "--imgsz", "64"])
    # names and paths
    add("train --name of 300 characters", [*T, "--name", "x" * 300])
    add("train --name made of digits", [*T, "--name", "12"])
    add("train --name '#3'", [*T, "--name", "#3"])
    add("train --name 'precious' (taken)", [*T, "--name", "precious"])
    add("train --name with a newline", [*T, "--name", "a\nb"])
    add("train --device cuda:7", [*T, "--device", "cuda:7"])
    add("train --resume a finished run", ["train", "--resume", "precious"])
    add("train --resume unknown run", ["train", "--resume", "nope"])
    add("train --resume --from nonsense", ["train", "--resume", "stopped", "--from", "nonsense"])
    add("train --resume --from best (none)", ["train", "--resume", "stopped", "--from", "best"])
    add("train without --data", ["train", "--variant", "L4-relu"])
    add("train unknown variant", ["train", "--variant", "L9-relu", "--data", d])
    add("train leaky slope 1.5", ["train", "--variant", "L4-leaky1.5", "--data", d])
    add("train duplicate hybrid stage", ["train", "--variant", "L4-hybrid:backbone=relu,backbone=leaky", "--data", d])
    # data.yaml
    for key, label in (("names_null", "names: null"), ("names_str", "names: 'person'"), ("names_mixed", "names: mixed key types"),
                       ("path_int", "path: 5"), ("nc_str", "nc: '6'"), ("val_empty", "val: ''"), ("nc_wrong", "nc disagrees with names"),
                       ("val_missing_dir", "val folder missing")):
        add(f"data check {label}", ["data", "check", f[key]])
    add("data check a missing yaml", ["data", "check", f["data"].parent / "nope.yaml"])
    # recipes and series
    for name in ("list", "string", "int", "invalid", "unknown_key", "ul_key", "neg_epochs"):
        add(f"train --recipe {name}", ["train", "--variant", "L4-relu", "--data", d, "--recipe", f[f"recipe_{name}"]])
    for name in ("list", "string", "invalid", "no_variants", "dup", "traversal"):
        add(f"series run {name}", ["series", "run", f[f"series_{name}"]])
    add("series run missing file", ["series", "run", f["data"].parent / "nope.yaml"])
    # sizes
    for size in ("0", "-32", "50"):
        add(f"export --imgsz {size}", ["export", "L4-relu", "--imgsz", size])
    add("deploy quantize --imgsz 50", ["deploy", "quantize", "precious", "--data", d, "--imgsz", "50"])
    add("deploy quantize --calib 0", ["deploy", "quantize", "precious", "--data", d, "--calib", "0"])
    # ONNX artefacts
    add("deploy eval garbage ONNX", ["deploy", "eval", f["garbage_onnx"], "--data", d])
    add("deploy bench garbage ONNX", ["deploy", "bench", f["garbage_onnx"]])
    add("deploy eval missing ONNX", ["deploy", "eval", f["data"].parent / "none.onnx", "--data", d])
    add("npu check garbage ONNX", ["npu", "check", f["garbage_onnx"], "-t", "relu-only"])
    add("npu check unknown target", ["npu", "check", "L4-relu", "-t", "no-such-npu"])
    add("npu rewrite garbage ONNX", ["npu", "rewrite", f["garbage_onnx"]])
    # reports
    add("report --compare itself", ["report", "precious", "--compare", "precious"])
    add("report unknown run", ["report", "nope"])
    add("report --out under a file", ["report", "precious", "--out", f["a_file"] / "sub"])
    add("report --lang fr", ["report", "precious", "--lang", "fr"])
    add("series report unknown", ["series", "report", "nope"])
    add("prune --ratio 1.5", ["prune", "precious", "--ratio", "1.5"])
    # registry files
    add("runs on a garbage registry", ["runs"], env={"NPUYOLO_REGISTRY": str(f["garbage_db"])})
    add("runs on a directory registry", ["runs"], env={"NPUYOLO_REGISTRY": str(f["dir_db"])})
    add("runs on user_version -1", ["runs"], env={"NPUYOLO_REGISTRY": str(f["neg_db"])})
    add("runs on a mistyped --registry", ["runs", "--registry", f["data"].parent / "typo" / "r.db"])
    add("export --nc 0", ["export", "L4-relu", "--nc", "0", "--imgsz", "64", "--out", f["data"].parent / "n.onnx"])
    add("export --out an existing folder", ["export", "L4-relu", "--imgsz", "64", "--out", f["data"].parent])
    add("export --out /proc/x.onnx", ["export", "L4-relu", "--imgsz", "64", "--out", "/proc/x.onnx"])
    add("data synth --imgsz 0", ["data", "synth", f["data"].parent / "s0", "--imgsz", "0"])
    add("data synth --seed -5", ["data", "synth", f["data"].parent / "s1", "--seed", "-5"])
    add("data synth into a file", ["data", "synth", f["a_file"]])
    add("train --seed 2**70", [*T, "--seed", str(2 ** 70)])
    add("train --warmup-epochs -3", [*T, "--warmup-epochs", "-3"])
    add("train --name like a variant", [*T, "--name", "L4-leaky"])
    add("deploy quantize --auto-float -1", ["deploy", "quantize", "precious", "--data", d, "--auto-float", "-1"])
    add("predict a code-carrying .pt", ["predict", evil, f["data"].parent / "images" / "train"])
    add("predict a missing source", ["predict", "precious", f["data"].parent / "nothing-here.jpg"])
    add("runs export --mlflow to a bad URI", ["runs", "export", "--mlflow", "nosuchscheme://x"])
    add("runs (legal)", ["runs"], code=0)
    add("runs show '#1' (legal)", ["runs", "show", "#1"], code=0)
    return out


def cases_r4_severe_a(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """Issue 21, severe items 1-4: a data set's download: script, --out over the registry or a user's file, npu rewrite
    into bad places, data synth over a data set it did not write. The download: scripts write the marker file."""
    work = f["db"].parent.parent
    r4 = work / "r4a"
    out = []
    add = lambda case, argv, code=2: out.append((case, [str(a) for a in argv], {}, code))
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1)], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    r4.mkdir(parents=True, exist_ok=True)
    plain = r4 / "m.onnx"  # no npuyolo metadata: what npu rewrite takes
    save(model, str(plain))
    model.metadata_props.add(key="npuyolo_head", value="npu")
    tagged = r4 / "base.onnx"  # npuyolo metadata: what deploy eval takes
    save(model, str(tagged))
    for name, download in (("py", f"open({str(f['marker'])!r}, 'w').write('ran')\n"), ("bash", f"bash -c 'touch {f['marker']}'"),
                           ("url", "http://127.0.0.1:9/set.zip")):
        folder = r4 / f"dl-{name}" / "set"
        for sub in ("images", "labels"):
            shutil.copytree(f["data"].parent / sub, folder / sub, dirs_exist_ok=True)
        (folder / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": ["../images/val"],
                                                          "names": [f"c{i}" for i in range(6)], "download": download}))
        add(f"deploy eval, val: ['../images/val'] + {name} download:", ["deploy", "eval", tagged, "--data", folder / "data.yaml"])
        add(f"train, val: ['../images/val'] + {name} download:",
            ["train", "--variant", "L4-relu", "--data", folder / "data.yaml", "--epochs", "1", "--imgsz", "64"])
    notes = r4 / "notes.onnx"
    notes.write_text("a user's file")
    link = r4 / "link.onnx"
    if not link.is_symlink():
        link.symlink_to(f["a_file"])
    add("export RUN --out the registry", ["export", "precious", "--out", f["db"]])
    add("export RUN --out the registry --force", ["export", "precious", "--out", f["db"], "--force"])
    add("export --out a file npuyolo did not write", ["export", "L4-relu", "--imgsz", "64", "--out", notes])
    add("export --out a symlink", ["export", "L4-relu", "--imgsz", "64", "--out", link])
    add("npu rewrite --out the registry --force", ["npu", "rewrite", plain, "--out", f["db"], "--force"])
    add("npu rewrite --out a file npuyolo did not write", ["npu", "rewrite", plain, "--out", notes])
    add("npu rewrite --out a symlink", ["npu", "rewrite", plain, "--out", link])
    add("npu rewrite --out /dev/null --force", ["npu", "rewrite", plain, "--out", "/dev/null", "--force"])
    add("npu rewrite --out a folder", ["npu", "rewrite", plain, "--out", r4])
    add("npu rewrite --out DIR/", ["npu", "rewrite", plain, "--out", f"{r4}/nodir/"])
    add("npu rewrite --out under a file", ["npu", "rewrite", plain, "--out", f["a_file"] / "x.onnx"])
    add("npu rewrite --out /proc/x.onnx", ["npu", "rewrite", plain, "--out", "/proc/x.onnx"])
    add("npu rewrite --out a new file (legal)", ["npu", "rewrite", plain, "--out", r4 / "new" / "r.onnx"], code=0)
    add("npu rewrite --out its own output again (legal)", ["npu", "rewrite", plain, "--out", r4 / "new" / "r.onnx"], code=0)
    theirs = r4 / "theirs"
    theirs.mkdir(exist_ok=True)
    (theirs / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [mine]\n")
    add("data synth into a data set it did not write", ["data", "synth", theirs, "--train", "2", "--val", "1", "--imgsz", "64"])
    for what, force in (("a new folder", []), ("the folder it wrote, --force", ["--force"])):  # issue 36: only forced
        add(f"data synth into {what} (legal)", ["data", "synth", r4 / "synth", "--train", "2", "--val", "1", "--imgsz", "64",
                                                *force], code=0)
    return out


def cases_r4_severe_b(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """Issue 21, severe 5-8: YAML alias bombs (data.yaml, recipe, series), an MLflow server that is down and the
    registry given as MLflow's store, a FIFO named like an image, and `path: /` with `train: .`.

    Builds its own files (bombs under 600 bytes, a copy of the data set with a FIFO, an ONNX to evaluate) in a
    folder under the data set's; the registry is the corpus' own (NPUYOLO_REGISTRY).
    """
    from npuyolo.deploy.export import export_onnx
    from npuyolo.variants.build import build_model

    src = f["data"].parent
    work = src / "r4-severe-b"
    work.mkdir(exist_ok=True)
    images = {s: (src / "images" / s).resolve() for s in ("train", "val")}
    anchors = "\n".join(["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                         + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]) + "\n"
    inline = "[" + ", ".join(["&b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                             + [f"&b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 8)]) + "]"
    texts = {
        "bomb-train.yaml": anchors + f"train: *l8\nval: {images['val']}\nnames: [a, b, c, d, e, f]\n",
        "bomb-names.yaml": anchors + f"train: {images['train']}\nval: {images['val']}\nnames: *l8\n",
        "bomb-recipe.yaml": f"ultralytics: {{mosaic: {inline}}}\n",
        "bomb-series.yaml": f"name: bomb\ndata: {f['data']}\nvariants: [L4-relu]\nrecipe: {{ultralytics: {{mosaic: {inline}}}}}\n",
        "root.yaml": "path: /\ntrain: .\nval: .\nnames: [a]\n",
    }
    for name, text in texts.items():
        (work / name).write_text(text)
    fifo = work / "fifo-set"
    if not fifo.exists():
        for sub in ("images", "labels"):
            shutil.copytree(src / sub, fifo / sub)
        os.mkfifo(fifo / "images" / "train" / "x.jpg")
        (fifo / "labels" / "train" / "x.txt").write_text("")
        (fifo / "data.yaml").write_text(f"path: {fifo}\ntrain: images/train\nval: images/val\n"
                                        "names: [speed_limit, warning, stop, mandatory, yield, no_entry]\n")
    onnx = work / "m.onnx"
    if not onnx.exists():
        export_onnx(build_model("L4-relu", nc=6, verbose=False), onnx, imgsz=64)
    d = str(f["data"])
    out = []
    add = lambda case, argv, code=2, env=None: out.append((case, [str(a) for a in argv], env or {}, code))  # noqa: E731
    add("data check alias bomb as train (r4)", ["data", "check", work / "bomb-train.yaml"])
    add("data check alias bomb as names (r4)", ["data", "check", work / "bomb-names.yaml"])
    add("train --recipe with an alias bomb (r4)", ["train", "--variant", "L4-relu", "--data", d, "--recipe", work / "bomb-recipe.yaml",
                                                   "--epochs", "1", "--imgsz", "64"])
    add("series run with an alias bomb recipe (r4)", ["series", "run", work / "bomb-series.yaml"])
    add("runs export --mlflow to a dead server (r4)", ["runs", "export", "--mlflow", "http://127.0.0.1:9"])
    add("runs export --mlflow into the registry (r4)", ["runs", "export", "--mlflow", f"sqlite:///{f['db']}"])
    add("data check a FIFO named x.jpg (r4)", ["data", "check", fifo / "data.yaml"])
    add("train on a set with a FIFO (r4)", ["train", "--variant", "L4-relu", "--data", fifo / "data.yaml", "--epochs", "1", "--imgsz", "64"])
    add("deploy eval on a set with a FIFO (r4)", ["deploy", "eval", onnx, "--data", fifo / "data.yaml"])
    add("data check path: / with train: . (r4)", ["data", "check", work / "root.yaml"])
    return out


def cases_r4_medium_c(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """Issue 21, medium items reachable from one CLI call: broken or hand-edited ONNX files given to deploy eval,
    deploy bench and predict; run lookups by a decomposed-Unicode name, '²' and a 23-digit id; npu rewrite of a graph
    that already uses the names a rewrite generates. (The races: tests/test_registry.py and tests/test_deploy.py.)"""
    import unicodedata

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from npuyolo.deploy.export import export_onnx, set_metadata
    from npuyolo.registry.db import Registry
    from npuyolo.train.recipe import Recipe
    from npuyolo.variants.build import build_model

    root = f["data"].parent / "r4c"
    root.mkdir(exist_ok=True)
    good = export_onnx(build_model("L4-relu", nc=6, verbose=False), root / "good.onnx", imgsz=64)

    def broken(name: str, edit) -> Path:
        model = onnx.load(str(good))
        edit(model)
        path = root / name / f"{name}.onnx"
        path.parent.mkdir(exist_ok=True)
        onnx.save(model, str(path))
        return path

    def meta(**changes: str):
        return lambda m: set_metadata(m, {p.key: p.value for p in m.metadata_props} | changes)

    def external_outside(m: onnx.ModelProto) -> None:
        init = max(m.graph.initializer, key=lambda i: len(i.raw_data))
        init.ClearField("raw_data")
        init.data_location = TensorProto.EXTERNAL
        init.external_data.add(key="location", value="../../../../../etc/hostname")

    def set_input(node: int, tensor: str):
        return lambda m: m.graph.node[node].input.__setitem__(0, tensor)

    onnx_files = {
        "external data outside its folder": broken("ext", external_outside),
        "a cyclic graph": broken("cyclic", lambda m: set_input(1, m.graph.node[5].output[0])(m)),
        "a node input nothing produces": broken("missing", set_input(3, "nowhere")),
        "opset 1": broken("opset1", lambda m: setattr(m.opset_import[0], "version", 1)),
        "metadata size 96, graph 64": broken("size", meta(imgsz="[96, 96]")),
        "strides [0,0,0]": broken("strides0", meta(strides="[0, 0, 0]")),
        "strides as text": broken("strides_text", meta(strides='["a", "b", "c"]')),
        "two strides for three scales": broken("strides2", meta(strides="[8, 16]")),
        "reg_max 8 (graph has 16)": broken("regmax", meta(reg_max="8")),
    }
    out = []
    add = lambda case, argv, code=2: out.append((case, [str(a) for a in argv], {}, code))  # noqa: E731
    images = f["data"].parent / "images" / "val"
    for what, path in onnx_files.items():
        add(f"deploy eval: {what}", ["deploy", "eval", path, "--data", f["data"]])
        add(f"deploy bench: {what}", ["deploy", "bench", path, "--runs", "1"])
        add(f"predict: {what}", ["predict", path, images, "--out", root / f"pred-{path.stem}"])

    reg = Registry(root / "names.db")
    reg.create_run(name="café", variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump(),
                   data_path=str(f["data"]), data_hash="h", class_names=["a"] * 6, weights_source=None, device="cpu", versions={})
    reg.set_status(1, "finished")
    reg.close()
    add("runs show: a name typed in NFD", ["runs", "show", unicodedata.normalize("NFD", "café"), "--registry", root / "names.db"], 0)
    add("runs show ²", ["runs", "show", "²", "--registry", root / "names.db"])
    add("runs show 99999999999999999999999", ["runs", "show", "99999999999999999999999", "--registry", root / "names.db"])

    nodes = [helper.make_node("Relu", ["x"], ["n/relu"], name="n/relu"),
             helper.make_node("Mul", ["n/relu", "npuyolo_const_0"], ["n/ax"], name="n/ax"),
             helper.make_node("LeakyRelu", ["n/ax"], ["y"], name="n", alpha=0.1)]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", io[:1], io[1:], [numpy_helper.from_array(np.array(2.0, np.float32), "npuyolo_const_0")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "clash.onnx"))
    for method in ("relu-decomp", "relu-exact", "max"):
        add(f"npu rewrite --leaky {method}: generated names already in the graph",
            ["npu", "rewrite", root / "clash.onnx", "--leaky", method, "--out", root / f"clash-{method}.onnx"], 0)
    return out


def cases_r4_env_d(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """Round 4 (issue 21), the environment: forged compiler manifests, huge declared inputs, odd files and registries.

    Builds what it needs under the work folder (f["data"].parent). Read-only and full disks need a mount and are
    covered by tests/test_cli.py and tests/test_registry.py instead.
    """
    import sqlite3 as _sqlite3

    import onnx
    from onnx import TensorProto, helper

    from npuyolo.registry.db import Registry

    work = f["data"].parent / "r4d"
    work.mkdir(exist_ok=True)
    d = str(f["data"])
    out = []
    add = lambda case, argv, code=2, env=None: out.append((case, [str(a) for a in argv], env or {}, code))  # noqa: E731
    # a forged compiler manifest: its "python" is a script outside the compilers folder
    forged = work / "compilers-forged"
    (forged / "rknn").mkdir(parents=True, exist_ok=True)
    evil = work / "evil-python"
    evil.write_text(f"#!/bin/sh\ntouch {f['marker']}\n")
    evil.chmod(0o755)
    (forged / "rknn" / "manifest.json").write_text(json.dumps({"name": "rknn", "version": "9", "python": str(evil),
                                                                "venv": str(work), "installed_at": "t", "pins": []}))
    env_forged = {"NPUYOLO_COMPILERS_DIR": str(forged)}
    add("npu compile with a forged compiler manifest", ["npu", "compile", "L4-relu", "--compiler", "rknn", "--target", "rk3588",
                                                        "--imgsz", "64", "--data", d], env=env_forged)
    add("compilers install over a forged manifest", ["compilers", "install", "rknn", "--json"], env=env_forged)
    (work / "compilers-file").write_text("x")
    add("NPUYOLO_COMPILERS_DIR names a file", ["compilers", "list"], env={"NPUYOLO_COMPILERS_DIR": str(work / "compilers-file")})
    # a well-formed install (its python links to this interpreter) and an ONNX file declaring a 100000 x 100000 input
    good = work / "compilers-ok"
    venv = good / "rknn" / "venv-1"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").is_symlink():
        (venv / "bin" / "python").symlink_to(sys.executable)
    (good / "rknn" / "manifest.json").write_text(json.dumps({"name": "rknn", "version": "9", "python": str(venv / "bin" / "python"),
                                                             "venv": str(venv), "installed_at": "t", "pins": []}))
    side = 100000
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, side, side])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["out"], name="act")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), work / "big.onnx")
    add("npu compile of a 100000x100000 input", ["npu", "compile", work / "big.onnx", "--compiler", "rknn", "--target", "rk3588",
                                                 "--data", d], env={"NPUYOLO_COMPILERS_DIR": str(good)})
    add("npu compile --imgsz 100000", ["npu", "compile", "L4-relu", "--imgsz", "100000", "--compiler", "rknn", "--target", "rk3588",
                                       "--data", d], env={"NPUYOLO_COMPILERS_DIR": str(good)})
    # registries that are not what they seem
    add("npu check with --registry /dev/null", ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", "64", "--registry", "/dev/null"])
    edited = work / "edited" / "npuyolo.db"
    reg = Registry(edited)
    rid = reg.create_run(name="moved", variant="L4-relu", recipe={"epochs": 1, "imgsz": 64}, data_path=d, data_hash="h",
                         class_names=["a"] * 6, weights_source=None, device="cpu", versions={})
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
    reg.set_status(rid, "finished")
    reg.close()
    (work / "outside").mkdir(exist_ok=True)
    con = _sqlite3.connect(edited)
    con.execute("UPDATE runs SET save_dir = ? WHERE id = ?", (str(work / "outside"), rid))
    con.commit()
    con.close()
    add("report of a run whose save_dir was edited to point outside", ["report", "moved"], env={"NPUYOLO_REGISTRY": str(edited)})
    # odd files given as models and sources
    (work / "x.onnx").mkdir(exist_ok=True)
    (work / "empty.onnx").write_bytes(b"")
    if not (work / "fifo.jpg").exists():
        os.mkfifo(work / "fifo.jpg")
    if not (work / "loop.jpg").is_symlink():
        (work / "loop.jpg").symlink_to(work / "loop.jpg")
    for label, model in (("a folder named x.onnx", work / "x.onnx"), ("a 0-byte ONNX", work / "empty.onnx")):
        add(f"deploy bench {label}", ["deploy", "bench", model])
        add(f"deploy eval {label}", ["deploy", "eval", model, "--data", d])
        add(f"predict {label}", ["predict", model, f["data"].parent / "images" / "val", "--out", work / "p0"])
        add(f"npu check {label}", ["npu", "check", model, "-t", "relu-only"])
    for label, source in (("a FIFO", work / "fifo.jpg"), ("a symlink loop", work / "loop.jpg"), ("/dev/zero", "/dev/zero")):
        add(f"predict with {label} as the source", ["predict", "precious", source, "--out", work / "p1"])
    add("deploy bench --threads -5", ["deploy", "bench", f["garbage_onnx"], "--threads", "-5"])
    add("deploy bench --threads 100000", ["deploy", "bench", f["garbage_onnx"], "--threads", "100000"])
    upper = work / "M.ONNX"
    if not upper.exists():
        from npuyolo.deploy.export import export_onnx
        from npuyolo.variants.build import build_model

        export_onnx(build_model("L4-relu", nc=6, verbose=False), upper, imgsz=64)
    add("npu check M.ONNX, upper-case suffix (legal)", ["npu", "check", upper, "-t", "relu-only"], code=0)
    # a second `series run` at once: the member's run name was just taken by the first one
    raced = work / "raced" / "npuyolo.db"
    reg = Registry(raced)
    taken = reg.create_run(name="s4-L4-relu", variant="L4-relu", recipe={"epochs": 1, "imgsz": 64}, data_path=d, data_hash="h",
                           class_names=["a"] * 6, weights_source=None, device="cpu", versions={})
    reg.set_status(taken, "interrupted")
    reg.close()
    (work / "s4.yaml").write_text(f"name: s4\ndata: {d}\nvariants: [L4-relu]\nrecipe: {{epochs: 1, imgsz: 64, workers: 0}}\n")
    add("a second series run at once (member name just taken)", ["series", "run", work / "s4.yaml"], env={"NPUYOLO_REGISTRY": str(raced)})
    return out


def cases_r5_a(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """Round 5 (issue 36), part A: huge input sizes, a damaged or hostile plan.json, a stray file named like a run id,
    data synth over a data set, duplicate boxes. Builds what it needs under f["data"].parent / "r5a"."""
    work = f["data"].parent / "r5a"
    work.mkdir(exist_ok=True)
    d = str(f["data"])
    image = next((f["data"].parent / "images" / "val").iterdir())
    out = []
    add = lambda case, argv, code=2, env=None: out.append((case, [str(a) for a in argv], env or {}, code))  # noqa: E731
    for size in ("16384", "100000"):
        add(f"deploy plan --imgsz {size} (r5)", ["deploy", "plan", "L4-relu", "-t", "relu-only", "--data", d, "--imgsz", size])
        add(f"export --imgsz {size} (r5)", ["export", "L4-relu", "--imgsz", size, "--out", work / "big.onnx"])
        add(f"npu check --imgsz {size} (r5)", ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", size])
        add(f"deploy quantize --imgsz {size} (r5)", ["deploy", "quantize", "precious", "--data", d, "--imgsz", size])
        add(f"predict --imgsz {size} (r5)", ["predict", "L4-relu", image, "--imgsz", size, "--out", work / "p"])
    # data synth over the set it wrote: refused without --force (a mixed set), emptied and rewritten with it
    for what, extra, code in (("a new folder", [], 0), ("its own set again", [], 2), ("its own set, --force", ["--force"], 0)):
        add(f"data synth into {what} (r5)", ["data", "synth", work / "synth", "--train", "2", "--val", "1", "--imgsz", "64",
                                             *extra], code)
    # a box repeated 100,000 times in one label file: legal, warned about, counted once
    dups = work / "dups"
    if not dups.exists():
        shutil.copytree(f["data"].parent / "images", dups / "images")
        shutil.copytree(f["data"].parent / "labels", dups / "labels")
        (dups / "data.yaml").write_text(f"path: {dups}\ntrain: images/train\nval: images/val\n"
                                        "names: [speed_limit, warning, stop, mandatory, yield, no_entry]\n")
        label = sorted((dups / "labels" / "train").glob("*.txt"))[0]
        label.write_text(label.read_text() + "2 0.5 0.5 0.2 0.2\n" * 100_000)
    add("data check a box repeated 100,000 times (r5, legal: warned)", ["data", "check", dups / "data.yaml"], 0)
    # a stray file named like a run id in the working folder (the corpus' cwd): `1` still names run 1
    (work.parent.parent / "1").write_text("a stray file")
    add("export 1 with a file named 1 in the working folder (r5, legal)", ["export", "1", "--imgsz", "64", "--out",
                                                                           work / "one.onnx"], 0)
    add("npu check 1 with a file named 1 in the working folder (r5, legal)", ["npu", "check", "1", "-t", "relu-only",
                                                                              "--imgsz", "64"], 0)
    # a file named like the precious run's *name*: which one was meant is said in one line
    (work.parent.parent / "precious").write_text("a stray file")
    add("export precious with a file named precious in the working folder (r5)", ["export", "precious", "--imgsz", "64",
                                                                                  "--out", work / "named.onnx"])
    # recorded plans that are a FIFO, a link to an endless device, hand-edited to wrong types, nested 200,000 deep
    from npuyolo.deploy.plan import Accuracy, Candidate, Placement, Plan, Row, TargetPlan
    from npuyolo.registry.db import Registry
    from npuyolo.train.recipe import Recipe

    acc = Accuracy(0.5, 0.5, 0.5, 0.3)
    row = Row("relu-only", Candidate("export", None, "int8"), "/p/a.onnx", "/p/a-int8.onnx",
              Placement(1.0, 10, 0, 0, 0, {}, {}), acc, acc, acc, acc, 0.25)
    good = Plan("m", 1, d, 0.25, "minmax", [TargetPlan("relu-only", row, None, None, [row])]).as_dict()

    def edited(change):
        plan = json.loads(json.dumps(good))
        change(plan)
        return json.dumps(plan)

    plans = {
        "fifo": None, "dev-zero": "/dev/zero",
        "share-lots": edited(lambda p: p["targets"][0]["rows"][0]["placement"].update(share_nodes="lots")),
        "map50-text": edited(lambda p: p["targets"][0]["rows"][0]["fp32"].update(map50="0.5")),
        "npu-ms-fast": edited(lambda p: p["targets"][0]["rows"][0]["placement"].update(npu_ms="fast")),
        "advice-no-values": edited(lambda p: p["targets"][0].update(advice=[{"kind": "reslope", "values": {}}])),
        "advice-abc": edited(lambda p: p["targets"][0].update(advice="abc")),
        "markdown-target": edited(lambda p: [t.update(target="# x <script>alert(1)</script> ![i](http://e/i.png)")
                                             for t in p["targets"]]),  # valid: shown escaped
        "deep": "[" * 200_000 + "]" * 200_000,
    }
    db = work / "plans" / "npuyolo.db"
    if not db.exists():
        reg = Registry(db)
        reg.upsert_series("s5", {"variants": list(plans)})
        for name, content in plans.items():
            rid = reg.create_run(name=name, variant="L4-relu", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump(),
                                 data_path=d, data_hash="h", class_names=["a"] * 6, weights_source=None, device="cpu",
                                 versions={}, series="s5")
            reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
            reg.set_status(rid, "finished")
            reg.set_series_member("s5", name, rid)
            path = work / "plans" / name / "plan.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                os.mkfifo(path)
            elif content.startswith("/dev/"):
                path.symlink_to(content)
            else:
                path.write_text(content)
            reg.add_artifact(rid, "plan", path)
        reg.close()
    env = {"NPUYOLO_REGISTRY": str(db)}
    for name in plans:
        add(f"report: recorded plan.json {name} (r5, legal{'' if name == 'markdown-target' else ': no plan'})",
            ["report", name, "--out", work / "reports"], 0, env)
    add("series report: members' plan.json a FIFO, a device, edited (r5, legal)", ["series", "report", "s5", "--out",
                                                                                     work / "reports"], 0, env)
    return out


def cases_r5_b(f: dict) -> list[tuple[str, list[str], dict, int]]:
    """Round 5 (issue 36), part B: compiled-artefact manifests (nested, pointing outside, a changed .rknn), a stray
    manifest beside a plain export, --top below 1, a QDQ file that is not ONNX, a missing compiler, registries with an
    odd status CHECK or a damaged row. Builds what it needs under f["data"].parent / "r5b"."""
    import shutil

    from npuyolo.compilers.manifest import manifest_path, write_manifest
    from npuyolo.deploy.export import export_onnx
    from npuyolo.registry.db import Registry
    from npuyolo.registry.schema import MIGRATIONS
    from npuyolo.train.recipe import Recipe
    from npuyolo.variants.build import build_model

    work = f["data"].parent / "r5b"
    work.mkdir(exist_ok=True)
    d = str(f["data"])
    out = []
    add = lambda case, argv, code=2, env=None: out.append((case, [str(a) for a in argv], env or {}, code))  # noqa: E731
    none_installed = {"NPUYOLO_COMPILERS_DIR": str(work / "no-compilers")}
    # a .rknn build laid out as npu compile writes it: the ONNX file, the build folder, calibration list, manifest
    fp32 = work / "run" / "m.onnx"
    if not fp32.is_file():
        export_onnx(build_model("L4-relu", nc=6, verbose=False), fp32, imgsz=64, head="npu")

    def build(name: str, **changes) -> Path:
        folder = work / "run" / f"rknn-rk3588-{name}"
        (folder / "calib").mkdir(parents=True, exist_ok=True)
        (folder / "calib" / "000.jpg").write_bytes(b"jpg")
        (folder / "calib.txt").write_text("calib/000.jpg\n")
        rknn = folder / "m-rk3588.rknn"
        rknn.write_bytes(b"RKNN" * 1000)
        record = json.loads(write_manifest(rknn, "rknn", fp32, target="rk3588", dataset=folder / "calib.txt",
                                           disabled_rules=[]).read_text())
        manifest_path(rknn).write_text(json.dumps({**record, **changes}))
        return rknn

    nested = build("nested")
    manifest_path(nested).write_text("[" * 100000 + "]" * 100000)
    add("deploy eval of a .rknn whose manifest is nested 100000 deep (r5)", ["deploy", "eval", nested, "--data", d])
    add("deploy eval of a .rknn whose manifest's dataset is /etc/passwd (r5)",
        ["deploy", "eval", build("passwd", dataset="/etc/passwd"), "--data", d])
    add("deploy eval of a .rknn whose manifest's onnx lies outside (r5)",
        ["deploy", "eval", build("outside", onnx="../../../data.yaml"), "--data", d])
    cut = build("cut")
    cut.write_bytes(cut.read_bytes()[:10])
    add("deploy eval of a .rknn cut to 10 bytes (r5)", ["deploy", "eval", cut, "--data", d], env=none_installed)
    intact = build("intact")
    add("deploy eval of an intact .rknn without its compiler (r5)", ["deploy", "eval", intact, "--data", d], env=none_installed)
    add("deploy eval --layers --top -3 (r5)", ["deploy", "eval", intact, "--data", d, "--layers", "--top", "-3"])
    good = work / "compilers-ok"  # an install whose python is this interpreter: the QDQ check runs before any driver
    venv = good / "rknn" / "venv-1"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").is_symlink():
        (venv / "bin" / "python").symlink_to(sys.executable)
    (good / "rknn" / "manifest.json").write_text(json.dumps({"name": "rknn", "version": "9", "python": str(venv / "bin" / "python"),
                                                             "venv": str(venv), "installed_at": "t", "pins": []}))
    add("deploy eval --layers --qdq /etc/passwd (r5)", ["deploy", "eval", intact, "--data", d, "--layers", "--qdq", "/etc/passwd"],
        env={"NPUYOLO_COMPILERS_DIR": str(good)})
    plain = work / "plain" / "model.onnx"  # a plain export with a stray manifest (another file's) beside it
    plain.parent.mkdir(exist_ok=True)
    shutil.copyfile(fp32, plain)
    manifest_path(plain).write_text(json.dumps({"kind": "onnx", "onnx": "model_fp32.onnx", "mct": True, "size": 5,
                                                "sha256": "0" * 64}))
    add("deploy eval of a plain export beside a stray manifest (r5, legal)", ["deploy", "eval", plain, "--data", d], 0)
    # registries: schema 6 with a status CHECK spaced differently, or foreign; rows edited by hand
    for label, check, listed, written in (("spaced", "CHECK (status IN ('running', 'finished',  'failed', 'interrupted' ))", 0, 0),
                                          ("foreign", "CHECK (length(status) > 0)", 0, 2)):
        db = work / f"v6-{label}.db"
        if not db.exists():
            con = sqlite3.connect(db, isolation_level=None)
            for v in range(6):
                con.executescript(MIGRATIONS[v].replace("CHECK (status IN ('running', 'finished', 'failed', 'interrupted'))", check))
            con.execute("PRAGMA user_version = 6")
            con.close()
        add(f"runs on a v6 registry with a {label} status CHECK (r5)", ["runs"], listed, env={"NPUYOLO_REGISTRY": str(db)})
        add(f"npu check recording into a v6 registry with a {label} status CHECK (r5)",
            ["npu", "check", "L4-relu", "-t", "relu-only", "--imgsz", "64"], written, env={"NPUYOLO_REGISTRY": str(db)})
    base = work / "damage-base.db"
    if not base.exists():
        reg = Registry(base)
        reg.upsert_series("s5", {"name": "s5", "data": d, "variants": ["L4-relu", "L4-leaky"]})
        for v in ("L4-relu", "L4-leaky"):
            rid = reg.create_run(name=f"s5-{v}", variant=v, series="s5", recipe=Recipe.load(epochs=1, imgsz=64, workers=0).model_dump(),
                                 data_path=d, data_hash="h", class_names=["a"] * 6, weights_source=None, device="cpu", versions={})
            reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1, box_loss=1, cls_loss=1, dfl_loss=1)
            reg.update_run(rid, best_json=json.dumps({"map50": 0.1, "map50_95": 0.05, "precision": 0.2, "recall": 0.1}))
            reg.set_status(rid, "finished")
            reg.set_series_member("s5", v, rid)
        reg.close()
    for label, sql, argv, code in (
            ("recipe_json not JSON", "UPDATE runs SET recipe_json = '{nope' WHERE id = 1", ["runs", "show", "1"], 2),
            ("best_json without precision", "UPDATE runs SET best_json = '{\"map50\": 0.1}' WHERE id = 1", ["report", "1", "--out", work / "rep"], 2),
            ("epochs.map50 text", "UPDATE epochs SET map50 = 'abc' WHERE run_id = 1", ["series", "rank", "s5"], 0),
            ("duration_s text", "UPDATE runs SET duration_s = 'long' WHERE id = 1", ["runs"], 0),
            ("variant '[/]'", "UPDATE runs SET variant = '[/]' WHERE id = 1", ["runs", "show", "1"], 0),
            ("spec_json broken", "UPDATE series SET spec_json = '{'", ["series", "rank", "s5"], 2)):
        db = work / f"damaged-{len(out)}.db"
        shutil.copyfile(base, db)
        con = sqlite3.connect(db)
        con.execute(sql)
        con.commit()
        con.close()
        add(f"{' '.join(str(a) for a in argv[:2])} with a damaged row: {label} (r5)", argv, code, env={"NPUYOLO_REGISTRY": str(db)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="keep the work folder here")
    ap.add_argument("--only", default=None, help="run only the cases whose name holds this text, e.g. '(r5)'")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="npuyolo-faults-"))
    f = setup(work)
    before = digest([f["best"]])
    env0 = {**os.environ, "NPUYOLO_REGISTRY": str(f["db"]), "COLUMNS": "200"}
    rows, clean = [], 0
    t0 = time.time()
    for case, argv, env, expected in cases(f) + cases_r4_severe_a(f) + cases_r4_severe_b(f) + cases_r4_medium_c(f) + cases_r4_env_d(f)\
            + cases_r5_a(f) + cases_r5_b(f):
        if args.only and args.only not in case:
            continue
        try:
            p = subprocess.run([sys.executable, "-m", "npuyolo.cli", *argv], env={**env0, **env}, cwd=work, capture_output=True,
                               text=True, timeout=CASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # killed by subprocess.run; a hang is a finding, not a crash of the corpus
            rows.append((case, "-", f"hung: still running after {CASE_TIMEOUT_S} s, killed", "-", "-", "NOT CLEAN"))
            continue
        said = [line for line in (p.stderr + p.stdout).splitlines() if line.strip()]
        first = next((line for line in said if line.startswith("error:")), said[0] if said else "")
        integrity = sqlite3.connect(f["db"]).execute("PRAGMA integrity_check").fetchone()[0]
        con = sqlite3.connect(f["db"])
        precious_ok = digest([f["best"]]) == before and con.execute("SELECT status FROM runs WHERE name='precious'").fetchone()[0] == "finished"
        phantom = con.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0]
        con.close()
        traceback = "Traceback" in p.stderr
        ok = (p.returncode == expected and integrity == "ok" and precious_ok and not f["marker"].exists() and not traceback
              and phantom == 0 and (expected != 2 or first.startswith("error:")))
        clean += ok
        rows.append((case, p.returncode, first[:110], integrity, "yes" if precious_ok else "NO", "clean" if ok else "NOT CLEAN"))
    outside = [p for p in (work.parent / "X", work.parent / "etc") if p.exists()]
    print(f"| case | exit | first line | registry | precious run intact | verdict |\n|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    print(f"\n{clean} of {len(rows)} cases clean; marker file from hostile pickles: {'PRESENT' if f['marker'].exists() else 'absent'}; "
          f"written outside the work folder: {outside or 'nothing'}; {time.time() - t0:.0f} s")
    if args.keep:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if clean == len(rows) else 1)


if __name__ == "__main__":
    main()
