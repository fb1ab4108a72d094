"""Privacy and access: no frames or crops stored unless enabled (then within the retention limit), no network
socket opened by a real headless run, and SIGTERM (how systemd stops the service) ends it cleanly.

Kiosk access (exit only by the configured key sequence, no visible controls, so no setting can be changed) is
tested on the real window in tests/liveness_app/ui/test_ui_kiosk.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from liveness_app import cli

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".npy", ".tif", ".tiff"}


def images_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]


def test_no_images_stored_by_default_and_crops_only_within_retention(face_clip, tiny_checkpoint, tmp_path, capsys):
    clip, placements = face_clip
    run = tmp_path / "default"
    rc = cli.main(["--headless", "--source", str(clip), "--model", str(tiny_checkpoint), "--backend", "torch",
                   "--output", str(run / "v.jsonl"), "--audit-log", str(run / "audit.jsonl"),
                   "--log-dir", str(run / "logs")])
    assert rc == 0
    assert images_under(run) == [] and not (run / "crops").exists()
    for line in (run / "v.jsonl").read_text().splitlines() + (run / "audit.jsonl").read_text().splitlines():
        assert len(line) < 2000 and "crop" not in json.loads(line)  # records carry no pixels
    # enabled explicitly (config file), with a retention limit of 2 files
    enabled = tmp_path / "enabled"
    enabled.mkdir()
    (enabled / "kiosk.toml").write_text('[audit]\nsave_crops = true\ncrops_retention = 2\n'
                                        'min_evidence_frames = 1\nmin_evidence_s = 0.0\nhysteresis = 0.0\n')
    rc = cli.main(["--headless", "--config", str(enabled / "kiosk.toml"), "--source", str(clip), "--model",
                   str(tiny_checkpoint), "--backend", "torch", "--audit-log", str(enabled / "audit.jsonl"),
                   "--loop", "--max-frames", str(3 * len(placements)), "--log-dir", str(enabled / "logs")])
    assert rc == 0
    events = [json.loads(x) for x in (enabled / "audit.jsonl").read_text().splitlines()]
    crops = images_under(enabled)
    assert 1 <= len(crops) <= 2 and all(p.parent == enabled / "crops" for p in crops)
    assert sum("crop" in e for e in events) >= len(crops)
    capsys.readouterr()


def inet_sockets(pid: int) -> list[str]:
    """Internet sockets (tcp/udp, v4/v6) held by a process: its socket fds matched against /proc/net tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if len(cols) > 9 and cols[9] in inodes:
                found.append(f"{table} {cols[1]} -> {cols[2]} state {cols[3]}")
    return found


def test_headless_run_opens_no_network_socket_and_stops_on_sigterm(face_clip, tiny_checkpoint, tmp_path):
    clip, _ = face_clip
    out = tmp_path / "v.jsonl"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--source", str(clip), "--loop",
                             "--model", str(tiny_checkpoint), "--backend", "torch", "--output", str(out),
                             "--log-dir", str(tmp_path / "logs"), "--log-level", "WARNING"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while not (out.exists() and out.read_bytes().count(b"\n") >= 5):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < end, "no verdicts within 300 s"
            time.sleep(0.1)
        fds = list(Path(f"/proc/{proc.pid}/fd").iterdir())
        assert fds  # we can see the process's descriptors, so an empty result below means something
        assert inet_sockets(proc.pid) == []
        proc.send_signal(signal.SIGTERM)  # systemd's stop: finish the frame, write the summary, exit 0
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    assert "run summary" in stdout
    assert out.read_bytes().endswith(b"\n")


def test_inet_socket_detector_can_fail():
    """The check above must see a listening socket when there is one (a test that cannot fail proves nothing)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert any("tcp" in x for x in inet_sockets(os.getpid()))
    finally:
        s.close()
