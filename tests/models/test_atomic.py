"""models.atomic: the one atomic-replace writer (checkpoints, exports, caches, reports)."""
from __future__ import annotations

import stat

import pytest

from models.atomic import atomic_path, write_text_atomic


def test_a_clean_write_replaces_the_target_with_an_ordinary_file(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and tmp != target  # format from the name
        assert not target.exists()  # nothing under the real name while writing
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "SHA256SUMS", "old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["SHA256SUMS"]
