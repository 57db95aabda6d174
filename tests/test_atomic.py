"""``litdistill.atomic``: every writer leaves the old file or the new one, no temp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from litdistill import atomic


def test_write_file_keeps_the_suffix_and_leaves_no_temp(tmp_path: Path) -> None:
    seen = []

    def fill(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"png")

    atomic.write_file(tmp_path / "plot.png", fill)
    assert seen[0].suffix == ".png" and seen[0].parent == tmp_path
    assert (tmp_path / "plot.png").read_bytes() == b"png"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_failed_fill_keeps_the_old_file(tmp_path: Path) -> None:
    atomic.write_bytes(tmp_path / "a.bin", b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic.write_file(tmp_path / "a.bin", broken)
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_write_dir_replaces_or_keeps_an_existing_folder(tmp_path: Path) -> None:
    atomic.write_dir(tmp_path / "d", lambda t: (t / "f").write_text("1"))
    atomic.write_dir(tmp_path / "d", lambda t: (t / "f").write_text("2"), replace=False)
    assert (tmp_path / "d" / "f").read_text() == "1"
    atomic.write_dir(tmp_path / "d", lambda t: (t / "f").write_text("3"))
    assert (tmp_path / "d" / "f").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
