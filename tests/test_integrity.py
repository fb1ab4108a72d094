"""Data integrity of the JSONL and audit logs: line-atomic appends, fsync at verdict changes, size rotation, and
a real ``main.py --headless`` process SIGKILLed mid-run whose files must parse line by line (no torn line)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liveness_app.outputs import AuditLog, JsonlWriter, LineFile, RunSummary
from liveness_app.types import FaceBox, FrameResult, TrackResult

ROOT = Path(__file__).resolve().parent.parent


def result(i: int, verdicts: dict[int, str], t: float | None = None) -> FrameResult:
    tracks = tuple(TrackResult(tid, FaceBox(10.0, 10.0, 50.0, 50.0, 0.9), 0.3, 0.3, v, True, None)
                   for tid, v in verdicts.items())
    return FrameResult(index=i, t=i / 10 if t is None else t, frame=None, tracks=tracks,
                       timings_ms={"detect": 1.0, "total": 2.0}, status="ok")


def test_fsync_happens_at_verdict_changes_and_on_close(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    w = JsonlWriter(tmp_path / "v.jsonl", sync_every_s=3600)
    seq = [{}, {1: "uncertain"}, {1: "uncertain"}, {1: "live"}, {1: "live"}, {1: "live", 2: "uncertain"},
           {1: "attack", 2: "uncertain"}, {2: "uncertain"}]
    counts = []
    for i, v in enumerate(seq):
        w.write(result(i, v))
        counts.append(len(synced))
    # syncs only where some track's verdict changed: live (3) and attack (6)
    assert [b - a for a, b in zip([0] + counts, counts)] == [0, 0, 0, 1, 0, 0, 1, 0]
    w.close()
    assert len(synced) == 3 and w.lines == len(seq)
    audit = AuditLog(tmp_path / "a.jsonl")
    before = len(synced)
    audit.record(result(0, {1: "uncertain"}))
    audit.record(result(1, {1: "uncertain"}))  # no change, no line, no sync
    audit.record(result(2, {1: "live"}))
    assert len(synced) - before == 2
    audit.close()


def test_rotation_by_size_keeps_whole_lines_and_n_backups(tmp_path):
    path = tmp_path / "v.jsonl"
    w = JsonlWriter(path, max_bytes=4000, backups=2)
    for i in range(300):
        w.write(result(i, {1: "live"}))
    w.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["v.jsonl", "v.jsonl.1", "v.jsonl.2"]
    assert all(f.stat().st_size <= 4000 for f in files)
    frames = [json.loads(line)["frame"] for f in (files[2], files[1], files[0]) for line in f.read_text().splitlines()]
    assert frames == list(range(300 - len(frames), 300))  # newest lines kept, in order, none torn
    lf = LineFile(tmp_path / "x.log", max_bytes=10, backups=0)
    lf.write_line("0123456789")  # larger than max_bytes alone: still written whole
    lf.write_line("abc")
    lf.close()
    assert (tmp_path / "x.log").read_text() == "abc\n" and not (tmp_path / "x.log.1").exists()


def test_run_summary_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(RunSummary, "TIMING_WINDOW", 50)
    monkeypatch.setattr(RunSummary, "MAX_TRACKS", 20)
    s = RunSummary()
    for i in range(1000):
        s.add(result(i, {i // 10: "live" if i % 2 else "attack"}))
    d = s.to_dict()
    assert all(len(v) == 50 for v in s.timings.values()) and len(s.final) == 20
    assert d["tracks"] == 100 and sum(d["final_verdicts"].values()) == 100
    assert d["timings"]["detect"]["total_ms"] == pytest.approx(1000.0)


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"main.py exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout} s")


def test_sigkill_mid_run_leaves_only_complete_lines(face_clip, tiny_checkpoint, tmp_path):
    clip, _ = face_clip
    out, audit = tmp_path / "v.jsonl", tmp_path / "audit.jsonl"
    cmd = [sys.executable, str(ROOT / "main.py"), "--headless", "--source", str(clip), "--loop",
           "--model", str(tiny_checkpoint), "--backend", "torch", "--output", str(out), "--audit-log", str(audit),
           "--log-dir", str(tmp_path / "logs"), "--log-level", "WARNING"]
    for kill_at in (12, 30):  # two kills at different points; the second run truncates and starts again
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_lines(out, kill_at, proc, timeout=300)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        data = out.read_bytes()
        assert data.endswith(b"\n"), data[-200:]  # line-atomic appends: no torn last line at all
        recs = [json.loads(line) for line in data.decode().splitlines()]
        assert len(recs) >= kill_at and [r["frame"] for r in recs] == list(range(len(recs)))
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        assert events and all({"track", "verdict", "previous"} <= set(e) for e in events)
    assert (tmp_path / "logs" / "liveness.log").exists()
