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


# --- the decision-agreement guard of reduced-precision runtimes (issue 15) ---------------------------------
def agreement_crops():
    return rt.load_agreement_crops(rt.DEFAULT_AGREEMENT_CROPS)


def test_the_shipped_agreement_crops_are_200_demo_crops_at_the_bundled_size():
    crops = agreement_crops()
    assert crops.shape == (200, 128, 128, 3) and crops.dtype == np.uint8
    assert len({c.tobytes() for c in crops}) == 200  # no duplicates, no padding tiles
    with pytest.raises(FileNotFoundError, match="make_agreement_crops"):
        rt.load_agreement_crops("nothere.jpg")


class _Reduced(rt.TorchRuntime):
    """torch eager labelled reduced precision, with an optional perturbation of its P(attack)."""

    precision = "int8"

    def __init__(self, module, perturb=None):
        super().__init__(module)
        self.name = "fake-int8-cpu"
        self.perturb = perturb

    def _run(self, x):
        outs = super()._run(x)
        if self.perturb is not None:
            outs[0] = self.perturb(outs[0]).astype(np.float32)
        return outs


def _guard_reference(ck):
    module = ck.model.scorer(routing=True).eval()
    x = rt.agreement_batch(agreement_crops(), ck.preprocessing)  # resized to the tiny model's 32 px
    p_ref = rt.eager_reference(module, x)
    return module, (x, p_ref, float(np.median(p_ref)))  # a threshold in the middle: many crops near it


def test_guard_passes_a_faithful_runtime_and_fails_perturbed_ones(ckpt):
    module, ref = _guard_reference(ckpt)
    x, p_ref, thr = ref
    ok = _Reduced(module)
    assert rt.verify(ok, module, reference=ref) == 0.0  # same scores: passes
    assert ok.agreement.passed and ok.agreement.same_decision == 1.0 and ok.agreement.n == 200
    # a uniform shift of 0.03: few decisions flip, but |dP| > 0.02
    with pytest.raises(RuntimeError, match=r"decision-agreement guard.*max \|dP\| 3\.0\de-02 \(needs <= 0\.02\)"):
        rt.verify(_Reduced(module, lambda p: p + 0.03), module, reference=ref)
    # tiny moves (<= 0.01) that push the two crops nearest the threshold across it: 99.0 % < 99.5 %
    nearest = np.argsort(np.abs(p_ref - thr))[:2]

    def flip_two(p):
        p = p.copy()
        for i in nearest:
            j = np.flatnonzero(np.isclose(p, p_ref[i], atol=1e-6))
            p[j] = np.where(p[j] >= thr, thr - 1e-4, thr + 1e-4)
        return p

    if np.abs(p_ref[nearest] - thr).max() < 0.01:
        with pytest.raises(RuntimeError, match=r"same decision on 99\.0% of 200 crops \(2 flipped"):
            rt.verify(_Reduced(module, flip_two), module, reference=ref)
    # without agreement crops a reduced-precision runtime cannot be checked
    with pytest.raises(RuntimeError, match="needs the agreement crops"):
        rt.verify(_Reduced(module), module)


class _SingleBatch(_Reduced):
    """A reduced runtime whose batch of one runs on a separate (here: perturbed) model, as OpenVINO's does."""

    def __init__(self, module, perturb_single):
        super().__init__(module)
        batched = super()._run

        def run(x):
            outs = batched(x)
            if x.shape[0] == 1:
                outs[0] = perturb_single(outs[0]).astype(np.float32)
            return outs
        run.single_batch = True  # what engine.openvino_runner marks on a runner with a batch-1 model
        self._run = run


def test_guard_also_checks_the_batch_1_model(ckpt, tmp_path):
    """A runtime with its own batch-1 model is guarded there too: flipping every single-crop decision fails the
    guard although every batched score is exact; a faithful one passes and its record is re-confirmed."""
    module, (x, p_ref, thr) = _guard_reference(ckpt)
    ok = _SingleBatch(module, lambda p: p)
    assert ok.single_batch and not _Reduced(module).single_batch
    record = tmp_path / "guard.json"
    assert rt.check_agreement(ok, x, p_ref, thr, record).passed
    assert ok.agreement.n == 200 and ok.agreement_single.n == 32 and ok.agreement_single.passed
    again = _SingleBatch(module, lambda p: p)
    calls = again.calls
    assert rt.check_agreement(again, x, p_ref, thr, record, recorded_only=True).passed
    assert again.calls - calls == 1 + 4  # the recorded guard: 16 crops in one call, then 4 one by one
    bad = _SingleBatch(module, lambda p: 1.0 - p)
    with pytest.raises(RuntimeError, match=r"at batch 1 .*same decision on [0-9.]+% of 32 crops"):
        rt.check_agreement(bad, x, p_ref, thr, tmp_path / "bad.json")
    assert bad.agreement.passed and not bad.agreement_single.passed  # the batched path alone would pass
    # the failure is recorded: a later start with the same stamp does not take it as passed
    with pytest.raises(RuntimeError):
        rt.check_agreement(_SingleBatch(module, lambda p: p), x, p_ref, thr, tmp_path / "bad.json",
                           recorded_only=True)


def test_a_guard_failure_falls_back_cleanly_to_fp32(ckpt, tmp_path, monkeypatch):
    real_build = rt._build

    def build(kind, module, *args):
        if kind in rt.REDUCED_CPU_ENGINES:
            return _Reduced(module, lambda p: np.clip(1.0 - p, 0, 1))  # every decision flips
        return real_build(kind, module, *args)

    monkeypatch.setattr(rt, "_build", build)
    r = rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path, agreement_crops=agreement_crops())
    assert not r.reduced_precision and r.name in ("openvino-cpu", "onnxruntime-cpu", "torch-cpu")
    assert r.notice.startswith(f"cpu chose {r.name}") and "fails the decision-agreement guard" in r.notice
    assert r.notice_level == 20  # logging.INFO: an expected hand-over, not an alarm
    x = ex.example_input(r.input_size, 4)
    assert np.abs(r(x) - reference(ckpt, x)).max() <= r.tolerance
    # no crops at all: the reduced candidates are skipped (not built), fp32 is used
    r2 = rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path)
    assert not r2.reduced_precision and "no agreement crops" in r2.notice


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                    reason="needs OpenVINO and NNCF")
def test_real_reduced_precision_runtimes_on_the_bundled_model(tmp_path):
    """The shipped default (OpenVINO int8, stem fp32) passes the guard on the bundled model; bf16, where this
    CPU has it, either passes or is refused by the guard itself (it changes 2.5 % of decisions here)."""
    from liveness_app.scorer import DEFAULT_MODEL
    if not DEFAULT_MODEL.is_file():
        pytest.skip("bundled model absent")
    ck = models.load_checkpoint(DEFAULT_MODEL)
    crops = agreement_crops()
    r = rt.create_runtime(ck, "openvino-int8", cache_dir=tmp_path, agreement_crops=crops)
    assert r.precision == "int8" and r.agreement.passed and r.agreement.same_decision >= rt.AGREEMENT_MIN
    assert r.agreement.max_dp <= rt.AGREEMENT_MAX_DP
    again = rt.create_runtime(ck, "openvino-int8", cache_dir=tmp_path, agreement_crops=crops)
    assert not again.built and again.agreement.passed  # cached model, recorded guard re-confirmed
    p, shares, tokens = r.run_routing(rt.agreement_batch(crops[:3], ck.preprocessing))
    assert shares.shape == (3, len(ck.config.moe.layers), ck.config.moe.num_experts)
    try:
        b = rt.create_runtime(ck, "openvino-bf16", cache_dir=tmp_path, agreement_crops=crops)
        assert b.agreement.passed
    except RuntimeError as e:
        assert "decision-agreement guard" in str(e) or "no native bf16" in str(e)


# --- routing from the same model call (issue 14 item 3) ---------------------------------------------------
@pytest.mark.parametrize("engine", available_cpu_engines())
def test_every_cpu_engine_returns_the_routing_of_its_one_call(engine, ckpt, tmp_path):
    r = rt.create_runtime(ckpt, engine, cache_dir=tmp_path)
    assert r.routing
    x = ex.example_input(r.input_size, 5, seed=3)
    before = r.calls
    p, shares, tokens = r.run_routing(x)
    assert r.calls == before + 1  # one model call for scores and routing
    with torch.inference_mode():
        emb, ref_shares, ref_tokens = ckpt.model.visual(torch.as_tensor(x), with_routing=True)
    np.testing.assert_allclose(p, reference(ckpt, x), atol=1e-4)
    np.testing.assert_allclose(shares, ref_shares.numpy(), atol=1e-4)
    np.testing.assert_allclose(tokens, ref_tokens.numpy(), atol=1e-4)
    g = ckpt.config.vision.image_size // ckpt.config.vision.patch_size
    assert tokens.shape == (5, len(ckpt.config.moe.layers), g * g, ckpt.config.moe.num_experts)
    np.testing.assert_allclose(tokens.sum(-1), 1.0, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                    reason="needs OpenVINO and NNCF")
def test_a_first_start_builds_int8_in_a_detached_process_and_does_not_wait_for_it(ckpt, tmp_path, monkeypatch):
    import time

    crops = agreement_crops()[:40]
    monkeypatch.setenv(rt.BACKGROUND_ENV, "1")
    first = rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path, agreement_crops=crops, defer_builds=True)
    assert first.precision != "int8"  # the start path did not quantise (bf16 or fp32 serve this start)
    jobs = list(tmp_path.glob("int8-job-*"))
    assert len(jobs) == 1 and (jobs[0] / "model.safetensors").is_file()
    module = ckpt.model.scorer(routing=ckpt.model.has_moe).eval()
    calibration = rt.agreement_batch(crops, ckpt.preprocessing)[::2]
    entry = rt.OpenVINORuntime.entry(module, tmp_path, ex.MAX_BATCH, "int8", calibration)[0]
    deadline = time.monotonic() + 300  # a deadline for the child, not a speed target
    while jobs[0].exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not jobs[0].exists(), "the background build did not finish"
    assert (entry / "meta.json").is_file()  # the entry the next start looks up: same weights, same calibration
    monkeypatch.setenv(rt.BACKGROUND_ENV, "0")
    rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path / "other", agreement_crops=crops, defer_builds=True)
    assert not list((tmp_path / "other").glob("int8-job-*"))  # switched off: no job, no process



@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                    reason="needs OpenVINO and NNCF")
def test_a_start_that_defers_int8_serves_on_fp32_without_trying_bf16(ckpt, tmp_path, monkeypatch):
    """The cold start's cost: compiling bf16 and scoring the agreement crops in eager fp32 for its guard is left
    to the next start, which chooses with int8 built."""
    built = []
    real = rt._build
    monkeypatch.setattr(rt, "_build", lambda kind, *a, **k: built.append(kind) or real(kind, *a, **k))
    monkeypatch.setattr(rt, "eager_reference", lambda *a, **k: pytest.fail("eager reference computed"))
    first = rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path, agreement_crops=agreement_crops()[:40],
                              defer_builds=True)
    assert first.precision == "fp32" and built == ["openvino"]
    assert "openvino-bf16: not tried while int8 is built in the background" in first.notice
    built.clear()
    monkeypatch.setattr(rt, "_nncf_present", lambda: False)  # no NNCF: int8 can never come, bf16 is tried
    monkeypatch.setattr(rt, "eager_reference", lambda module, x, cache: np.full(len(x), 0.5, np.float32))
    rt.create_runtime(ckpt, "cpu", cache_dir=tmp_path / "no-nncf", agreement_crops=agreement_crops()[:40],
                      defer_builds=True)
    assert "openvino-bf16" in built  # tried (whether this CPU runs bf16 or not is decided inside)


_RELEASED_ELSEWHERE = """
import gc, os, signal, sys, threading
import models
from models.deploy import export as ex, runtime as rt

ck = models.load_checkpoint(sys.argv[1])
r = rt.create_runtime(ck, "openvino", cache_dir=sys.argv[2], check=False)
r(ex.example_input(ck.preprocessing.size, 1))  # compiled and run on the main thread
box = [r]
del r
releaser = threading.Thread(target=box.clear)  # the last reference goes on another thread (as the GC may do)
releaser.start()
releaser.join()
gc.collect()
hits = []
signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))  # CPython's handlers run on the alternate stack
for _ in range(3):
    os.kill(os.getpid(), signal.SIGUSR1)
junk = [bytes(100) for _ in range(100_000)]
print("signals handled:", len(hits))
"""


def test_an_openvino_model_released_on_another_thread_leaves_signals_deliverable(tiny_checkpoint, tmp_path):
    """OpenVINO's CPU plugin puts its own alternate signal stack on the thread that runs a model and unmaps it
    when the model is released; released on another thread, the first thread was left pointing at unmapped
    memory, and its next signal killed the process with SIGSEGV and no traceback (the suite's crash,
    docs/stability.md). Before the fix this process died of SIGSEGV (-11) with an empty stderr."""
    import subprocess
    import sys
    from pathlib import Path

    if "openvino" not in available_cpu_engines():
        pytest.skip("OpenVINO is not installed")
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _RELEASED_ELSEWHERE, str(tiny_checkpoint),
                           str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0 and "signals handled: 3" in proc.stdout, (proc.returncode, proc.stderr[-3000:])
