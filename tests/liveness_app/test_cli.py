"""The command line: headless runs end to end, TOML config + flag overrides, one-line errors with exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from liveness_app.cli import main, parse_config
from liveness_app.config import AppConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_main_py_headless_end_to_end(face_clip, tiny_checkpoint, tmp_path):
    path, placements = face_clip
    out, audit = tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    # run through main.py itself, and prove the headless path never imports Qt
    code = ("import runpy, sys; sys.argv = ['main.py'] + sys.argv[1:]\n"
            "try:\n    runpy.run_path('main.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert 'PySide6' not in sys.modules, 'headless imported Qt'\n"
            "    raise\n")
    proc = subprocess.run([sys.executable, "-c", code, "--headless", "--source", str(path), "--output", str(out),
                           "--model", str(tiny_checkpoint), "--backend", "torch", "--audit-log", str(audit)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run summary" in proc.stdout and f"frames            {len(placements)}" in proc.stdout
    for stage in ("detect", "track", "crop", "score", "smooth"):
        assert f"  {stage} " in proc.stdout
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(len(placements)))
    k = AppConfig().track_confirm_hits - 1  # the face is a track from its 3rd frame on (3 of the last 5)
    assert all(r["faces"] == [] for r in recs[:k])
    assert all(len(r["faces"]) == 1 and r["faces"][0]["track"] == 1 for r in recs[k:])
    assert recs[-1]["faces"][0]["verdict"] in ("live", "attack")
    assert audit.read_text().count("\n") >= 2


def test_max_frames_loop_and_summary_json(face_clip, tiny_checkpoint, tmp_path, capsys):
    path, placements = face_clip
    rc = main(["--headless", "--source", str(path), "--output", str(tmp_path / "o.jsonl"), "--model",
               str(tiny_checkpoint), "--backend", "torch", "--loop", "--max-frames", str(len(placements) + 6),
               "--summary-json", str(tmp_path / "s.json")])
    assert rc == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == len(placements) + 6  # looped past the end
    summary = json.loads((tmp_path / "s.json").read_text())
    # the face jumps back to its start when the clip loops: that is a new track
    assert summary["frames"] == len(placements) + 6 and summary["tracks"] == 2
    assert "run summary" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--source", "{tmp}/missing.mp4"], ["missing.mp4"]),
    (["--model", "{tmp}/nope.safetensors"], ["nope.safetensors"]),
    (["--max-faces", "0"], ["max_faces", "[1, 64]"]),
    (["--config", "{tmp}/absent.toml"], ["absent.toml"]),
])
def test_bad_input_exits_2_with_one_line(args, words, face_clip, tiny_checkpoint, tmp_path, capsys):
    base = ["--headless", "--source", str(face_clip[0]), "--model", str(tiny_checkpoint), "--backend", "torch"]
    rc = main(base + [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in words), err


def test_bad_model_file_is_one_line(face_clip, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["--headless", "--source", str(face_clip[0]), "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot load model") and "bad.safetensors" in err[0], err


def test_toml_config_same_keys_as_flags_and_flags_win(tmp_path):
    cfg = tmp_path / "app.toml"
    cfg.write_text('source = "clip.mp4"\nmax-faces = 2\nloop = true\nbackend = "cpu"\n'
                   '[smoothing]\nhysteresis = 0.1\nema_tau_s = 1\n[ui]\nkiosk = true\n')
    config, _ = parse_config(["--config", str(cfg), "--max-faces", "3"])
    assert (config.source, config.max_faces, config.loop, config.backend) == ("clip.mp4", 3, True, "cpu")
    assert config.hysteresis == 0.1 and config.ema_tau_s == 1.0 and config.kiosk
    assert config.kiosk_exit_sequence == "Ctrl+Shift+Q" and config.save_crops is False


def test_config_validation_names_the_key(tmp_path):
    (tmp_path / "a.toml").write_text("max_fcaes = 2\n")
    with pytest.raises(ConfigError, match="max_fcaes"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("threshold = 1.5\n")
    with pytest.raises(ConfigError, match=r"threshold must be in \[0, 1\]"):
        load_config(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text("source = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="backend must be one of"):
        AppConfig(backend="gpu")
    assert AppConfig().source_spec == 0 and AppConfig(source="3").source == "3"
    assert load_config(None, source="3").source == 3  # digits mean a camera index, as on the command line


def test_headless_on_a_camera_that_fails_mid_run(face_clip, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """Cameras go through the latest-frame reader; an unplugged camera is reopened and the run goes on."""
    import liveness_app.cli as cli
    from liveness_app.sources import VideoCaptureSource
    from media import FlakyCamera

    plan = iter([dict(fail_after=5), dict(opens=False), dict()])
    made = []

    def fake_open_source(spec, loop=False, folder_fps=10.0):
        assert spec == 0  # the config asked for camera 0

        def factory(s):
            made.append(s)
            return FlakyCamera(face_clip[0], **next(plan, {}))
        return VideoCaptureSource(spec, capture_factory=factory)

    monkeypatch.setattr(cli, "open_source", fake_open_source)
    out = tmp_path / "cam.jsonl"
    config = load_config(None, source="0", headless=True, output=str(out), model=str(tiny_checkpoint),
                         backend="torch", max_frames=10, reopen_backoff_s=0.05, no_signal_after_s=0.1)
    assert cli.run_headless(config, str(tmp_path / "s.json")) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 10 and summary["no_signal"] == 1 and len(made) == 3
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 10 and all(b["frame"] > a["frame"] and b["t"] > a["t"] for a, b in zip(recs, recs[1:]))
    assert "run summary" in capsys.readouterr().out
