"""Backends agree with torch eager fp32 within their stated tolerance; caching, fallback and threading."""
import importlib.util
import threading

import numpy as np
import pytest
import torch

import models
from models.deploy import export as ex
from models.deploy import runtime as rt
from test_export import _BrokenTensorRT, with_active_moe  # noqa: F401 (fixture helpers)

HAS_CUDA = torch.cuda.is_available()


def checkpoint(seed: int = 0, name: str = "test-tiny") -> models.Checkpoint:
    torch.manual_seed(seed)
    model = with_active_moe(models.create_model(name))
    return models.Checkpoint(model=model, config=model.config, preprocessing=models.Preprocessing.from_config(
        model.config), prompts=tuple(model.config.prompts), threshold=0.5)


@pytest.fixture(scope="module")
def ckpt():
    return checkpoint()


def available_cpu_engines():
    return [e for e in rt.CPU_ENGINES if e == "torch" or importlib.util.find_spec(e) is not None]


def reference(ck, x):
    with torch.inference_mode():
        return ck.model.scorer().eval()(torch.as_tensor(x)).numpy()


@pytest.mark.parametrize("engine", available_cpu_engines())
def test_cpu_engines_agree_with_eager_fp32(engine, ckpt, tmp_path):
    r = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    assert r.name.startswith(engine) and r.device == "cpu" and r.notice == ""
    for b in (1, 7, 20):  # 20 > 16: split into two calls
        x = ex.example_input(r.input_size, b, seed=b)
        got = r(x)
        assert got.dtype == np.float32 and got.shape == (b,)
        assert np.abs(got - reference(ckpt, x)).max() <= r.tolerance
    assert r(torch.zeros(0, 3, r.input_size, r.input_size)).shape == (0,)


def test_the_bundled_config_agrees_on_the_cpu_backend(tmp_path):
    ck = checkpoint(name="ViT-Ti-16-128")
    r = rt.create_runtime(ck, "cpu", cache_dir=tmp_path)
    x = ex.example_input(128, 8, seed=5)
    assert np.abs(r(x) - reference(ck, x)).max() <= r.tolerance


def test_export_cache_is_reused_keyed_by_weights_and_written_atomically(ckpt, tmp_path):
    engine = "openvino" if "openvino" in available_cpu_engines() else "onnxruntime"
    first = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    again = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    assert first.built and not again.built and again.cache_path == first.cache_path
    other = rt.create_runtime(checkpoint(seed=1), engine, cache_dir=tmp_path)  # other weights: a new entry
    assert other.built and other.cache_path != first.cache_path
    entries = sorted(p.name for p in (tmp_path / engine).iterdir())
    assert len(entries) == 2 and not any(n.startswith(".") for n in entries)  # no temporary leftovers
    x = ex.example_input(ckpt.preprocessing.size, 3)
    assert np.abs(other(x) - first(x)).max() > 1e-4  # the stale export was not reused


def test_damaged_cache_entry_is_rebuilt(ckpt, tmp_path, caplog):
    engine = "openvino" if "openvino" in available_cpu_engines() else "onnxruntime"
    first = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    model_file = next(p for p in first.cache_path.iterdir() if p.suffix in (".xml", ".onnx"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    again = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    assert again.built and "rebuilding" in caplog.text
    x = ex.example_input(ckpt.preprocessing.size, 2)
    assert np.abs(again(x) - reference(ckpt, x)).max() <= again.tolerance


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "c"))
    assert rt.cache_root() == tmp_path / "c"
    monkeypatch.delenv("LIVENESS_CACHE_DIR")
    assert "liveness-app" in str(rt.cache_root())


def test_fingerprint_follows_the_weights(ckpt):
    a = rt.fingerprint(ckpt.model.scorer())
    assert a == rt.fingerprint(ckpt.model.scorer())
    assert a != rt.fingerprint(checkpoint(seed=1).model.scorer())


@pytest.mark.skipif(HAS_CUDA, reason="checks the fallback on a machine without a GPU")
def test_auto_names_its_choice_and_the_fallbacks(ckpt, tmp_path):
    r = rt.create_runtime(ckpt, "auto", cache_dir=tmp_path)
    assert r.backend == "cpu" or r.name.endswith("-cpu")
    assert r.notice.startswith(f"auto chose {r.name}") and "tensorrt: no CUDA GPU" in r.notice
    c = rt.create_runtime(ckpt, "cuda", cache_dir=tmp_path)
    assert c.name.endswith("-cpu") and "backend 'cuda' unavailable" in c.notice


@pytest.mark.skipif(HAS_CUDA, reason="simulates a GPU machine whose TensorRT libraries are missing")
def test_tensorrt_import_exception_falls_back_with_a_notice(ckpt, tmp_path, monkeypatch):
    import sys
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTensorRT()] + sys.meta_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # get past the cheap check to the import
    r = rt.create_runtime(ckpt, "tensorrt", cache_dir=tmp_path)
    assert r.name.endswith("-cpu")
    assert "backend 'tensorrt' unavailable" in r.notice and "libnvinfer" in r.notice and "cuda:" in r.notice


def test_start_up_check_rejects_a_runtime_that_disagrees(ckpt, tmp_path):
    r = rt.create_runtime(ckpt, "torch", cache_dir=tmp_path)
    assert rt.verify(r, ckpt.model.scorer()) == 0.0
    with pytest.raises(RuntimeError, match="disagrees with torch eager fp32"):
        rt.verify(r, checkpoint(seed=7).model.scorer())


def test_bad_requests_say_what_is_wrong(ckpt, tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'gpu'.*auto, tensorrt, cuda, cpu"):
        rt.create_runtime(ckpt, "gpu", cache_dir=tmp_path)
    r = rt.create_runtime(ckpt, "torch", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"b x 3 x 32 x 32, got \(2, 3, 64, 64\)"):
        r(torch.zeros(2, 3, 64, 64))


def test_one_runtime_serves_several_threads(ckpt, tmp_path):
    engine = available_cpu_engines()[0]
    r = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    inputs = [ex.example_input(r.input_size, 1 + i % 5, seed=i) for i in range(12)]
    serial = [r(x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            results[i] = r(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_half_agrees_with_fp32(ckpt, graphs):
    r = rt.CudaRuntime(ckpt.model.scorer(), cuda_graphs=graphs)
    for b in (1, 3, 16, 21):
        x = ex.example_input(r.input_size, b, seed=b)
        assert np.abs(r(x) - reference(ckpt, x)).max() <= r.tolerance
    assert next(ckpt.model.parameters()).device.type == "cpu"  # the checkpoint's model stays put


@pytest.mark.skipif(not HAS_CUDA or importlib.util.find_spec("torch_tensorrt") is None,
                    reason="needs a CUDA GPU and torch-tensorrt")
def test_tensorrt_agrees_and_its_engine_is_cached(ckpt, tmp_path):
    first = rt.create_runtime(ckpt, "tensorrt", cache_dir=tmp_path)
    if not first.name.startswith("tensorrt"):
        pytest.skip(f"TensorRT could not start here: {first.notice}")
    again = rt.create_runtime(ckpt, "tensorrt", cache_dir=tmp_path)
    assert first.built and not again.built
    x = ex.example_input(first.input_size, 7)
    assert np.abs(again(x) - reference(ckpt, x)).max() <= again.tolerance


# --- liveness_app.scorer on top of the runtimes ----------------------------------------------------------
def test_scorer_preprocesses_like_the_model_and_scores_like_eager(ckpt, tmp_path):
    from liveness_app.scorer import RuntimeScorer

    s = ckpt.preprocessing.size
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(5)]
    scorer = RuntimeScorer(ckpt, rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path))
    x = scorer.preprocess(crops)
    ref_x = models.preprocess(crops, ckpt.preprocessing)
    assert x.shape == (5, 3, s, s) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, ref_x, atol=1e-5)
    got = scorer.score(crops)
    assert np.abs(got - reference(ckpt, ref_x)).max() <= scorer.runtime.tolerance
    assert scorer.backend_name == scorer.runtime.name and scorer.input_size == s and scorer.threshold == 0.5
    big = rng.integers(0, 256, (3 * s, 2 * s, 3), dtype=np.uint8)  # another size is resized, not rejected
    assert scorer.preprocess([big]).shape == (1, 3, s, s) and scorer.score([big]).shape == (1,)
    assert scorer.score([]).shape == (0,)
    ew = scorer.expert_weights(crops[:2])
    assert ew.shape == (2, len(ckpt.config.moe.layers), ckpt.config.moe.num_experts)
    np.testing.assert_allclose(ew.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="crop 1: expected a uint8 RGB image"):
        scorer.score([crops[0], crops[1].astype(np.float32)])


def test_create_scorer_names_what_is_missing(tmp_path):
    from liveness_app.scorer import DEFAULT_MODEL, create_scorer

    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        create_scorer(tmp_path / "nothere.safetensors", backend="cpu")
    if not DEFAULT_MODEL.is_file():
        with pytest.raises(FileNotFoundError, match="liveness_default.safetensors"):
            create_scorer(None)
    path = models.save_checkpoint(tmp_path / "m.safetensors", checkpoint().model, threshold=0.3)
    sc = create_scorer(path, backend="torch", cache_dir=tmp_path / "cache")
    assert sc.threshold == pytest.approx(0.3) and sc.backend_name == "torch-cpu" and sc.notice == ""
