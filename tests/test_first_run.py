"""What a new user meets on a first run: no display, ``--output -``, a quiet console, a clean home folder, the
backend choice at INFO, and the demo's ground-truth scorecard. Real processes, real mediapipe and OpenVINO."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liveness_app.cli import display_problem

ROOT = Path(__file__).resolve().parent.parent
NATIVE_NOISE = ("INFO: [", "W0000", "Logging before InitGoogle", "XNNPACK", "TensorFlow Lite")


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment minus what conftest.py sets for in-process tests, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LIVENESS_CACHE_DIR", "LIVENESS_LOG_DIR", "MPLCONFIGDIR", "QT_QPA_PLATFORM", "DISPLAY",
                        "WAYLAND_DISPLAY") and not k.startswith("XDG_")}
    env.update(extra)
    return env


def run_main(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_no_display_is_one_line_and_exit_2_before_qt(tmp_path):
    code = ("import runpy, sys; sys.argv = ['main.py'] + sys.argv[1:]\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n    assert 'PySide6' not in sys.modules, 'Qt was imported'\n"
            "    raise\n") % str(ROOT / "main.py")
    env = clean_env(LIVENESS_CACHE_DIR=str(tmp_path / "c"), LIVENESS_LOG_DIR=str(tmp_path / "l"))
    for extra in ({}, {"QT_QPA_PLATFORM": "xcb"}):
        proc = subprocess.run([sys.executable, "-c", code, "--demo"], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error: no display"), lines
        assert "--headless" in lines[0] and "--images" in lines[0]


@pytest.mark.parametrize("env, platform, ok", [
    ({}, "linux", False),
    ({"DISPLAY": ":0"}, "linux", True),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
    ({"QT_QPA_PLATFORM": "offscreen"}, "linux", True),
    ({"QT_QPA_PLATFORM": "eglfs"}, "linux", True),  # kiosks without a display server
    ({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "w"}, "linux", False),
    ({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"}, "linux", False),
    ({}, "darwin", True),
    ({}, "win32", True),
])
def test_display_problem(env, platform, ok):
    assert (display_problem(env, platform) is None) == ok


def test_native_noise_is_dropped_and_everything_else_on_fd_2_passes(capfd):
    from liveness_app.quiet import native_stderr_filtered

    with native_stderr_filtered() as dropped:
        os.write(2, b"INFO: [environment.cc:36] Creating LiteRT environment with options\n"
                    b"W0000 00:00:1796173786.567206    3636 inference_runner_litert.cc:1433] Input tensor ...\n"
                    b"WARNING: Logging before InitGoogle() is written to STDERR\n"
                    b"a real warning from another thread\n")
        print("python stderr too", file=sys.stderr)
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["a real warning from another thread", "python stderr too"]
    assert len(dropped) == 3 and dropped[0].startswith("INFO: [environment.cc:36]")


def test_output_dash_is_standard_output_and_the_summary_goes_to_stderr(face_clip, tiny_checkpoint, tmp_path):
    clip, placements = face_clip
    env = clean_env(LIVENESS_CACHE_DIR=str(tmp_path / "c"), LIVENESS_LOG_DIR=str(tmp_path / "l"))
    proc = run_main(["--headless", "--source", clip, "--model", tiny_checkpoint, "--backend", "torch",
                     "--output", "-"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in proc.stdout.splitlines()]  # nothing but records on stdout
    assert [r["frame"] for r in recs] == list(range(len(placements)))
    assert "run summary" in proc.stderr and "verdicts          - (" in proc.stderr
    assert not (tmp_path / "-").exists()


def test_a_first_run_is_quiet_says_the_backend_at_info_and_writes_only_our_folders(face_clip, tiny_checkpoint,
                                                                                    tmp_path):
    """HOME is a fresh folder with no XDG overrides: the OpenVINO export (first run), the face detector and a
    matplotlib import (mediapipe's) must leave only the documented cache and log folders there; stderr has
    none of mediapipe's native log lines and no WARNING for the normal "auto chose the CPU" decision."""
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(HOME=str(home))
    clip, _ = face_clip
    proc = run_main(["--headless", "--source", clip, "--model", tiny_checkpoint, "--output", tmp_path / "v.jsonl"],
                    env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in NATIVE_NOISE:
        assert noise not in proc.stderr, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert "INFO models.deploy.runtime: auto chose" in proc.stderr  # the choice is still said, as news
    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2
    from media import face_image
    cv2.imwrite(str(photos / "a.jpg"), face_image("grace_hopper"))
    proc = run_main(["--images", photos, "--model", tiny_checkpoint, "--backend", "cpu"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    ours = (".cache/liveness-app", ".local/state/liveness-app")  # the documented cache and log folders (Linux)
    unexpected = [p for p in found if not any(p == r or p.startswith(r + "/") or r.startswith(p + "/") for r in ours)]
    assert unexpected == [], unexpected
    assert not (home / "intel").exists()  # OpenVINO's telemetry id and counter
    assert any(p.startswith(".cache/liveness-app/openvino") for p in found)  # the export was really made


def test_demo_headless_prints_agreement_per_segment(tiny_checkpoint, tmp_path):
    from liveness_app.config import DEMO_VIDEO
    if not DEMO_VIDEO.is_file():
        pytest.skip("assets/demo.mp4 is not built (scripts/make_demo_clip.py)")
    env = clean_env(LIVENESS_CACHE_DIR=str(tmp_path / "c"), LIVENESS_LOG_DIR=str(tmp_path / "l"))
    proc = run_main(["--demo", "--headless", "--model", tiny_checkpoint, "--backend", "torch", "--max-frames", 180,
                     "--output", tmp_path / "v.jsonl", "--summary-json", tmp_path / "s.json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo scorecard" in proc.stdout
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[-6:] if line.startswith("  ")}
    assert rows["live"][1:3] == ["live", "150"] and rows["print"][1:3] == ["attack", "30"]
    assert rows["replay"][2] == "0" and rows["faceswap"][3] == "0"
    card = json.loads((tmp_path / "s.json").read_text())["demo_scorecard"]
    live = card["segments"][0]
    assert live["name"] == "live" and live["frames"] == 150
    decided = live["live"] + live["attack"]
    assert decided > 100 and live["agreement"] == pytest.approx(live["live"] / decided, abs=1e-4)
