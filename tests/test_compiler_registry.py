"""One compiler registry (issue 32, point 3): a compiler is one `CompilerSpec` in `compilers/registry.py`, saying how it
installs, which profiles it serves, how it builds, is compared, is read by a plan and is scored. A fake compiler whose
build and runtime are pure Python (no venv), registered in that one place, is listed, compiled, planned and scored."""

import dataclasses
import json
import shutil
import sys

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
        return {"rows_npu": 3, "rows_cpu": 0, "inference_ms": 1.25}

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
    in_process=CompilerEnv("fake", "1.0", sys.executable, "", "", []))


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
    with pytest.raises(CompilerError, match="compiler must be one of rknn, vela, imx500, got 'nope'"):
        registry.profile_for("nope", "rk3588")


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
