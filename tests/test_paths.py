"""paths.py: slugs of names that look alike, atomic writes that clean up after killed writers, and the output-file
rules (never the registry, never through a link, never a file npuyolo did not write)."""

from __future__ import annotations

import pytest


def test_series_names_that_slug_alike_get_their_own_folders(tmp_path):
    from npuyolo.paths import unique_slug

    assert unique_slug("a/b") != unique_slug("a_b") and unique_slug("a_b") == "a_b"


def test_partial_files_of_killed_writers_are_cleaned_up(tmp_path):
    from npuyolo.paths import write_text

    stale = tmp_path / ".report.md.partial-4194000"  # a pid that does not exist
    stale.write_text("half")
    write_text(tmp_path / "report.md", "whole")
    assert not stale.exists() and (tmp_path / "report.md").read_text() == "whole"


def test_check_output_file_unit(tmp_path):
    from npuyolo.errors import UnsafePathError
    from npuyolo.paths import check_output_file

    db = tmp_path / "r.db"
    db.write_bytes(b"SQLite format 3\x00")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="registry"):
        check_output_file(tmp_path / "dirlink" / "r.db", registry_path=db, force=True)  # through a linked folder
    assert check_output_file(tmp_path / "new" / "x.onnx", registry_path=db) == tmp_path / "new" / "x.onnx"
    assert (tmp_path / "new").is_dir()
    (tmp_path / "ours.onnx").write_text("x")
    assert check_output_file(tmp_path / "ours.onnx", registry_path=db, ours=lambda p: True)
    with pytest.raises(UnsafePathError, match="did not write"):
        check_output_file(tmp_path / "ours.onnx", registry_path=db, ours=lambda p: False)
