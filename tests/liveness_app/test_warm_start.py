"""Warm start (models/deploy/warm.py, liveness_app/scorer.py): a second start of the same checkpoint and backend
reaches its first verdict without torch and scores like the full start; whatever cannot be proven identical
(another checkpoint, a tampered one, a missing guard record, a damaged cache entry, another backend) takes the
full start instead, with the reason logged."""
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from liveness_app.scorer import AGREEMENT_CROPS, create_scorer
from models.deploy import runtime as rt
from models.deploy import warm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None or not AGREEMENT_CROPS.is_file(),
                                reason="needs OpenVINO and the bundled agreement crops")
REFUSED = "warm start not taken"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(warm.WARM_ENV, raising=False)
    return tmp_path / "cache"


def tiny(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return models.save_checkpoint(path, models.create_model("test-tiny"), threshold=0.5)


def crops(n: int = 24) -> list[np.ndarray]:
    return list(rt.load_agreement_crops(AGREEMENT_CROPS)[-n:])  # other crops than the guard's first 16


def eager(path: Path, crop_list) -> np.ndarray:
    ck = models.load_checkpoint(path)
    x = models.preprocess(crop_list, ck.preprocessing)
    with torch.inference_mode():
        return ck.model.scorer().eval()(torch.from_numpy(x)).numpy()


def refusal(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(REFUSED)]
    return lines[-1] if lines else ""


def warm_pair(path: Path, backend: str = "openvino"):
    """A full start (which records) and then a warm one, of ``path`` on ``backend``."""
    full = create_scorer(path, backend)
    return full, create_scorer(path, backend)


def test_a_second_start_is_warm_and_scores_like_the_full_start(cache, tmp_path, caplog):
    path = tiny(tmp_path / "m.safetensors")
    caplog.set_level(logging.INFO)
    full, second = warm_pair(path)
    assert not full.warm_start and "no warm-start record" in refusal(caplog)
    assert second.warm_start and isinstance(second.checkpoint, models.CheckpointHeader)
    assert (second.backend_name, second.threshold, second.input_size) == (full.backend_name, 0.5, 32)
    assert not second.runtime.built and second.runtime.agreement.passed and second.runtime.agreement.n == 16
    c = crops()
    p_full, p_warm = full.score(c), second.score(c)
    np.testing.assert_allclose(p_warm, p_full, atol=1e-6)  # the same compiled model
    np.testing.assert_allclose(p_warm, eager(path, c), atol=rt.TOLERANCE["openvino"])
    p, shares, tokens = second.score_with_routing(c[:3])  # the routing outputs come back too
    assert shares.shape == full.score_with_routing(c[:3])[1].shape and shares.shape[1] > 0


def test_another_backend_asked_for_takes_the_full_start(cache, tmp_path, caplog):
    path = tiny(tmp_path / "m.safetensors")
    warm_pair(path)
    caplog.set_level(logging.INFO)
    other = create_scorer(path, "torch")
    assert not other.warm_start and other.backend_name == "torch-cpu"
    assert "backend 'torch'" in refusal(caplog)
    assert create_scorer(path, "openvino").warm_start  # the recorded request is still warm


def test_a_changed_or_tampered_checkpoint_is_never_scored_through_the_old_export(cache, tmp_path, caplog):
    path = tiny(tmp_path / "m.safetensors")
    warm_pair(path)
    caplog.set_level(logging.INFO)
    # swapped for another valid checkpoint (other weights, intact digests): another key, no record
    tiny(tmp_path / "other.safetensors", seed=5)
    shutil.copy(tmp_path / "other.safetensors", path)
    swapped = create_scorer(path, "openvino")
    assert not swapped.warm_start and "no warm-start record" in refusal(caplog)
    c = crops()
    np.testing.assert_allclose(swapped.score(c), eager(path, c), atol=rt.TOLERANCE["openvino"])
    assert create_scorer(path, "openvino").warm_start  # and the new one is warm from its second start
    # tampered: one byte of the weights changed, digest not updated: refused here, then refused by the full load
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(models.CheckpointError, match="weights do not match the checksum"):
        create_scorer(path, "openvino")
    assert "checkpoint not verified" in refusal(caplog) and "weights do not match" in refusal(caplog)


def record_of(cache: Path) -> dict:
    (path,) = (cache / "warm-start").glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("damage, reason", [
    ("guard record", "no passed guard recorded"),
    ("model.bin", "changed since it was recorded"),
    ("warm record", "unreadable"),
    ("reference", "no cached eager fp32 reference"),
])
def test_missing_or_damaged_cache_files_take_the_full_start(damage, reason, cache, tmp_path, caplog):
    path = tiny(tmp_path / "m.safetensors")
    full, _ = warm_pair(path)
    c = crops()
    p_full = full.score(c)
    entry = cache / record_of(cache)["entry"]
    if damage == "guard record":
        (entry / record_of(cache)["guard"]).unlink()
    elif damage == "model.bin":
        # truncated (the full start rebuilds the entry); a new file: the scorers above still map the old one
        bin_ = entry / "model.bin"
        (tmp_path / "cut.bin").write_bytes(bin_.read_bytes()[:1000])
        shutil.move(tmp_path / "cut.bin", bin_)
    elif damage == "warm record":
        (rec,) = (cache / "warm-start").glob("*.json")
        rec.write_text(rec.read_text()[:40])
    else:
        for f in (cache / "reference").glob("*.npy"):
            f.unlink()
    caplog.set_level(logging.INFO)
    again = create_scorer(path, "openvino")
    assert not again.warm_start and reason in refusal(caplog)
    np.testing.assert_allclose(again.score(c), p_full, atol=rt.TOLERANCE["openvino"])  # still correct
    assert create_scorer(path, "openvino").warm_start  # the full start recorded it again


def test_a_failed_guard_is_never_warm(cache, tmp_path, caplog):
    """A record whose guard failed (a recorded failure, written by the full start) is not re-confirmed."""
    path = tiny(tmp_path / "m.safetensors")
    warm_pair(path)
    entry = cache / record_of(cache)["entry"]
    guard = entry / record_of(cache)["guard"]
    saved = json.loads(guard.read_text())
    saved["agreement"]["passed"] = False
    guard.write_text(json.dumps(saved))
    caplog.set_level(logging.INFO)
    assert not create_scorer(path, "openvino").warm_start
    assert "no passed guard recorded" in refusal(caplog)


def test_the_setting_switches_it_off(cache, tmp_path, monkeypatch, caplog):
    path = tiny(tmp_path / "m.safetensors")
    warm_pair(path)
    monkeypatch.setenv(warm.WARM_ENV, "0")
    caplog.set_level(logging.INFO)
    assert not create_scorer(path, "openvino").warm_start
    assert "switched off" in refusal(caplog)


# the CLI in a child process: whether torch was imported when the first verdict was marked
_TRACE_TORCH = """
import atexit, json, runpy, sys
from liveness_app import startup
seen = {}
real = startup.mark
def mark(stage, **kw):
    seen.setdefault(stage, "torch" in sys.modules)
    return real(stage, **kw)
startup.mark = mark
atexit.register(lambda: print("TORCH_AT " + json.dumps(seen), file=sys.stderr))
sys.argv = ["liveness"] + sys.argv[1:]
runpy.run_module("liveness_app.cli", run_name="__main__")
"""


def test_the_headless_cli_reaches_its_first_verdict_without_torch_on_a_second_start(cache, tmp_path, face_clip):
    path = tiny(tmp_path / "m.safetensors")
    clip, _ = face_clip

    def run(out: Path) -> tuple[dict, list]:
        proc = subprocess.run([sys.executable, "-c", _TRACE_TORCH, "--headless", "--source", str(clip), "--model",
                               str(path), "--backend", "openvino", "--max-frames", "8", "--output", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [x for x in proc.stderr.splitlines() if x.startswith("TORCH_AT ")][-1]
        return json.loads(line[len("TORCH_AT "):]), [json.loads(x) for x in out.read_text().splitlines()]

    first, records_full = run(tmp_path / "full.jsonl")
    assert first["first verdict"] is True  # the full start loads torch: the trace can tell
    second, records_warm = run(tmp_path / "warm.jsonl")
    assert second["first verdict"] is False and second["model and backend"] is False
    scores = [[f["score"] for f in r["faces"]] for r in records_full]
    assert any(scores) and [len(s) for s in scores] == [len(r["faces"]) for r in records_warm]
    for a, b in zip(scores, ([f["score"] for f in r["faces"]] for r in records_warm)):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="needs NNCF")
def test_the_bundled_model_on_int8_is_warm_after_its_guard_passed(cache, tmp_path, caplog):
    """int8 re-confirms the decision-agreement guard of all agreement crops, recorded by the full start."""
    from liveness_app.scorer import DEFAULT_MODEL
    if not DEFAULT_MODEL.is_file():
        pytest.skip("bundled model absent")
    full = create_scorer(None, "openvino-int8", defer_builds=False)  # quantises (slow) and runs the guard
    assert not full.warm_start and full.runtime.agreement.passed
    second = create_scorer(None, "openvino-int8")
    assert second.warm_start and second.backend_name == "openvino-int8-cpu"
    assert second.runtime.agreement.n == len(rt.load_agreement_crops(AGREEMENT_CROPS))
    c = crops()
    np.testing.assert_allclose(second.score(c), full.score(c), atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="needs NNCF")
def test_the_background_int8_build_records_the_warm_start_so_the_second_start_is_warm(cache, tmp_path, monkeypatch):
    """The app's first start leaves int8 to a detached build; that build also runs int8's guard and records the
    warm start, so the second start (not only the third) reaches its verdict without torch."""
    import time

    from liveness_app.scorer import DEFAULT_MODEL
    if not DEFAULT_MODEL.is_file():
        pytest.skip("bundled model absent")
    model = tmp_path / "bundled.safetensors"  # a copy: the test may not touch the project's own cache entries
    shutil.copyfile(DEFAULT_MODEL, model)
    monkeypatch.setenv(rt.BACKGROUND_ENV, "1")
    first = create_scorer(model, "cpu")  # the app's default: int8 deferred to the background
    assert not first.warm_start and first.runtime.precision != "int8"
    assert not first.runtime.single_batch  # this session's stopgap skips the batch-1 compilation
    jobs = list(cache.glob("int8-job-*"))
    assert len(jobs) == 1
    deadline = time.monotonic() + 300  # a deadline for the child, not a speed target
    while jobs[0].exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not jobs[0].exists(), "the background build did not finish"
    assert list((cache / "warm-start").glob("*.json")), "the background build recorded no warm start"
    monkeypatch.setenv(rt.BACKGROUND_ENV, "0")
    second = create_scorer(model, "cpu")
    assert second.warm_start and second.backend_name == "openvino-int8-cpu"
    assert second.runtime.agreement.passed and second.runtime.agreement.n == len(rt.load_agreement_crops(AGREEMENT_CROPS))
    assert second.runtime.single_batch and second.runtime.agreement_single.passed  # batch 1 on its own model
    c = crops()
    full = create_scorer(model, "openvino-int8", defer_builds=False)  # the full path on the same cached entry
    np.testing.assert_allclose(second.score(c), full.score(c), atol=1e-4)


def test_a_changed_checkpoint_gets_no_warm_start_from_a_background_build(cache, tmp_path):
    """The child records only for the file the start saw: rewritten meanwhile, it records nothing."""
    path = tiny(tmp_path / "m.safetensors")
    header = models.read_header(path)
    module = models.load_checkpoint(path).model.scorer().eval()
    spec = {"cache": str(cache), "max_batch": 8, "threads": None, "routing": False,
            "warm": {"checkpoint": str(path), "backend": "cpu", "routing": True, "failures": [],
                     "digests": [header.weights_sha256, header.metadata_sha256]}}
    tiny(path, seed=1)  # another model under the same name
    rt._record_built_int8(object(), module, spec, rt.load_agreement_crops(AGREEMENT_CROPS)[:4])
    assert not (cache / "warm-start").exists()
