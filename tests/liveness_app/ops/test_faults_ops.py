"""Operations: sd_notify over a real NOTIFY_SOCKET (READY, WATCHDOG from the frame loop, STOPPING), a watchdog
that stops pinging when the loop stops, rotating log files, and a short soak checking its own bookkeeping."""
import io
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from liveness_app import cli
from liveness_app.ops.logs import setup_logging
from liveness_app.ops.sdnotify import Notifier, Watchdog, watchdog_interval_s

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def drain(sock) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except socket.timeout:
            return out


def test_notifier_and_watchdog_over_a_real_socket(notify_socket):
    path, sock = notify_socket
    n = Notifier(str(path))
    now = [0.0]
    wd = Watchdog(n, interval_s=5.0, clock=lambda: now[0])
    assert n.ready("scoring") and n.status("x")
    for t in (0.0, 1.0, 4.9, 5.0, 5.1, 12.0):
        now[0] = t
        wd.alive()
    assert n.stopping()
    n.close()
    assert drain(sock) == ["READY=1\nSTATUS=scoring", "STATUS=x", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1",
                           "STOPPING=1"]
    assert wd.pings == 3
    assert not Notifier("").enabled and not Notifier("").ready()  # outside systemd: a no-op
    # a receiver that stops reading never blocks the app: messages beyond its queue are dropped
    n = Notifier(str(path))
    t0 = time.monotonic()
    sent = sum(n.watchdog() for _ in range(500))
    assert time.monotonic() - t0 < 5.0 and 0 < sent < 500
    n.close()
    drain(sock)
    assert not Notifier("relative/path").enabled
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None  # another process's
    assert watchdog_interval_s({}) is None


def test_headless_run_notifies_systemd(notify_socket, face_clip, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    path, sock = notify_socket
    clip, placements = face_clip
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1")  # ping at every frame: the loop is what keeps the watchdog fed
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    msgs: list[str] = []
    done = threading.Event()

    def receive():  # systemd reads its socket continuously; so does this thread
        while not done.is_set():
            msgs.extend(drain(sock))

    reader = threading.Thread(target=receive)
    reader.start()
    try:
        rc = cli.main(["--headless", "--source", str(clip), "--model", str(tiny_checkpoint), "--backend", "torch",
                       "--log-dir", str(tmp_path / "logs")])
    finally:
        done.set()
        reader.join()
    msgs.extend(drain(sock))
    assert rc == 0
    assert msgs[0].startswith("READY=1") and msgs[-1] == "STOPPING=1"
    assert msgs.count("WATCHDOG=1") == len(placements)  # one per processed frame at this interval
    capsys.readouterr()


def test_log_files_rotate_in_the_configured_folder(tmp_path, monkeypatch):
    import logging
    import logging.handlers

    monkeypatch.setattr("liveness_app.ops.logs.MAX_BYTES", 2000)
    path = setup_logging("INFO", str(tmp_path / "logs"))
    try:
        for i in range(200):
            logging.getLogger("liveness_app.test").info("line %d %s", i, "x" * 40)
        assert path == tmp_path / "logs" / "liveness.log"
        assert (tmp_path / "logs" / "liveness.log.1").exists()
        assert sorted(p.name for p in (tmp_path / "logs").iterdir())[-1] == "liveness.log.5"  # 5 backups kept
        monkeypatch.setenv("LIVENESS_LOG_DIR", str(tmp_path / "env"))
        assert setup_logging("INFO") == tmp_path / "env" / "liveness.log"  # replaces our handlers, no duplicates
        ours = [h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
        assert len(ours) == 1
        blocked = tmp_path / "file"
        blocked.write_text("")
        assert setup_logging("INFO", str(blocked / "sub")) is None  # unwritable: console only, no crash
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_liveness_handler", False)]:
            root.removeHandler(h)
            h.close()


def test_short_soak_bookkeeping(face_clip, tiny_checkpoint):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import soak
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    clip, _ = face_clip
    out = io.StringIO()
    report = soak.soak(240, 60, str(clip), str(tiny_checkpoint), "torch", warmup=60, out=out)
    rows, v = report["rows"], report["verdict"]
    assert [r["frames"] for r in rows] == [60, 120, 180, 240]
    assert all(r["rss_mib"] > 10 and r["fps"] > 0 and r["cpu_ms"] > 0 and r["threads"] >= 1 for r in rows)
    assert v["warmup_frames"] == 60 and v["threads_end"] == v["threads_after_warmup"]
    assert v["max_tracks"] <= 4 * 7 and isinstance(v["memory_growth_pct"], float)
    assert "rss_mib" in out.getvalue() and soak.rss_mib() > 0
    with pytest.raises(ValueError, match="two windows"):
        soak.judge(rows[:1], warmup=60)
