"""One compiler registry (issue 32, point 3): a compiler is one `CompilerSpec` in `compilers/registry.py`, saying how it
installs, which profiles it serves, how it builds, is compared, is read by a plan and is scored. A fake compiler whose
build and runtime are pure Python (no venv), registered in that one place, is listed, compiled, planned and scored."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from npuyolo.compilers import registry
from npuyolo.compilers.compile import agreement
from npuyolo.compilers.envs import CompilerEnv, CompilerError
from npuyolo.compilers.manifest import write_manifest
from npuyolo.deploy.runtime import session

from .helpers import cli


@dataclasses.dataclass
class FakeBuild:
    """What every build record holds (`compilers.compile.Build`), and the file this compiler writes."""

    compiler: str
    version: str
    platform: str
    onnx: str
    log: str
    seconds: float
    mappings: list
    rows: list
    notes: list[str]
    rknn_file: str | None
    fake_file: str

    def summary(self) -> dict:
        return {"rows": 3, "rows_npu": 3, "rows_cpu": 0, "cpu_rows": [], "inference_ms": 1.25}

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "summary": self.summary()}


def fake_build(job) -> tuple[FakeBuild, str]:
    """"Compiles" to the graph it was given (its runtime runs that in ONNX Runtime), with the manifest scoring reads."""
    job.folder.mkdir(parents=True, exist_ok=True)  # as every compiler makes its own build folder
    compiled = job.folder / "model.fake"
    shutil.copyfile(job.onnx, compiled)
    write_manifest(compiled, "fake", job.onnx)
    log = job.folder / "fake.log"
    log.write_text("compiled\n")
    return (FakeBuild("fake", "1.0", job.platform, str(job.onnx), str(log), 0.0, [], [], [], None, str(compiled)),
            f"{job.calib} images, not read")


def fake_verdict(build: FakeBuild) -> registry.Verdict:
    s = build.summary()
    return registry.Verdict("compiled", s["rows_cpu"], s["inference_ms"], build.fake_file)


class FakeRuntime:
    """The compiled file in ONNX Runtime, behind the runtime interface `deploy eval` drives."""

    def __init__(self, art, log):
        self.sess = session(art.path)
        self.info = {"ok": True, "runtime": "fake runtime (ONNX Runtime)"}

    def __call__(self, x):
        return self.sess.run(None, {self.sess.get_inputs()[0].name: x})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


FAKE = registry.CompilerSpec(
    name="fake", title="A pure-Python test compiler", distribution="npuyolo", steps=(), check="pass", licence="test only",
    platforms={"fake-npu": "relu-only"}, build=fake_build, agree=agreement, verdict=fake_verdict,
    scoring=registry.Scoring("fake", ".fake", dict(layout="NCHW", channels="RGB", scale="0-1", dtype="float32"),
                             runtime=FakeRuntime),
    in_process=CompilerEnv("fake", "1.0", sys.executable, "", "", []), memory_text=lambda memory: "4/16 slots",
    referees="by fake slots", estimate="the fake's own clock")


@pytest.fixture
def fake_compiler(monkeypatch, compilers_dir):
    monkeypatch.setitem(registry.COMPILERS, "fake", FAKE)  # the one place a compiler is added
    return FAKE


def test_every_compiler_table_is_derived_from_the_registry():
    """What `npu compile`, a plan and `deploy eval` read of the real compilers comes from their specs."""
    from npuyolo.deploy.eval import vendor
    from npuyolo.deploy.plan import COMPILER_OF

    assert set(registry.COMPILERS) == {"rknn", "vela", "imx500"}
    assert registry.profile_for("rknn", "rknn-rk3588") == ("rk3588", "rknn-rk3588")
    assert registry.profile_for("vela", "ethos-u55-128") == ("ethos-u55-128", "ethos-u55")
    assert COMPILER_OF == {"rknn-rk3588": ("rknn", "rk3588"), "rknn-rk3566": ("rknn", "rk3566"), "ethos-u55": ("vela", "ethos-u55-128"),
                           "ethos-u85": ("vela", "ethos-u85-256"), "imx500": ("imx500", "imx500")}
    assert [(s.name, p) for s, p in map(registry.serving, ("ethos-u85", "imx500"))] == [("vela", "ethos-u85-256"), ("imx500", "imx500")]
    assert registry.serving("relu-only") is None
    assert vendor.suffixes() == {".rknn": "rknn", ".tflite": "tflite"}
    assert {k: registry.scorer(k).name for k in ("rknn", "tflite", "onnx")} == {"rknn": "rknn", "tflite": "vela", "onnx": "imx500"}
    assert vendor.onnx_kinds() == ["onnx"]
    assert vendor.scored_files() == ".rknn, the int8 .tflite behind a Vela build, or the IMX500 build's model_imx_dense.onnx"
    assert [registry.scorer(k).scoring.layers for k in ("rknn", "tflite", "onnx")] == ["RKNN's accuracy_analysis", None, None]
    assert registry.memory_text("rknn", {"internal_kb": 1234.4, "weight_kib": 56.0}) == "internal 1234 KiB, weight 56 KiB"
    assert registry.memory_text("imx500", {"used_mb": 3.7, "available_mb": 8.0, "fits": True}) == "3.70/8.00 MB"
    assert registry.memory_text("imx500", {}) == ""
    with pytest.raises(CompilerError, match="compiler must be one of rknn, vela, imx500, got 'nope'"):
        registry.profile_for("nope", "rk3588")


def helped(*words: str) -> str:
    """A command's --help, its lines joined (the help wraps at the terminal's width)."""
    result = cli(*words, "--help")
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def test_the_cli_help_names_the_compilers_from_the_registry():
    """What `npu check`, `npu compile` and `compilers install` say of the real compilers, word for word as the help
    said when it spelled them by hand."""
    assert registry.help_texts() == {
        "compilers": "rknn, vela or imx500",
        "referees": "rknn: node by node; vela: by operator counts; imx500: pass/fail and memory fit",
        "targets": "rk3588, rk3566 (rknn); ethos-u55-128, ethos-u85-256 (vela); imx500 (imx500, the default there)",
        "calib": "rknn, vela; imx500: at least 16, what MCT's mixed-precision search needs",
        "synthetic": " [imx500: default synthetic images]"}
    assert ("Also compile with this vendor compiler (rknn: node by node; vela: by operator counts; imx500: pass/fail and "
            "memory fit) and compare.") in helped("npu", "check")
    text = helped("npu", "compile")
    assert "Vendor compiler: rknn, vela or imx500." in text
    assert ("Compiler target: rk3588, rk3566 (rknn); ethos-u55-128, ethos-u85-256 (vela); imx500 (imx500, the default "
            "there).") in text
    assert "calibrate the INT8 build [imx500: default synthetic images]." in text
    assert "name <str> rknn, vela or imx500. [required]" in helped("compilers", "install")
    assert registry.estimated_on("vela", "ethos-u55-128") == "ethos-u55-128, Vela's default system config"
    assert registry.estimated_on("rknn", "rk3588") == registry.estimated_on("nope", "rk3588") == "rk3588"


def test_a_compiler_added_in_one_place_is_named_in_the_cli_help(fake_compiler, monkeypatch, synth_data, tmp_path):
    """The help of `npu check --referee`, `npu compile` and `compilers install`, and the estimate `npu compile` prints,
    come from the specs: the fake is named with how it referees, its target, and its estimate's own basis (not Vela's)."""
    from npuyolo.deploy.export import export_onnx

    from .test_deploy import randomised

    assert "imx500: pass/fail and memory fit; fake: by fake slots) and compare." in helped("npu", "check")
    text = helped("npu", "compile")
    assert "Vendor compiler: rknn, vela, imx500 or fake." in text
    assert "imx500 (imx500, the default there); fake-npu (fake)." in text
    assert "calibrate the INT8 build [imx500: default synthetic images]." in text  # the fake needs data
    assert "name <str> rknn, vela, imx500 or fake. [required]" in helped("compilers", "install")
    monkeypatch.setitem(registry.COMPILERS, "fake", dataclasses.replace(FAKE, needs_data=False, default_platform="fake-npu"))
    text = helped("npu", "compile")
    assert "fake-npu (fake, the default there)." in text and "[imx500, fake: default synthetic images]." in text
    assert "calibrates on (rknn, vela, fake; imx500: at least 16, what MCT" in " ".join(text.split())
    monkeypatch.setitem(registry.COMPILERS, "fake", dataclasses.replace(FAKE, min_calib=4, min_calib_why="its slots"))
    text = helped("npu", "compile")
    assert "(rknn, vela; imx500: at least 16, what MCT's mixed-precision search needs; fake: at least 4, its slots)" in text
    monkeypatch.setitem(registry.COMPILERS, "fake", FAKE)

    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "m.onnx", imgsz=64, head="npu")
    result = cli("npu", "compile", fp32, "--compiler", "fake", "-t", "fake-npu", "--data", synth_data, registry=tmp_path / "r.db")
    assert result.exit_code == 0, result.output
    assert "estimated inference time (fake-npu, the fake's own clock): 1.2 ms" in result.stdout  # 1.25, as Python rounds
    assert "Vela" not in result.stdout


def test_a_compiler_added_in_one_place_is_listed_compiled_planned_and_scored(fake_compiler, synth_data, tmp_path):
    from npuyolo.deploy.compile import compile_model
    from npuyolo.deploy.export import export_onnx
    from npuyolo.deploy.plan import build_plan
    from npuyolo.registry.db import Registry

    from .test_deploy import randomised

    listed = json.loads(cli("compilers", "list", "--json").stdout)["compilers"]
    assert {"name": "fake", "installed": True, "version": "1.0"}.items() <= next(c for c in listed if c["name"] == "fake").items()
    assert registry.profile_for("fake", "relu-only") == ("fake-npu", "relu-only")

    reg = Registry(tmp_path / "r.db")
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "m.onnx", imgsz=64, head="npu")  # 6 classes, as the data
    compiled = compile_model(reg, str(fp32), "fake", "fake-npu", synth_data)
    assert compiled.profile == "relu-only" and compiled.calibration == "8 images, not read"
    assert compiled.agreement.compiler == "fake" and compiled.agreement.mapped == 0  # no per-node map: nothing compared

    plan = build_plan(reg, str(fp32), ["relu-only"], synth_data, calib=4, holdout=4, sweep=False, vendor_int8=True,
                      workers=1)
    (row,) = plan.targets[0].rows  # no LeakyReLU, no twin, int8 only on relu-only: the export
    p = row.placement
    assert (p.compiler, p.compiler_status, p.compiler_cpu_ops, p.npu_ms) == ("fake 1.0", "compiled", 0, 1.25)
    assert p.compiled_file.endswith("model.fake")
    # scored as the vendor's INT8, by its own runtime: it "compiled" the FP32 graph unchanged, so it scores as FP32 does
    assert row.vendor is not None and row.vendor_error is None and row.vendor.runtime == "fake runtime (ONNX Runtime)"
    assert row.vendor.int8 == row.fp32 and row.vendor.int8_at_conf == row.fp32_at_conf


def test_a_compiler_added_in_one_place_reaches_deploy_eval_and_the_cli_tables(fake_compiler, synth_data, tmp_path,
                                                                               monkeypatch, capsys):
    """How `deploy eval` recognises, reads and starts a compiled file, and the units the CLI prints, come from the spec:
    the fake's `.fake` file is compiled, its manifest read with the spec's defaults, its memory printed in its own unit."""
    from npuyolo.cli.common import console
    from npuyolo.cli.tables import print_referee
    from npuyolo.deploy.compile import compile_model
    from npuyolo.deploy.eval import vendor
    from npuyolo.deploy.export import export_onnx
    from npuyolo.deploy.runtime import DeployError
    from npuyolo.registry.db import Registry

    from .test_deploy import randomised

    assert vendor.suffixes()[".fake"] == "fake"
    assert vendor.scored_files().endswith("model_imx_dense.onnx, or .fake")  # its suffix, as it describes nothing else
    fp32 = export_onnx(randomised("L4-relu"), tmp_path / "m.onnx", imgsz=64, head="npu")
    compiled = compile_model(Registry(tmp_path / "r.db"), str(fp32), "fake", "fake-npu", synth_data)
    built = compiled.build.fake_file
    assert vendor.is_compiled(built)
    art = vendor.read_compiled(built)
    assert (art.kind, art.compiler, art.onnx) == ("fake", "fake", Path(compiled.build.onnx).resolve())
    assert art.args == ("--model", str(art.path.resolve()))  # the spec's default arguments, no branch of its own
    assert art.contract.layout == "NCHW" and art.contract.imgsz == 64
    other = tmp_path / "m.bin"
    other.write_bytes(b"x")
    with pytest.raises(DeployError, match=r"not a compiled model deploy eval can score \(.*, or \.fake\)"):
        vendor.read_compiled(other)

    assert compiled.memory == "4/16 slots"  # the spec's unit, as the CLI prints it
    monkeypatch.setattr(console, "width", 250)
    print_referee([compiled])
    out = capsys.readouterr().out
    assert "memory" in out and "4/16 slots" in out and "KiB" not in out
