"""Single-file safetensors checkpoints: round trip, and every kind of bad file raises a clear error."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import models
from models.checkpoint import CheckpointError, read_metadata
from models.config import ModelConfig, get_config

CARD = {"data": "manifest.csv", "sources": ["a", "b"], "val_metrics": {"pooled": {"auc": 0.9}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny La-SoftMoE model with its MoE branch open (so the round trip covers every tensor) and its file."""
    torch.manual_seed(0)
    d = get_config("test-tiny").to_dict()
    d["prompts"] = ["a real face", "a spoof face"]
    d["name"] = "tiny-roundtrip"
    model = models.create_model(d).eval()
    with torch.no_grad():
        for b in model.visual.transformer.resblocks:
            if b.moe is not None:
                b.moe.gate.fill_(0.8)
                b.moe.experts.c_fc_weight.mul_(1.3)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    models.save_checkpoint(path, model, threshold=0.37, data_card=CARD, extra={"epoch": 4})
    return model, path


def x_batch(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def test_round_trip(trained):
    model, path = trained
    ck = models.load_checkpoint(path)
    assert ck.threshold == 0.37
    assert ck.prompts == ("a real face", "a spoof face")
    assert ck.data_card == CARD and ck.extra == {"epoch": 4}
    assert ck.config == model.config and ck.config.name == "tiny-roundtrip"
    assert ck.preprocessing == models.Preprocessing(32, model.config.mean, model.config.std)
    assert not ck.model.training
    with torch.no_grad():
        assert torch.equal(ck.model.predict_proba(x_batch()), model.predict_proba(x_batch()))
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v), k
    meta = read_metadata(path)
    assert meta["format"] == "lasoftmoe-clip/1" and json.loads(meta["prompts"]) == list(ck.prompts)


def test_load_model_takes_paths_and_names(trained):
    _, path = trained
    assert models.load_model(str(path)).threshold == 0.37
    fresh = models.load_model("test-tiny")
    assert fresh.path is None and fresh.threshold == 0.5 and fresh.config.name == "test-tiny"
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        models.load_model("missing.safetensors")


def test_fp16_storage_loads_as_float32(trained, tmp_path):
    model, _ = trained
    path = models.save_checkpoint(tmp_path / "half.safetensors", model, dtype=torch.float16)
    ck = models.load_checkpoint(path)
    assert ck.model.visual.proj.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(ck.model.predict_proba(x_batch()), model.predict_proba(x_batch()),
                                   rtol=0, atol=2e-3)


def test_save_rejects_bad_threshold_and_leaves_no_file(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ValueError, match="threshold"):
        models.save_checkpoint(tmp_path / "t.safetensors", model, threshold=1.5)
    assert list(tmp_path.iterdir()) == []


def test_loading_never_unpickles(trained, monkeypatch):
    import pickle

    def refuse(*a, **k):
        raise AssertionError("unpickling during checkpoint loading")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    _, path = trained
    models.load_checkpoint(path)


def _copy(path: Path, tmp_path: Path, name: str = "c.safetensors") -> Path:
    out = tmp_path / name
    out.write_bytes(path.read_bytes())
    return out


def _header_len(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        models.load_checkpoint(tmp_path / "nothere.safetensors")


@pytest.mark.parametrize("keep", [0.99, 0.6, 0.001])
def test_truncated_file(trained, tmp_path, keep):
    _, path = trained
    data = path.read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="trunc.safetensors.*(truncated|too short)"):
        models.load_checkpoint(bad)


def test_flipped_byte_in_tensor_data(trained, tmp_path):
    _, path = trained
    data = bytearray(path.read_bytes())
    data[len(data) - 1000] ^= 0x10  # a weight near the end of the data section
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flip.safetensors.*altered or damaged"):
        models.load_checkpoint(bad)
    # verify=False is the explicit way to skip the check (and is what it costs)
    assert models.load_checkpoint(bad, verify=False).threshold == 0.37


@pytest.mark.parametrize("target", ['"threshold":"0.37"', '"a real face', '"sources', '"F32"', '"__metadata__"',
                                    '"data_offsets":[', '"format":"lasoftmoe'])
def test_flipped_byte_in_header(trained, tmp_path, target):
    """A damaged header never loads silently: not the threshold, a prompt, the data card, nor a dtype."""
    _, path = trained
    data = bytearray(path.read_bytes())
    n = _header_len(data)
    header = data[8:8 + n].decode()
    i = header.find(target)
    assert i >= 0, header[:300]
    pos = 8 + i + len(target) - 2  # a character inside the value (a digit, a letter, a quote)
    data[pos] = ord("5") if data[pos] != ord("5") else ord("6")
    bad = tmp_path / "hdr.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hdr.safetensors"):
        models.load_checkpoint(bad)


def test_wrong_format(tmp_path):
    from safetensors.torch import save_file

    torch.save({"w": torch.zeros(3)}, tmp_path / "pickle.safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        models.load_checkpoint(tmp_path / "pickle.safetensors")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a La-SoftMoE CLIP checkpoint.*load_pretrained_clip"):
        models.load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        models.load_checkpoint(tmp_path / "tiny.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        models.load_checkpoint(tmp_path / "folder.safetensors")


def test_config_that_does_not_match_the_weights(trained, tmp_path):
    model, _ = trained
    other = model.config.to_dict()
    other["vision"]["layers"] = 3  # the weights have 2 image blocks
    model_b = models.create_model(model.config)
    model_b.load_state_dict(model.state_dict())
    model_b.config = ModelConfig.from_dict(other)  # its file now claims 3 blocks
    path = models.save_checkpoint(tmp_path / "mismatch.safetensors", model_b)
    with pytest.raises(CheckpointError, match=r"do not fit its config.*missing \['visual\.transformer\.resblocks\.2"):
        models.load_checkpoint(path)


def test_invalid_config_in_file_names_the_key(trained, tmp_path):
    model, _ = trained
    model_b = models.create_model(model.config)
    model_b.config = model.config.replace(prompts=("only one",))  # skips validation, as a bad writer would
    path = models.save_checkpoint(tmp_path / "badcfg.safetensors", model_b)
    with pytest.raises(CheckpointError, match="badcfg.safetensors.*prompts"):
        models.load_checkpoint(path)


def test_older_file_without_metadata_checksum_still_loads(trained, tmp_path, caplog):
    """Checkpoints written before metadata_sha256 existed load, with a warning that the header is unverified."""
    from safetensors.torch import load_file, save_file

    _, path = trained
    meta = read_metadata(path)
    del meta["metadata_sha256"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata=meta)
    with caplog.at_level("WARNING", logger="models.checkpoint"):
        assert models.load_checkpoint(old).threshold == 0.37
    assert "without a metadata checksum" in caplog.text
    meta["threshold"] = "0.9"  # undetectable in such a file, which is why new files carry the checksum
    meta["surprise"] = "1"
    save_file(load_file(str(path)), str(old), metadata=meta)
    with pytest.raises(CheckpointError, match=r"unknown metadata entries \['surprise'\]"):
        models.load_checkpoint(old)


def test_no_header_byte_flip_loads_silently(trained, tmp_path):
    """Sweep: one flipped bit at ~96 spread positions of the header; each gives CheckpointError, none loads."""
    _, path = trained
    data = path.read_bytes()
    n = _header_len(data)
    bad = tmp_path / "sweep.safetensors"
    for pos in range(8, 8 + n, max(1, n // 96)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError):
            models.load_checkpoint(bad)


def test_the_stored_weights_digest_is_the_shared_one(tmp_path):
    """checkpoint.py and the export cache (runtime.fingerprint) hash tensors with one function: tensors.weights_digest."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from models.tensors import weights_digest

    path = models.save_checkpoint(tmp_path / "m.safetensors", models.create_model("test-tiny"))
    with safe_open(str(path), "pt") as f:
        stored = f.metadata()["weights_sha256"]
    tensors = load_file(str(path))
    assert stored == weights_digest(tensors)
    tensors[next(iter(tensors))] = tensors[next(iter(tensors))] + 1
    assert stored != weights_digest(tensors)


def test_skip_init_is_per_thread_and_undone(trained):
    """Loading builds the model without its random init; another thread building a model meanwhile (a
    training run, say) still gets the real initialisers, and nothing stays patched afterwards."""
    import threading

    from models.clip import skip_init

    original = torch.nn.init.normal_
    seen = {}

    def other_thread():
        t = torch.zeros(1000)
        torch.nn.init.normal_(t)
        seen["other"] = float(t.abs().sum())

    with skip_init():
        t = torch.zeros(1000)
        torch.nn.init.normal_(t)
        with skip_init():  # nested: still skipped after the inner block
            pass
        torch.nn.init.kaiming_uniform_(t.view(10, 100))
        seen["here"] = float(t.abs().sum())
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert seen["here"] == 0.0 and seen["other"] > 0.0
    assert torch.nn.init.normal_ is original
    _, path = trained
    a = models.load_checkpoint(path).model.state_dict()  # what a load builds is exactly the file's tensors
    b = models.load_checkpoint(path).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
