"""The photos a bare clone tests with: real, CC0, small, and a valid data set (issue 23, point 6)."""

from npuyolo.data.check import check_dataset

from .conftest import ROADSIGN4_MINI


def test_the_shipped_photos_are_a_small_valid_cc0_data_set(tmp_path):
    files = [p for p in ROADSIGN4_MINI.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 300_000
    assert "CC0" in (ROADSIGN4_MINI / "README.md").read_text() and "CC0" in (ROADSIGN4_MINI / "data.yaml").read_text()
    report = check_dataset(ROADSIGN4_MINI / "data.yaml", cache_dir=tmp_path)  # raises DataError on any problem
    assert {k: v.images for k, v in report.splits.items()} == {"train": 4, "val": 4}
    for split in ("train", "val"):
        classes = {int(line.split()[0]) for p in (ROADSIGN4_MINI / "labels" / split).glob("*.txt")
                   for line in p.read_text().splitlines() if line.strip()}
        assert classes == {0, 1, 2, 3}, split
