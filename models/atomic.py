"""Atomic file writes, the one way every writer in the project replaces a file.

The content goes to a fresh temporary sibling (same folder, so the rename never crosses a file system; same
suffix, so writers that infer a format from the name still do), which is renamed over the target with
``os.replace`` only when writing finished: a crash, a full disk or an exception never leaves a half-written
file under the real name, and a concurrent reader sees the old file or the new one. Folders that must appear
complete (the export cache, OpenVINO's .xml + .bin pair) are built beside their target and renamed the same way
by their owners.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

FILE_MODE = 0o644  # mkstemp makes 0600; what we write are ordinary files


@contextlib.contextmanager
def atomic_path(target: "str | Path") -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write; on a clean exit it replaces ``target``, on an
    exception it is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.tmp.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: "str | Path", text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; returns ``target`` as a Path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
