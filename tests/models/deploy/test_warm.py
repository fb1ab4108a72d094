"""The torch-free pieces of a warm start (models/deploy/warm.py): the header reader, the weights digest from the
file's bytes, and a model library that imports without torch."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from models.checkpoint import CheckpointError, read_header
from models.tensors import weights_digest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_the_file_digest_is_the_checkpoint_digest_and_catches_one_changed_byte(dtype, tmp_path):
    torch.manual_seed(1)
    model = models.create_model("test-tiny")
    path = models.save_checkpoint(tmp_path / "m.safetensors", model, threshold=0.3, dtype=dtype,
                                  data_card={"data": "x"})
    head = read_header(path)
    ck = models.load_checkpoint(path)
    assert (head.threshold, head.prompts, head.preprocessing, head.data_card) == (
        ck.threshold, ck.prompts, ck.preprocessing, ck.data_card)
    assert ck.header == head  # load_checkpoint reads the header through read_header
    from safetensors.torch import load_file
    assert head.weights_sha256 == weights_digest(load_file(str(path)))
    head.verify_weights()  # the file's bytes hash to the digest torch computes on the loaded tensors
    # one byte inside the last tensor's data changed: the header still parses, the digest does not match
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weights do not match the checksum"):
        read_header(path).verify_weights()
    with pytest.raises(CheckpointError, match="weights do not match the checksum"):
        models.load_checkpoint(path)  # the full load says the same


def test_the_warm_path_imports_without_torch(tiny_checkpoint):
    """The model library, the warm start and the app's scorer module import (and read a header) with torch
    blocked: what a warm start runs cannot need it."""
    code = f"""
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, Blocked())
import models
from models.deploy import engine, warm
from liveness_app import cli, pipeline, scorer, session
from liveness_app.quiet import prepare_process
prepare_process()
head = models.read_header({str(tiny_checkpoint)!r})
head.verify_weights()
print("ok", head.preprocessing.size)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ok", "32"]
