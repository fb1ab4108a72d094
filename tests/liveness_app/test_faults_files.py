"""Fault injection on files: missing, truncated, altered, foreign and pickled weights; tampered assets; bad config.

Every case goes through the app's own entry points (``main.py --headless`` in-process and ``--check``): the
scorer is refused with one line naming the file and the reason, exit code 2, never a traceback. A pickle that
would run code when unpickled is refused before anything unpickles it (its payload would create a file).
"""
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from liveness_app import cli
from liveness_app.config import AppConfig
from liveness_app.ops import assets
from liveness_app.ops.health import run_checks
from liveness_app.scorer import load_weights

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs ``Path(marker).touch()``: proof of code execution if anything unpickles it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def run_cli(capsys, model, clip):
    rc = cli.main(["--headless", "--source", str(clip), "--model", str(model), "--backend", "torch",
                   "--max-frames", "2"])
    return rc, capsys.readouterr().err.strip().splitlines()


def bad_models(tiny_checkpoint: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the error must contain)."""
    data = tiny_checkpoint.read_bytes()
    out = {"missing": (tmp / "nope.safetensors", "not found")}
    (tmp / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = (tmp / "truncated.safetensors", "truncated")
    altered = bytearray(data)
    altered[-100] ^= 0xFF  # a tensor byte: the file still parses
    (tmp / "altered.safetensors").write_bytes(bytes(altered))
    out["altered"] = (tmp / "altered.safetensors", "altered")
    save_file({"visual.conv1.weight": torch.zeros(8, 3, 4, 4)}, str(tmp / "foreign.safetensors"))
    out["foreign"] = (tmp / "foreign.safetensors", "not a La-SoftMoE CLIP checkpoint")
    (tmp / "empty.safetensors").write_bytes(b"")
    out["empty"] = (tmp / "empty.safetensors", "too short")
    for name in ("evil.pt", "evil.safetensors"):
        with open(tmp / name, "wb") as f:
            pickle.dump({"state_dict": Payload(tmp / "PWNED")}, f)
        out[name] = (tmp / name, "safetensors")
    return out


def test_bad_weights_are_refused_with_one_line_and_exit_2(tiny_checkpoint, face_clip, tmp_path, capsys):
    clip, _ = face_clip
    for name, (path, word) in bad_models(tiny_checkpoint, tmp_path).items():
        rc, err = run_cli(capsys, path, clip)
        assert rc == 2, (name, err)
        assert len(err) == 1 and err[0].startswith("error: cannot load model") and path.name in err[0], (name, err)
        assert word in err[0], (name, err)
    assert not (tmp_path / "PWNED").exists()  # nothing was unpickled


def test_wrong_architecture_config_in_the_header_is_refused(tiny_checkpoint, tmp_path):
    """A header claiming a different architecture than the tensors (and a recomputed digest) is still refused."""
    import json

    from models.checkpoint import _metadata_digest, read_metadata
    from safetensors.torch import load_file

    meta = read_metadata(tiny_checkpoint)
    cfg = json.loads(meta["config"])
    cfg["vision"]["width"] = cfg["vision"]["width"] * 2
    meta["config"] = json.dumps(cfg)
    meta["metadata_sha256"] = _metadata_digest(meta)
    path = tmp_path / "wrong_arch.safetensors"
    save_file(load_file(str(tiny_checkpoint)), str(path), metadata=meta)
    with pytest.raises(ValueError, match="do not fit its config"):
        load_weights(path)


def test_assets_verified_against_recorded_sha256_and_tampering_is_caught(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "assets"
    folder.mkdir()
    for name in assets.read_sums(assets.ASSETS_DIR):
        if name != "demo.mp4":  # 7 MB; the others are enough
            shutil.copy(assets.ASSETS_DIR / name, folder / name)
    shutil.copy(tiny_checkpoint, folder / "liveness_default.safetensors")
    assets.write_sums(folder)  # the one-line regeneration after adding the model
    assert "liveness_default.safetensors" in assets.read_sums(folder)
    assert all(s.ok for s in assets.check_assets(folder))
    assert load_weights(folder / "liveness_default.safetensors").path is not None
    assert assets.main(["--dir", str(folder)]) == 0

    data = bytearray((folder / "face_detection_short_range.tflite").read_bytes())
    data[5000] ^= 0x01  # one bit
    (folder / "face_detection_short_range.tflite").write_bytes(bytes(data))
    model = folder / "liveness_default.safetensors"
    model.write_bytes(model.read_bytes()[:-10])  # truncated by 10 bytes
    (folder / "bpe_simple_vocab_16e6.txt.gz").unlink()
    (folder / "extra.bin").write_bytes(b"new")
    states = {s.name: s.state for s in assets.check_assets(folder)}
    assert states["face_detection_short_range.tflite"] == "altered"
    assert states["liveness_default.safetensors"] == "altered"
    assert states["bpe_simple_vocab_16e6.txt.gz"] == "missing" and states["extra.bin"] == "unlisted"
    with pytest.raises(assets.AssetError, match="liveness_default.safetensors.*SHA-256"):
        load_weights(model)  # the scorer refuses it before parsing a byte of it
    with pytest.raises(assets.AssetError, match="face_detection"):
        assets.verify_file(folder / "face_detection_short_range.tflite")
    capsys.readouterr()
    assert assets.main(["--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "altered" in out and "missing" in out and "unlisted" in out

    (folder / "SHA256SUMS").write_text("not a sums file\n")
    with pytest.raises(assets.AssetError, match="SHA256SUMS:1"):
        assets.read_sums(folder)


def test_the_repository_sums_match_the_assets():
    assert all(s.ok for s in assets.check_assets()), assets.check_assets()


@pytest.mark.parametrize("args, words", [
    (["--max-faces", "0"], ["max_faces", "[1, 64]", "0"]),
    (["--backend", "gpu"], ["--backend", "gpu"]),
    (["--max-frames", "-5"], ["max_frames", "-5"]),
])
def test_bad_flag_values_name_the_key_and_range(args, words, capsys):
    with pytest.raises(SystemExit) if args[0] == "--backend" else _nothing():
        rc = cli.main(["--headless", "--source", "x.mp4", *args])
        assert rc == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert "Traceback" not in err


def test_bad_config_file_values_name_the_key_and_range(tmp_path, capsys):
    cases = {"[smoothing]\nhysteresis = 0.9\n": ["hysteresis", "[0, 0.5]", "0.9"],
             "ema_tau_s = -1\n": ["ema_tau_s", "[0, 60]"],
             "max_faces = 2.5\n": ["max_faces", "integer"],
             "unknown_key = 1\n": ["unknown_key", "valid keys"],
             "max_faces = \n": ["not valid TOML"]}
    for text, words in cases.items():
        cfg = tmp_path / "settings.toml"
        cfg.write_text(text)
        assert cli.main(["--headless", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), (text, err)


def test_check_reports_a_bad_model_as_fail_not_a_traceback(tiny_checkpoint, tmp_path):
    path, _ = bad_models(tiny_checkpoint, tmp_path)["altered"]
    checks = {c.name: c for c in run_checks(AppConfig(model=str(path), backend="torch"))}
    assert checks["model"].state == "FAIL" and "altered" in checks["model"].detail
    assert checks["backend"].state == "FAIL"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
