"""Inference backends behind the scorer: normalised b 3 S S float32 -> P(attack) b, as float32 numpy.

    tensorrt  torch-tensorrt dynamo engine, FP16, batch 1..16; built once per weights / GPU model / TensorRT /
              torch version and cached in the user cache folder, loaded on the next start.
    cuda      torch on the GPU in half precision, one CUDA graph per power-of-two batch bucket (launch overhead
              dominates small batches of a small ViT); optionally torch.compile'd before capture.
    cpu       the fastest CPU engine that is installed and passes its start-up check: OpenVINO int8 (NNCF
              post-training quantisation, stem fp32), else OpenVINO bf16, else OpenVINO fp32 (IR cached like the
              TensorRT engine), else ONNX Runtime (ONNX cached), else torch eager (docs/performance.md).
    auto      the first of tensorrt, cuda, cpu that builds and passes the start-up check, with a notice.

``create_runtime`` also accepts the CPU engines by name (``openvino``, ``onnxruntime``, ``torch``) for the
benchmark and tests (and ``openvino-int8``, ``openvino-bf16``); those never fall back. Every runtime is
checked at start against torch eager fp32 and rejected (with a notice, then the next one is tried) when it fails:

    fp32 runtimes     max |dP| <= ``tolerance`` (1e-4; torch 1e-5) on a reproducible random batch.
    reduced precision (int8, bf16, fp16: ``Runtime.precision != "fp32"``) the decision-agreement guard
                      (``check_agreement``): on the shipped agreement crops (assets/agreement_crops.jpg, 200
                      face crops cut from the demo clip by the app's own detector and crop contract) the same
                      live / attack decision as eager fp32 at the checkpoint's threshold on >= 99.5 % of the
                      crops, and |dP| <= 0.02 on every one. Without agreement crops a reduced-precision runtime
                      is not tried at all (it cannot be checked).

Eager fp32's probabilities on the agreement crops are cached per weights and crops (``<cache>/reference/``), so
a second start runs only the candidate on them. Calls are serialised by a lock, so one runtime may be shared
between threads. A scorer with routing outputs (``LivenessScorer(routing=True)``) is exported as is: every
runtime returns P(attack) from ``__call__`` and the triple (P, expert shares, token dispatch) from
``run_routing``, both from one model call.

Cache entries are keyed by a hash of the exported tensors (weights, baked text features, logit scale), a hash
of the model code, the input size, the batch range and the runtime versions, so a changed model never reuses a
stale export; they are written under a temporary name and renamed into place.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from . import export as _export
from ..atomic import atomic_path, write_text_atomic
from ..checkpoint import Checkpoint
from ..clip import LivenessScorer
from ..tensors import weights_digest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "cuda", "cpu")
CPU_ENGINES = ("openvino", "onnxruntime", "torch")  # fp32 CPU engines
REDUCED_CPU_ENGINES = ("openvino-int8", "openvino-bf16")  # reduced precision, guarded by decision agreement
# the cpu chain, fastest first (docs/performance.md); a candidate that fails its check hands over to the next
CPU_CHAIN = REDUCED_CPU_ENGINES + CPU_ENGINES
# Stated agreement of fp32 runtimes with torch eager fp32, as max |P_backend - P_eager| over a batch.
TOLERANCE = {"torch": 1e-5, "openvino": 1e-4, "onnxruntime": 1e-4, "cuda": 2e-2, "tensorrt": 2e-2}
# The decision-agreement guard of reduced-precision runtimes (issue 15): same live/attack decision as eager
# fp32 at the checkpoint's threshold on at least AGREEMENT_MIN of the agreement crops, and |dP| at most
# AGREEMENT_MAX_DP on every crop.
AGREEMENT_MIN = 0.995
AGREEMENT_MAX_DP = 0.02
AGREEMENT_TILE = 128  # tile size of the agreement-crop mosaic (scripts/make_agreement_crops.py)
# the checkout's copy; the app passes the installed package's (liveness_app.scorer.AGREEMENT_CROPS)
DEFAULT_AGREEMENT_CROPS = Path(__file__).resolve().parents[2] / "assets" / "agreement_crops.jpg"
_MODEL_CODE = ("clip.py", "soft_moe.py", "deploy/export.py")  # code whose change must invalidate cached exports


def cache_root() -> Path:
    """The user cache folder: $LIVENESS_CACHE_DIR, else platformdirs' user cache dir for "liveness-app"."""
    env = os.environ.get("LIVENESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("liveness-app"))


def fingerprint(module: LivenessScorer) -> str:
    """sha256 over the model code and the scorer's tensors (``tensors.weights_digest``): what an export holds.

    Remembered on the module for the duration of one ``create_runtime`` (the cache key and the eager
    reference both need it; hashing 28 MB twice is start-up time), see ``_fingerprint_once``."""
    memo = getattr(module, "_fingerprint_memo", None)
    if memo is not None:
        return memo
    h = hashlib.sha256()
    here = Path(__file__).resolve().parents[1]  # models/
    for f in _MODEL_CODE:
        h.update((here / f).read_bytes())
    return weights_digest(module.state_dict(), h)


def cache_key(module: LivenessScorer, runtime: str, versions: dict[str, str], max_batch: int,
              extra: "dict | None" = None) -> str:
    """Key of one cached export: weights + code hash, runtime and its versions, input size, batch range, whether
    it has the routing outputs, and ``extra`` (e.g. the calibration data of an int8 model)."""
    parts = {"weights": fingerprint(module), "runtime": runtime, "size": module.image_size,
             "batch": [_export.MIN_BATCH, max_batch], "versions": versions,
             "routing": bool(getattr(module, "routing", False)), **(extra or {})}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return f"{runtime}-{module.image_size}px-b{max_batch}-{digest}"


def _load_cached(folder: Path, build, load, what: str):
    """Build the cache entry ``folder`` if needed (``_cached_dir``) and return (folder, built_now, load(folder)).

    A damaged entry (``load`` raises) is deleted, rebuilt and loaded once more: the one build / try / delete /
    rebuild rule of every cached runtime."""
    folder, built = _cached_dir(folder, build)
    try:
        return folder, built, load(folder)
    except Exception as e:  # noqa: BLE001 - each engine raises its own types for a damaged file
        log.warning("cached %s %s unusable (%s); rebuilding", what, folder, e)
        shutil.rmtree(folder, ignore_errors=True)
        folder, built = _cached_dir(folder, build)
        return folder, built, load(folder)


def _cached_dir(folder: Path, build) -> tuple[Path, bool]:
    """``folder`` if it is complete (has meta.json), else build into a temporary sibling and rename it in.

    ``build(tmpdir)`` writes the files. Returns (folder, built_now). A concurrent builder that wins the rename
    is fine: its folder is as good as ours, which is discarded.
    """
    if (folder / "meta.json").is_file():
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        t0 = time.perf_counter()
        meta = build(tmp)
        meta["build_seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks the folder complete
        if folder.exists():  # an incomplete leftover of a crashed build
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, True

# --- the decision-agreement guard ------------------------------------------------------------------------
def load_agreement_crops(path: "str | Path" = DEFAULT_AGREEMENT_CROPS, tile: int = AGREEMENT_TILE) -> np.ndarray:
    """The agreement crops: uint8 RGB n x tile x tile x 3, cut row-major out of the JPEG mosaic at ``path``.

    All-black tiles (padding of a partial last row) are dropped. ValueError for a file that is not such a
    mosaic, FileNotFoundError when it is missing. OpenCV is imported here only: models/ stays importable
    without it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"agreement crops not found: {path} (scripts/make_agreement_crops.py builds them)")
    import cv2
    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape[0] % tile or img.shape[1] % tile:
        raise ValueError(f"{path} is not a mosaic of {tile} px crops "
                         f"({'undecodable' if img is None else f'{img.shape[1]}x{img.shape[0]} px'})")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    rows, cols = img.shape[0] // tile, img.shape[1] // tile
    crops = rgb.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, tile, tile, 3)
    return np.ascontiguousarray(crops[crops.reshape(len(crops), -1).max(axis=1) > 8])


def agreement_batch(crops: np.ndarray, preprocessing) -> np.ndarray:
    """uint8 RGB crops -> the normalised float32 batch b 3 S S with the checkpoint's preprocessing.

    The one preprocessing of app, training and evaluation (``models.preprocess``)."""
    from ..preprocess import preprocess

    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"agreement crops must be uint8 RGB n x S x S x 3, got {crops.dtype} {crops.shape}")
    return preprocess(crops, preprocessing)


def _float_bytes(x: np.ndarray) -> memoryview:
    """The float32 bytes of ``x`` for hashing, without the copy ``tobytes`` makes (half the time on 39 MB)."""
    return memoryview(np.ascontiguousarray(x, dtype=np.float32)).cast("B")


def _eager_p(module: LivenessScorer, x: np.ndarray, chunk: int = 16) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([_export.p_attack(module(torch.from_numpy(x[i:i + chunk]))).float().numpy()
                               for i in range(0, len(x), chunk)])


def eager_reference(module: LivenessScorer, x: np.ndarray, cache_dir: "Path | None" = None) -> np.ndarray:
    """torch eager fp32 P(attack) of ``x``, cached under ``cache_dir/reference`` per weights, code and input
    bytes (eager is the reference, deterministic for them), so a second start skips the eager pass."""
    if cache_dir is None:
        return _eager_p(module, x)
    h = hashlib.sha256(fingerprint(module).encode())
    h.update(str(x.shape).encode())
    h.update(_float_bytes(x))
    path = Path(cache_dir) / "reference" / f"{h.hexdigest()[:32]}.npy"
    try:
        ref = np.load(path)
        if ref.shape == (len(x),) and np.isfinite(ref).all():
            return ref
    except (OSError, ValueError):
        pass
    ref = _eager_p(module, x)
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, ref)
    except OSError as e:  # a read-only cache only costs the eager pass next time
        log.info("cannot cache the eager reference in %s: %s", path.parent, e)
    return ref


class Agreement:
    """The guard's measurement: crops compared, fraction with the same decision, max |dP|, and the verdict."""

    def __init__(self, p_runtime: np.ndarray, p_ref: np.ndarray, threshold: float,
                 min_agreement: float = AGREEMENT_MIN, max_dp: float = AGREEMENT_MAX_DP):
        p_runtime = np.asarray(p_runtime, dtype=np.float64).reshape(-1)
        p_ref = np.asarray(p_ref, dtype=np.float64).reshape(-1)
        if p_runtime.shape != p_ref.shape or p_ref.size == 0:
            raise ValueError(f"agreement needs two equal non-empty score vectors, got {p_runtime.shape} and "
                             f"{p_ref.shape}")
        self.n = int(p_ref.size)
        self.threshold = float(threshold)
        finite = bool(np.isfinite(p_runtime).all())
        self.same_decision = float(((p_runtime >= threshold) == (p_ref >= threshold)).mean()) if finite else 0.0
        self.flipped = int(round((1.0 - self.same_decision) * self.n))
        self.max_dp = float(np.abs(p_runtime - p_ref).max()) if finite else float("inf")
        self.passed = finite and self.same_decision >= min_agreement and self.max_dp <= max_dp
        self.min_agreement, self.max_dp_allowed = min_agreement, max_dp

    def __str__(self) -> str:
        return (f"same decision on {self.same_decision:.1%} of {self.n} crops ({self.flipped} flipped; needs >= "
                f"{self.min_agreement:.1%}), max |dP| {self.max_dp:.2e} (needs <= {self.max_dp_allowed:g})")

    def as_dict(self) -> dict:
        return {"crops": self.n, "same_decision": self.same_decision, "flipped": self.flipped,
                "max_abs_dp": self.max_dp, "threshold": self.threshold, "passed": self.passed}


_GUARD_RECHECK = 16  # crops re-scored on a start whose full guard result is cached


def check_agreement(runtime: "Runtime", x: np.ndarray, p_ref: np.ndarray, threshold: float,
                    record: "Path | None" = None) -> Agreement:
    """Score ``x`` with ``runtime`` and compare its decisions with eager fp32's ``p_ref``; RuntimeError (naming
    the figures) when the guard fails. The measurement is kept as ``runtime.agreement``.

    ``record``: a JSON file beside the runtime's cached model. A passed full guard is written there with the
    runtime's own scores; on the next start with the same model, crops, reference and CPU only the first
    ``_GUARD_RECHECK`` crops are re-scored, and they must reproduce the recorded scores to 1e-4 (the same
    compiled model on the same CPU), else the full guard runs again.
    """
    stamp = {"crops": hashlib.sha256(_float_bytes(x)).hexdigest()[:24],
             "reference": hashlib.sha256(_float_bytes(p_ref)).hexdigest()[:24],
             "threshold": float(threshold), "cpu": platform.processor() or platform.machine(),
             "runtime": runtime.name}
    if record is not None:
        try:
            saved = json.loads(Path(record).read_text())
            k = min(_GUARD_RECHECK, len(x))
            if saved.get("stamp") == stamp and saved["agreement"]["passed"]:
                got = runtime(x[:k])
                if np.isfinite(got).all() and np.abs(got - np.asarray(saved["p_runtime"][:k])).max() <= 1e-4:
                    a = Agreement(np.asarray(saved["p_runtime"]), p_ref, threshold)
                    runtime.agreement = a
                    if a.passed:
                        return a
        except (OSError, ValueError, KeyError, TypeError):
            pass
    p = runtime(x)
    a = Agreement(p, p_ref, threshold)
    runtime.agreement = a
    message = f"{runtime.name} fails the decision-agreement guard against torch eager fp32: {a}"
    if record is not None:  # passed or failed: the next start re-uses it (see _recorded_rejection)
        try:
            write_text_atomic(record, json.dumps({"stamp": stamp, "agreement": a.as_dict(), "message": message,
                                                  "p_runtime": [float(v) for v in p]}))
        except OSError as e:
            log.info("cannot record the guard result in %s: %s", record, e)
    if not a.passed:
        raise RuntimeError(message)
    return a


def _recorded_rejection(kind: str, module: LivenessScorer, cache: Path, max_batch: int,
                        calibration: "np.ndarray | None") -> str:
    """The guard's message if it refused ``kind`` for this model on this CPU at an earlier start, else ""."""
    try:
        precision = kind.split("-")[1]
        folder, _ = OpenVINORuntime.entry(module, cache, max_batch, precision, calibration)
        saved = json.loads((folder / f"guard-openvino-{precision}-cpu.json").read_text())
        if not saved["agreement"]["passed"] and saved["stamp"]["cpu"] == (platform.processor() or
                                                                          platform.machine()):
            return f"{saved['message']} (recorded at an earlier start)"
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, ImportError):
        pass
    return ""


class Runtime:
    """One inference engine for the scorer. ``runtime(x)`` -> float32 P(attack) per row of x (b 3 S S);
    ``run_routing(x)`` -> (P, expert shares b L n, token dispatch b L P n) from the same single model call.

    Batches above ``max_batch`` are split; calls are serialised by a lock (engines keep per-call state).
    ``precision`` is "fp32" or the reduced one ("int8", "bf16", "fp16"), which decides the start-up check.
    ``calls`` counts model calls (one per batch of at most ``max_batch``), for tests and the bench.
    """

    name = "runtime"
    backend = "cpu"  # the family: tensorrt | cuda | cpu
    precision = "fp32"

    def __init__(self, input_size: int, max_batch: int, device: str, routing: bool = False):
        self.input_size = input_size
        self.max_batch = max_batch
        self.device = device
        self.routing = bool(routing)  # the model returns the routing statistics too
        self.notice = ""
        self.notice_level = logging.INFO  # WARNING when the notice reports an unexpected fallback
        self.tolerance = TOLERANCE.get(self.name.split("-")[0], 1e-4)
        self.agreement: Agreement | None = None  # the guard's figures, once checked
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def reduced_precision(self) -> bool:
        return self.precision != "fp32"

    def __call__(self, x: "torch.Tensor | np.ndarray") -> np.ndarray:
        return self._batched(x)[0]

    def run_routing(self, x: "torch.Tensor | np.ndarray") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(attack) b, expert shares b L n, token dispatch shares b L P n), one model call per batch.

        A model without MoE blocks gives empty b x 0 x 0 and b x 0 x 0 x 0 routing arrays."""
        outs = self._batched(x)
        if len(outs) == 3:
            return outs[0], outs[1], outs[2]
        b = outs[0].shape[0]
        return outs[0], np.zeros((b, 0, 0), np.float32), np.zeros((b, 0, 0, 0), np.float32)

    def _batched(self, x: "torch.Tensor | np.ndarray") -> list[np.ndarray]:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        s = self.input_size
        if arr.ndim != 4 or arr.shape[1:] != (3, s, s):
            raise ValueError(f"{self.name}: expected a normalised batch b x 3 x {s} x {s}, got {arr.shape}")
        if arr.shape[0] == 0:
            empty = [np.zeros(0, dtype=np.float32)]
            return empty + ([np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0, 0), np.float32)]
                            if self.routing else [])
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        with self._lock:
            chunks = []
            for i in range(0, arr.shape[0], self.max_batch):
                self.calls += 1
                out = self._run(arr[i:i + self.max_batch])
                chunks.append(list(out) if isinstance(out, (tuple, list)) else [out])
        outs = [np.concatenate([c[k] for c in chunks]).astype(np.float32, copy=False) for k in range(len(chunks[0]))]
        outs[0] = outs[0].reshape(-1)
        return outs

    def _run(self, x: np.ndarray):  # x: b 3 S S float32, 1 <= b <= max_batch -> P b, or a list of outputs
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"


def _numpy_outputs(out) -> list[np.ndarray]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().cpu().numpy() for o in outs]


# --- opening an exported file: one opener per format, used by the cached runtimes and ExportedRuntime -------
def open_openvino(xml: "str | Path", config: "dict | None" = None, core=None):
    """Compile an OpenVINO IR (``.xml`` beside its ``.bin``) for the CPU; fp32 inference unless ``config`` says
    otherwise. The calling thread keeps its own signal stack (``export.keep_signal_stack``)."""
    _export.disable_openvino_telemetry()  # before the import: importing openvino sends a usage event
    import openvino as ov
    core = ov.Core() if core is None else core
    with _export.keep_signal_stack():
        return core.compile_model(str(Path(xml).with_suffix(".xml")), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", **(config or {})})


def open_onnx(path: "str | Path", threads: int | None = None):
    """An ONNX Runtime CPU session on ``path``, full graph optimisation, ``threads`` intra-op threads."""
    _export.disable_onnxruntime_telemetry()  # before the import: it writes under ~/.cache
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def open_torch_export(path: "str | Path") -> torch.nn.Module:
    """The module of a saved ExportedProgram (any file name: read through a buffer, since
    ``torch.export.load`` wants a .pt2 name)."""
    with open(path, "rb") as f:
        return torch.export.load(f).module()


def open_tensorrt(path: "str | Path") -> torch.nn.Module:
    """The module of a torch-tensorrt engine saved as an ExportedProgram (needs TensorRT and a GPU)."""
    return _export.import_torch_tensorrt().load(str(path)).module()


def _openvino_runner(compiled):
    """x -> the outputs of one OpenVINO infer request on ``compiled`` (copied out of the request's buffers)."""
    with _export.keep_signal_stack():
        request = compiled.create_infer_request()
    n_out = len(compiled.outputs)

    def run(x: np.ndarray) -> list[np.ndarray]:
        with _export.keep_signal_stack():
            request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(n_out)]
    return run


def _module_runner(mod: torch.nn.Module, device: torch.device):
    """x -> the outputs of a loaded torch module (an ExportedProgram's, a TensorRT engine's) on ``device``."""
    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return _numpy_outputs(mod(torch.from_numpy(x).to(device)))
    return run


class ExportedRuntime(Runtime):
    """Runs a file written by ``models.export`` (``fmt`` one of ``export.FORMATS``) through the same opener as
    the cached runtime of that engine: what ``python -m models.export`` checks against eager."""

    def __init__(self, fmt: str, path: "str | Path", input_size: int, max_batch: int = _export.MAX_BATCH,
                 routing: bool = False):
        if fmt not in _export.FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(_export.FORMATS)}")
        self.name = f"{fmt}-file"
        gpu = fmt == "tensorrt"
        super().__init__(input_size, max_batch, "cuda" if gpu else "cpu", routing)
        path = Path(path)
        if fmt in ("openvino", "openvino-int8"):
            self._run = _openvino_runner(open_openvino(path))
        elif fmt == "onnx":
            session = open_onnx(path)
            self._run = lambda x: session.run(None, {"images": x})
        else:
            mod = open_tensorrt(path) if gpu else open_torch_export(path)
            self._run = _module_runner(mod, torch.device("cuda" if gpu else "cpu"))


def compare_with_eager(runtime: Runtime, module: LivenessScorer,
                       batches: "tuple[int, ...]" = (1, 7)) -> dict[int, float]:
    """Max |P_runtime - P_eager fp32| per batch size, on reproducible random inputs (seed = the batch size)."""
    diffs = {}
    for b in batches:
        x = _export.example_input(runtime.input_size, b, seed=b)
        with torch.inference_mode():
            ref = _export.p_attack(module(x)).float().numpy()
        got = runtime(x)
        if got.shape != ref.shape:
            raise RuntimeError(f"{runtime.name} returns shape {got.shape} for batch {b}, eager {ref.shape}")
        diffs[b] = float(np.abs(got - ref).max())
    return diffs


class TorchRuntime(Runtime):
    """torch eager, fp32, CPU: the reference every other runtime is checked against."""

    name = "torch-cpu"

    def __init__(self, module: LivenessScorer, max_batch: int = _export.MAX_BATCH, threads: int | None = None):
        super().__init__(module.image_size, max_batch, "cpu", getattr(module, "routing", False))
        self.module = module.eval()
        if threads:
            torch.set_num_threads(threads)

    def _run(self, x: np.ndarray):
        with torch.inference_mode():
            return _numpy_outputs(self.module(torch.from_numpy(x)))


class OpenVINORuntime(Runtime):
    """OpenVINO on the CPU from a cached IR, latency hint; ``precision`` fp32 | bf16 | int8.

    fp32: fp32 weights and inference. bf16: the same IR, ``INFERENCE_PRECISION_HINT=bf16`` (needs a CPU with
    native bf16, AVX512_BF16 or AMX; refused otherwise, since OpenVINO would silently run fp32). int8: an IR
    quantised at export time by NNCF from ``calibration`` (normalised crops), stem kept fp32, run with fp32
    inference for what is not quantised. Compiled blobs are cached by OpenVINO itself (``CACHE_DIR`` under the
    entry), so a second start skips compilation.
    """

    name = "openvino-cpu"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = _export.MAX_BATCH,
                 threads: int | None = None, precision: str = "fp32", calibration: "np.ndarray | None" = None):
        if precision not in ("fp32", "bf16", "int8"):
            raise ValueError(f"OpenVINO precision must be fp32, bf16 or int8, got {precision!r}")
        _export.disable_openvino_telemetry()  # before the import: importing openvino sends a usage event
        import openvino as ov
        self.precision = precision
        self.name = "openvino-cpu" if precision == "fp32" else f"openvino-{precision}-cpu"
        super().__init__(module.image_size, max_batch, "cpu", getattr(module, "routing", False))
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise RuntimeError("this CPU has no native bf16 (no AVX512_BF16 / AMX)")
        folder, versions = self.entry(module, cache_dir, max_batch, precision, calibration)

        def build(tmp: Path) -> dict:
            if precision == "int8":
                fp32 = _export.export_openvino(module, tmp / "fp32" / "model.xml", max_batch)
                _export.quantize_openvino_int8(fp32, tmp / "model.xml", calibration)
                shutil.rmtree(tmp / "fp32", ignore_errors=True)
            else:
                _export.export_openvino(module, tmp / "model.xml", max_batch)
            return {"versions": versions, "precision": precision}

        def load(entry: Path):
            config = {"PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                      # OpenVINO's compiled-blob cache: a second start loads the compiled model, not compiling
                      "CACHE_DIR": str(entry / f"compiled-{precision}")}
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            return open_openvino(entry / "model.xml", config, core)

        folder, self.built, compiled = _load_cached(folder, build, load, "OpenVINO model")
        self.cache_path = folder
        self._run = _openvino_runner(compiled)

    @staticmethod
    def entry(module: LivenessScorer, cache_dir: Path, max_batch: int, precision: str,
              calibration: "np.ndarray | None" = None) -> tuple[Path, dict]:
        """(cache folder, versions) of the IR this runtime uses; ``folder / "meta.json"`` exists once built."""
        _export.disable_openvino_telemetry()
        import openvino as ov
        versions = {"openvino": ov.__version__, "torch": torch.__version__}
        extra = None
        if precision == "int8":
            if calibration is None or len(calibration) == 0:
                raise RuntimeError("int8 needs calibration crops")
            versions["nncf"] = _nncf_version()
            extra = {"calibration": hashlib.sha256(_float_bytes(calibration)).hexdigest()[:16],
                     "ignored": list(_export.INT8_IGNORED_PATTERNS)}
        kind = "openvino-int8" if precision == "int8" else "openvino"  # bf16 runs the fp32 IR
        return Path(cache_dir) / "openvino" / cache_key(module, kind, versions, max_batch, extra), versions


@functools.lru_cache(maxsize=1)
def _nncf_version() -> str:
    try:
        from importlib.metadata import version
        return version("nncf")
    except Exception as e:  # noqa: BLE001 - PackageNotFoundError and friends
        raise RuntimeError("int8 quantisation needs NNCF (`pip install nncf`)") from e


class OnnxRuntimeRuntime(Runtime):
    """ONNX Runtime's CPU provider on a cached ONNX export (full graph optimisation)."""

    name = "onnxruntime-cpu"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = _export.MAX_BATCH,
                 threads: int | None = None):
        _export.disable_onnxruntime_telemetry()  # before the import: it writes under ~/.cache
        import onnxruntime as ort
        super().__init__(module.image_size, max_batch, "cpu", getattr(module, "routing", False))
        versions = {"onnxruntime": ort.__version__, "torch": torch.__version__}
        folder = cache_dir / "onnxruntime" / cache_key(module, "onnxruntime", versions, max_batch)

        def build(tmp: Path) -> dict:
            _export.export_onnx(module, tmp / "model.onnx")
            return {"versions": versions}

        folder, self.built, self._session = _load_cached(
            folder, build, lambda entry: open_onnx(entry / "model.onnx", threads), "ONNX model")
        self.cache_path = folder

    def _run(self, x: np.ndarray):
        return self._session.run(None, {"images": x})


def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


class CudaRuntime(Runtime):
    """torch on a CUDA GPU in half precision; one CUDA graph per batch bucket (1, 2, 4, ... max_batch).

    A batch runs in the smallest bucket that holds it (rows are independent, so the padding rows' stale
    contents never reach the real rows' outputs). ``compile=True`` runs torch.compile before capture.
    """

    name = "cuda-fp16"

    def __init__(self, module: LivenessScorer, max_batch: int = _export.MAX_BATCH, dtype: torch.dtype = torch.half,
                 cuda_graphs: bool = True, compile: bool = False, device: str = "cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU")
        dev = torch.device(device)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.name = {torch.half: "cuda-fp16", torch.bfloat16: "cuda-bf16", torch.float32: "cuda-fp32"}[dtype]
        self.precision = {torch.half: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
        super().__init__(module.image_size, max_batch, f"{dev} ({_gpu_name(dev)})", getattr(module, "routing", False))
        self.dtype, self._dev = dtype, dev
        # a copy: the checkpoint's model shares ``visual`` with the scorer and must stay fp32 on the CPU
        self.module = copy.deepcopy(module).to(dev, dtype).eval()
        # dynamic batch: one compilation serves every bucket (a static one would recompile per bucket)
        self._fn = torch.compile(self.module, dynamic=True) if compile else self.module
        self.compiled = compile
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.buckets = [b for b in (2 ** i for i in range(13)) if b < max_batch] + [max_batch]
        if cuda_graphs:
            pool = None
            for b in self.buckets:
                g, x_in, y_out = self._capture(b, pool)
                pool = g.pool()  # one memory pool shared by all graphs
                self._graphs[b] = (g, x_in, y_out)

    @torch.inference_mode()
    def _capture(self, b: int, pool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, "torch.Tensor | tuple"]:
        s = self.input_size
        x_in = torch.zeros(b, 3, s, s, device=self._dev, dtype=self.dtype)
        side = torch.cuda.Stream(self._dev)
        side.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(side):  # warm-up (cuBLAS handles, compile) off the capture
            for _ in range(3):
                self._fn(x_in)
        torch.cuda.current_stream(self._dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            y_out = self._fn(x_in)
        return graph, x_in, y_out

    @torch.inference_mode()
    def _run(self, x: np.ndarray):
        b = x.shape[0]
        xt = torch.from_numpy(x)
        if not self._graphs:
            return _numpy_outputs(self._fn(xt.to(self._dev, self.dtype)))
        bucket = next(k for k in self.buckets if k >= b)
        graph, x_in, y_out = self._graphs[bucket]
        x_in[:b].copy_(xt)  # host fp32 -> device half, one copy
        graph.replay()
        outs = y_out if isinstance(y_out, (tuple, list)) else (y_out,)
        return [o[:b].float().cpu().numpy() for o in outs]  # .cpu() synchronises


class TensorRTRuntime(Runtime):
    """A torch-tensorrt FP16 engine, batch 1..max_batch, built once and cached per weights and versions."""

    name = "tensorrt-fp16"
    precision = "fp16"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = _export.MAX_BATCH):
        trt = _export.import_torch_tensorrt()  # ExportError without torch-tensorrt / TensorRT / a GPU
        import tensorrt
        dev = torch.device("cuda", torch.cuda.current_device())
        super().__init__(module.image_size, max_batch, f"{dev} ({_gpu_name(dev)})", getattr(module, "routing", False))
        versions = {"gpu": _gpu_name(dev), "capability": ".".join(map(str, torch.cuda.get_device_capability(dev))),
                    "tensorrt": tensorrt.__version__, "torch_tensorrt": trt.__version__, "torch": torch.__version__}
        root = cache_dir / "tensorrt"
        folder = root / cache_key(module, "tensorrt", versions, max_batch)

        def build(tmp: Path) -> dict:
            # a copy on the GPU: the checkpoint's model stays on the CPU
            _export.export_tensorrt(copy.deepcopy(module), tmp / "model.ep", root / "engines", max_batch)
            return {"versions": versions}

        folder, self.built, mod = _load_cached(folder, build, lambda entry: open_tensorrt(entry / "model.ep"),
                                               "TensorRT engine")
        self.cache_path = folder
        self._run = _module_runner(mod, dev)


BACKGROUND_ENV = "LIVENESS_BACKGROUND_BUILDS"  # "0": never start a background int8 build (tests, read-only installs)


def _build_in_background(checkpoint: Checkpoint, routing: bool, cache_dir: Path, max_batch: int,
                         threads: int | None, calibration: np.ndarray) -> "subprocess.Popen | None":
    """Quantise and cache the int8 model in a separate low-priority process, for the next start to use.

    A process, not a thread: the running app neither waits for it at exit (a short ``--images`` run ends at
    once; the build finishes on its own, detached in its own session) nor shares its heap and thread pools
    with NNCF and a second OpenVINO compile. The job (the checkpoint, fp32, and the calibration crops) is
    written to a folder in the cache that the child removes when done; cache entries are written atomically,
    so a killed build leaves no broken entry, and a second start while one runs only builds it twice.
    """
    if os.environ.get(BACKGROUND_ENV, "1") == "0":
        log.info("background int8 build skipped (%s=0)", BACKGROUND_ENV)
        return None
    import subprocess
    import sys

    from ..checkpoint import save_checkpoint

    job = Path(tempfile.mkdtemp(prefix="int8-job-", dir=cache_dir))
    save_checkpoint(job / "model.safetensors", checkpoint.model, threshold=checkpoint.threshold)
    np.save(job / "calibration.npy", np.ascontiguousarray(calibration, np.float32))
    (job / "job.json").write_text(json.dumps({"cache": str(cache_dir), "max_batch": max_batch, "threads": threads,
                                              "routing": routing}))
    with open(job / "build.log", "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "models.deploy.runtime", "--build-int8", str(job)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parents[2]))
    log.info("int8 model: building in the background (pid %d, job %s); the next start uses it", proc.pid, job)
    return proc


def _run_build_job(job: Path) -> int:
    """The child of ``_build_in_background``: build the int8 entry described in ``job``, then remove ``job``."""
    from ..checkpoint import load_checkpoint

    try:
        os.nice(19)
    except (AttributeError, OSError):
        pass
    spec = json.loads((job / "job.json").read_text())
    try:
        module = load_checkpoint(job / "model.safetensors").model.scorer(routing=spec["routing"]).eval()
        t0 = time.perf_counter()
        OpenVINORuntime(module, Path(spec["cache"]), spec["max_batch"], spec["threads"], precision="int8",
                        calibration=np.load(job / "calibration.npy"))
        print(f"int8 model built in {time.perf_counter() - t0:.1f} s", flush=True)
        return 0
    except Exception as e:  # noqa: BLE001 - a failed optional build is a line in its log, nothing more
        print(f"background int8 build failed: {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _build(kind: str, module: LivenessScorer, cache_dir: Path, max_batch: int, threads: int | None,
           calibration: "np.ndarray | None" = None) -> Runtime:
    if kind == "tensorrt":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU")
        return TensorRTRuntime(module, cache_dir, max_batch)
    if kind == "cuda":
        return CudaRuntime(module, max_batch)
    if kind == "openvino":
        return OpenVINORuntime(module, cache_dir, max_batch, threads)
    if kind == "openvino-bf16":
        return OpenVINORuntime(module, cache_dir, max_batch, threads, precision="bf16")
    if kind == "openvino-int8":
        return OpenVINORuntime(module, cache_dir, max_batch, threads, precision="int8", calibration=calibration)
    if kind == "onnxruntime":
        return OnnxRuntimeRuntime(module, cache_dir, max_batch, threads)
    if kind == "torch":
        return TorchRuntime(module, max_batch, threads)
    raise ValueError(f"unknown backend {kind!r}")


def verify(runtime: Runtime, module: LivenessScorer, batch: int = 3, *,
           reference: "tuple[np.ndarray, np.ndarray, float] | None" = None) -> float:
    """The start-up check of ``runtime`` against torch eager fp32 ``module``; returns the max |dP| it measured.

    fp32 runtimes: max |P_runtime - P_eager| on a reproducible random batch must not exceed
    ``runtime.tolerance``. Reduced-precision runtimes: the decision-agreement guard on ``reference`` =
    (agreement crops normalised b 3 S S, eager fp32 P on them, decision threshold), see ``check_agreement``;
    without a reference they cannot be checked and are refused. Raises RuntimeError naming the figures.
    """
    if runtime.reduced_precision:
        if reference is None:
            raise RuntimeError(f"{runtime.name} is {runtime.precision}: it needs the agreement crops for its "
                               "decision-agreement check, and none were given")
        x, p_ref, threshold = reference
        folder = getattr(runtime, "cache_path", None)
        record = Path(folder) / f"guard-{runtime.name}.json" if folder is not None else None
        return check_agreement(runtime, x, p_ref, threshold, record).max_dp
    diff = compare_with_eager(runtime, module, (batch,))[batch]
    if not np.isfinite(diff) or diff > runtime.tolerance:
        raise RuntimeError(f"{runtime.name} disagrees with torch eager fp32 by {diff:.2e} "
                           f"(> tolerance {runtime.tolerance:.0e})")
    return diff


def create_runtime(checkpoint: Checkpoint, backend: str = "auto", *, cache_dir: "str | Path | None" = None,
                   max_batch: int = _export.MAX_BATCH, threads: int | None = None,
                   check: bool = True, fallback: bool = True,
                   agreement_crops: "np.ndarray | str | Path | None" = None,
                   routing: bool = True, defer_builds: bool = False) -> Runtime:
    """Build the runtime for ``backend`` (auto | tensorrt | cuda | cpu, or a CPU engine by name).

    ``tensorrt`` falls back to ``cuda`` then ``cpu``, ``cuda`` to ``cpu``, ``cpu`` tries ``CPU_CHAIN`` in order
    (OpenVINO int8, OpenVINO bf16, OpenVINO fp32, ONNX Runtime, torch); each fallback is logged and put in
    ``runtime.notice`` with its reason. ``auto``'s notice also names the choice. A CPU engine named explicitly
    (benchmarks, tests) never falls back. ``check`` runs the start-up check of each candidate (see
    ``verify``); reduced-precision candidates need ``agreement_crops`` (uint8 RGB n S S 3, or the path of a
    crop mosaic, see ``load_agreement_crops``), also their int8 calibration set (every other crop), and are
    skipped without them. ``routing`` (default) exports the routing outputs for a model with MoE blocks, so
    ``run_routing`` costs no extra call. ``defer_builds`` (the app) keeps the slow int8 quantisation off the
    start path: without a cached int8 model the chain moves on at once and the int8 model is built in a
    low-priority background thread for the next start. ``fallback=False`` builds exactly ``backend``
    (``cpu``: the first of the chain) or raises RuntimeError, as the benchmark needs.
    """
    names = BACKENDS + CPU_ENGINES + REDUCED_CPU_ENGINES
    if backend not in names:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(names)}")
    cache = Path(cache_dir) if cache_dir else cache_root()
    module = checkpoint.model.scorer(routing=routing and checkpoint.model.has_moe).eval()
    # the module's weights are fixed from here on (a fresh scorer each call): hash them once
    module._fingerprint_memo = fingerprint(module)
    if isinstance(agreement_crops, (str, Path)):
        agreement_crops = load_agreement_crops(agreement_crops)
    x_ref = None  # the agreement crops, normalised
    deferred = None  # calibration set of an int8 build left to the background
    reference = None  # (x_ref, eager P, threshold), computed once, only when a reduced-precision candidate needs it
    cpu_chain = list(CPU_CHAIN)
    chain = {"auto": ["tensorrt", "cuda"] + cpu_chain, "tensorrt": ["tensorrt", "cuda"] + cpu_chain,
             "cuda": ["cuda"] + cpu_chain, "cpu": cpu_chain}.get(backend, [backend])
    if not fallback:
        if backend == "auto":
            raise ValueError("fallback=False needs a concrete backend, not 'auto'")
        chain = chain[:1]
    failures: list[str] = []
    unexpected = False  # a failure other than "no GPU" / "reduced precision not usable": worth a warning
    for kind in chain:
        try:
            t0 = time.perf_counter()
            if kind in REDUCED_CPU_ENGINES and check and agreement_crops is None:
                raise RuntimeError("no agreement crops to check reduced precision with")
            if x_ref is None and agreement_crops is not None and kind in REDUCED_CPU_ENGINES + ("cuda", "tensorrt"):
                x_ref = agreement_batch(agreement_crops, checkpoint.preprocessing)
            # int8 is calibrated on every other agreement crop (the product never needs the training data)
            calibration = x_ref[::2] if kind == "openvino-int8" and x_ref is not None else None
            if (defer_builds and kind == "openvino-int8" and calibration is not None and fallback
                    and not (OpenVINORuntime.entry(module, cache, max_batch, "int8", calibration)[0]
                             / "meta.json").is_file()):
                deferred = calibration  # built once the chain has chosen (one ONNX export at a time)
                raise RuntimeError("not built yet; building it in the background for the next start")
            if kind in REDUCED_CPU_ENGINES and check and x_ref is not None:
                seen = _recorded_rejection(kind, module, cache, max_batch, calibration)
                if seen:  # the guard refused this model here before: do not compile it again to learn that
                    raise RuntimeError(seen)
            rt = _build(kind, module, cache, max_batch, threads, calibration)
            if check and rt.reduced_precision and reference is None and x_ref is not None:
                reference = (x_ref, eager_reference(module, x_ref, cache), float(checkpoint.threshold))
            diff = verify(rt, module, reference=reference) if check else float("nan")
            log.info("backend %s ready in %.1f s (max |dP| vs eager fp32 %.1e%s)", rt.name, time.perf_counter() - t0,
                     diff, f"; {rt.agreement}" if rt.agreement is not None else "")
        except Exception as e:  # noqa: BLE001 - any failure of an optional runtime means: try the next one
            if not fallback or (kind == backend and backend in CPU_ENGINES + REDUCED_CPU_ENGINES):
                raise RuntimeError(f"backend {backend!r} failed: {e}") from e
            reason = f"{kind}: {e}".splitlines()[0]
            # expected on every machine without a GPU, and a reduced-precision candidate that is not usable
            # here (no bf16 in this CPU, no NNCF, or it changes decisions) simply hands over to fp32
            quiet = (backend == "auto" and kind in ("tensorrt", "cuda")) or kind in REDUCED_CPU_ENGINES
            (log.info if quiet else log.warning)("backend %s unavailable: %s", kind, e)
            failures.append(reason)
            unexpected = unexpected or not quiet
            continue
        if deferred is not None:
            _build_in_background(checkpoint, routing and checkpoint.model.has_moe, cache, max_batch, threads,
                                 deferred)
        if failures or backend == "auto":
            why = f" ({'; '.join(failures)})" if failures else ""
            if backend in ("auto", "cpu"):
                rt.notice = f"{backend} chose {rt.name}{why}"
            else:
                rt.notice = f"backend {backend!r} unavailable, using {rt.name}{why}"
            # settling on the CPU of a machine without a GPU, or on fp32 when reduced precision is not usable,
            # is a normal case, not a warning
            rt.notice_level = logging.INFO if not unexpected else logging.WARNING
            log.log(rt.notice_level, "%s", rt.notice)
        return rt
    raise RuntimeError(f"no backend could run the model: {'; '.join(failures)}")


if __name__ == "__main__":  # python -m models.deploy.runtime --build-int8 JOB (started by _build_in_background)
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--build-int8":
        sys.exit(_run_build_job(Path(sys.argv[2])))
    print("usage: python -m models.deploy.runtime --build-int8 JOB_FOLDER (the app starts this itself)", file=sys.stderr)
    sys.exit(2)
