import os
import shutil
from pathlib import Path

import npuyolo  # noqa: F401  (sets the offline switches before anything imports ultralytics)
import pytest

from npuyolo.data.synth import synthesize
from npuyolo.train.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
ROADSIGN4 = REPO.parent / "shared" / "datasets" / "roadsign4"


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
    return Recipe.load(epochs=1, imgsz=64, batch=8, workers=0)


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NPUYOLO_REGISTRY", str(tmp_path / "registry" / "npuyolo.db"))
    yield


def pytest_report_header(config):
    return f"npuyolo tests; roadsign4 present: {ROADSIGN4.is_dir()}; cpus: {os.cpu_count()}"
