"""Atomic writes leave either the complete result or nothing."""

from __future__ import annotations

import pytest

from ctbird.errors import OutputError
from ctbird.io import atomic_output_dir, check_output_dir, write_text_atomic
from ctbird.io.atomic import MARKER_NAME


def test_atomic_file_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with pytest.raises(OutputError):
        write_text_atomic(tmp_path / "missing-folder" / "b.txt", "x")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_output_dir_is_all_or_nothing(tmp_path, error):
    out = tmp_path / "out"
    with pytest.raises(error):
        with atomic_output_dir(out, force=False) as staging:
            (staging / "half.npy").write_bytes(b"partial")
            raise error()
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(out, force=False) as staging:
        (staging / "done.txt").write_text("ok")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "done.txt"]


def test_force_replaces_a_ctbird_folder_as_a_whole_and_failures_keep_the_old_one(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out, force=False) as staging:
        (staging / "old.txt").write_text("old")
        (staging / "metrics.json").write_text("{}")
    with pytest.raises(OutputError, match="--force"):
        check_output_dir(out, force=False)
    with pytest.raises(ValueError):
        with atomic_output_dir(out, force=True) as staging:
            (staging / "new.txt").write_text("new")
            raise ValueError("boom")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "metrics.json", "old.txt"]
    with atomic_output_dir(check_output_dir(out, force=True), force=True) as staging:
        (staging / "new.txt").write_text("new")
        (staging / "metrics.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "metrics.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_may_not_contain_or_sit_inside_the_input(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    with pytest.raises(OutputError, match="overlaps"):
        check_output_dir(tmp_path, force=True, inputs=(series,))
    with pytest.raises(OutputError, match="overlaps"):
        check_output_dir(series / "results", force=True, inputs=(series,))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_dir(tmp_path / "file", force=True)
