"""A vendor compiler as a referee: which of our profiles each compiler target checks (`profile_for`, from the compiler
registry), how its placement compares with ours (`agree.py`: per node, or for the whole graph), the compile result and
its registry record. The export-then-compile wiring of `npu compile` is `npuyolo.deploy.compile` (the layer that owns
the exporter)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from npuyolo.compilers.agree import Agreement, Build, agreement, imx_agreement
from npuyolo.compilers.calibration import calibration_arrays, write_calibration
from npuyolo.compilers.envs import CompilerError
from npuyolo.compilers.registry import estimated_on, memory_text, profile_for
from npuyolo.npu.analyze import TargetReport

if TYPE_CHECKING:
    from npuyolo.registry.db import Registry

__all__ = ["MAX_SIDE", "Agreement", "Build", "CompileResult", "agreement", "calibration_arrays", "imx_agreement",
           "input_side", "profile_for", "record", "write_calibration"]

@dataclass
class CompileResult:
    model_ref: str
    run_id: int | None
    profile: str
    build: Build
    calibration: str
    ours: TargetReport
    agreement: Agreement

    @property
    def memory(self) -> str:
        """The build's memory figures with their unit, as its compiler reports them (`CompilerSpec.memory_text`)."""
        return memory_text(self.build.compiler, getattr(self.build, "memory", None) or {})

    @property
    def estimated_on(self) -> str:
        """What the build's NPU time estimate holds for: its platform and what its compiler assumes
        (`CompilerSpec.estimate`: Vela's default system config)."""
        return estimated_on(self.build.compiler, self.build.platform)

    def as_dict(self, with_nodes: bool = False) -> dict:
        from dataclasses import asdict

        build = self.build.as_dict()
        if not with_nodes:
            build.pop("rows")
            build.pop("mappings")
        return {"model_ref": self.model_ref, "run_id": self.run_id, "profile": self.profile, "calibration": self.calibration,
                "onnx": self.build.onnx, "build": build, "agreement": asdict(self.agreement),
                "ours": self.ours.as_dict(with_nodes=False)}


MAX_SIDE = 4096  # px per side; calibration images are made at the input's size (100000² would be 30 GB each)


def input_side(onnx_path: Path) -> int:
    """The side of the ONNX file's static, square-sized input, refused (before anything is allocated for it) when it is
    symbolic or beyond MAX_SIDE: a file may declare any size."""
    import onnx

    dims = [d.dim_value if d.HasField("dim_value") else 0
            for d in onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
    h, w = dims[-2:] if len(dims) == 4 else (0, 0)
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        shown = "x".join(str(d or "?") for d in dims) or "no shape"
        raise CompilerError(f"{Path(onnx_path).name}: input {shown}; npu compile needs a static [1, 3, H, W] input with "
                            f"sides up to {MAX_SIDE} px")
    return int(w)


def record(registry: Registry, result: CompileResult) -> int:
    """One registry row per compile (per-node placement inside); for a run, the log also becomes a run artefact."""
    b = result.build
    row = registry.add_compiler_run(run_id=result.run_id, model_ref=result.model_ref, onnx_path=b.onnx, compiler=b.compiler,
                                    version=b.version, target=result.profile, log_path=b.log,
                                    result=result.as_dict(with_nodes=True))
    if result.run_id is not None:
        registry.add_artifact(result.run_id, f"compiler/{b.compiler}/{b.platform}/log", b.log,
                              {"version": b.version, "agreement": result.agreement.share})
    return row
