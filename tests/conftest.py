import os
import shutil
from pathlib import Path

import npuyolo  # noqa: F401  (sets the offline switches before anything imports ultralytics)
import pytest

from npuyolo.data.synth import synthesize
from npuyolo.train.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
ROADSIGN4 = REPO.parent / "shared" / "datasets" / "roadsign4"  # the whole set: benches and the end-to-end test only
ROADSIGN4_MINI = REPO / "tests" / "fixtures" / "roadsign4_mini"  # 8 of its CC0 photos, shipped: every clone has them


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small synthetic sign set, shared read-only by the tests (copy it before breaking it)."""
    return synthesize(tmp_path_factory.mktemp("synth"), n_train=24, n_val=8, imgsz=96, seed=0)


@pytest.fixture
def data_copy(synth_data, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(synth_data.parent, dst)
    yaml_path = dst / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(str(synth_data.parent.resolve()), str(dst.resolve())))
    return yaml_path


@pytest.fixture
def tiny_recipe() -> Recipe:
    return Recipe.load(epochs=1, imgsz=64, batch=8, workers=0, plots=False)  # plots cost seconds; one report test keeps them


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NPUYOLO_REGISTRY", str(tmp_path / "registry" / "npuyolo.db"))
    yield


def pytest_report_header(config):
    return f"npuyolo tests; roadsign4 present: {ROADSIGN4.is_dir()}; cpus: {os.cpu_count()}"


def perturbed(model, scale: float = 0.05, seed: int = 0, class_bias: float | None = None):
    """Untrained YOLO heads predict near-constant outputs; small random weight noise makes tests meaningful.

    The DFL conv (fixed bin values, requires_grad False) is left alone; `class_bias` resets the class priors
    so that NMS keeps boxes.
    """
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)
        if class_bias is not None:
            for branch in model.model[-1].cv3:
                branch[-1].bias.fill_(class_bias)
    return model.eval()


def kill_after_first_epoch(cmd: list[str], db, run_id: int, env_extra: dict | None = None) -> None:
    """Start an npuyolo training command, SIGKILL it once the registry shows its first epoch."""
    import signal
    import subprocess
    import time

    env = {**os.environ, "NPUYOLO_REGISTRY": str(db), **(env_extra or {})}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while epochs_in(db, run_id) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def epochs_in(db, run_id: int) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM epochs WHERE run_id = ?", (run_id,)).fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


@pytest.fixture
def compilers_dir(tmp_path, monkeypatch):
    """An empty compilers folder: no vendor compiler installed, whatever this machine has."""
    monkeypatch.setenv("NPUYOLO_COMPILERS_DIR", str(tmp_path / "compilers"))
    return tmp_path / "compilers"


@pytest.fixture
def evil_pt(tmp_path) -> tuple[Path, Path]:
    """A checkpoint whose unpickling would run `touch <marker>`: (the .pt, the marker that must never appear)."""
    import torch

    from .helpers import Payload

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "model": Payload(marker), "ema": None, "train_args": {}}, path)
    return path, marker
