"""The torch-free core of the inference backends: what running a cached OpenVINO model and re-confirming its
guard needs, so that a warm start (models/deploy/warm.py) reaches its first verdict without importing torch.

    cache_root          the user cache folder of exports, eager references and guard records
    Runtime             the interface of every backend (normalised b 3 S S float32 -> P(attack) b)
    the guard           the agreement crops, ``Agreement`` and ``check_agreement`` (the decision-agreement guard of
                        reduced-precision runtimes, with its per-entry record), ``reference_path`` (where eager
                        fp32's scores on the crops are cached)
    OpenVINO            ``open_openvino`` / ``openvino_config`` / ``openvino_runner``: the one way a cached IR is
                        compiled and run, with telemetry off and the thread's signal stack kept

models/deploy/runtime.py builds the backends with torch (export, eager reference, fallback chain) and re-exports
these names; this module imports numpy and the standard library only (OpenCV and OpenVINO when used).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..atomic import write_text_atomic

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MIN_BATCH = 1
MAX_BATCH = 16  # the dynamic batch range of every export: the app scores at most 16 faces per call
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


def disable_openvino_telemetry() -> None:
    """Switch off OpenVINO's usage telemetry for this process; call it before ``import openvino``.

    Importing openvino imports its model converter, which sends a usage event ("import") and, on every
    conversion, more (opt-out, no dialog, since it runs inside a library), writing ``~/intel/openvino_ga_cid``
    and ``~/intel/stats`` under the home folder. The only switch it offers, ``opt_in_out --opt_out``, writes a
    file there too. Without the ``openvino_telemetry`` package OpenVINO uses its own no-op stub, so the package
    is marked unimportable for this process; converter modules already loaded are pointed at the stub.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError -> stub
    for name in ("openvino.tools.ovc", "openvino.tools.ovc.convert_impl", "openvino.tools.ovc.telemetry_utils",
                 "openvino.tools.ovc.utils", "openvino.tools.ovc.main"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "tm"):
            import openvino.tools.ovc.telemetry_stub as stub

            module.tm = stub
            if hasattr(module, "telemetry"):
                module.telemetry = stub.Telemetry()




class _SignalStack(ctypes.Structure):  # stack_t (Linux)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_ONSTACK, _SS_DISABLE = 1, 2
_libc: "ctypes.CDLL | None" = None


@contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Give the calling thread its own alternate signal stack back after an OpenVINO CPU call.

    On CPUs with AMX, OpenVINO 2026.4's CPU plugin installs an alternate signal stack of its own (20 KB,
    mmap'ed) on the thread that compiles or runs a model, replacing the one that thread had (Python's
    faulthandler gives the main thread one), and unmaps it when the compiled model is released, restoring
    the old one only when that happens on the same thread. Released from any other thread (the garbage
    collector on a reader thread, a worker that outlives the model), the buffer is unmapped while the first
    thread's ``sigaltstack`` still points at it. The next signal with an ``SA_ONSTACK`` handler on that thread
    (every Python-level handler has one: torch's SIGCHLD handler after the first DataLoader with workers, a
    SIGTERM/SIGINT handler, faulthandler itself) is then written into unmapped memory, and the kernel kills
    the process with SIGSEGV, with no traceback, or into whatever was mapped there since, which corrupts it
    (docs/stability.md). Restoring the thread's own stack after each call leaves nothing pointing at
    OpenVINO's buffer; its signal frames fit in Python's 58 KB stack as well.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        yield
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    saved = _SignalStack()
    if _libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        now = _SignalStack()
        _libc.sigaltstack(None, ctypes.byref(now))
        if (now.ss_sp, now.ss_size, now.ss_flags & _SS_DISABLE) != (saved.ss_sp, saved.ss_size,
                                                                     saved.ss_flags & _SS_DISABLE):
            restore = _SignalStack(saved.ss_sp, saved.ss_flags & ~_SS_ONSTACK, saved.ss_size)
            if _libc.sigaltstack(ctypes.byref(restore), None) != 0:
                log.warning("could not restore this thread's alternate signal stack (errno %d)", ctypes.get_errno())

def disable_onnxruntime_telemetry() -> None:
    """Switch off ONNX Runtime's usage telemetry for this process; call it before ``import onnxruntime``.

    Since 1.29 the Linux wheels' 1DS telemetry writes a device id and an event database under
    ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` when an environment is created, and uploads a
    ``ProcessInfo`` event. ``ORT_DISABLE_TELEMETRY=1``, read once when onnxruntime is imported, stops all of
    it; a value the user set is left alone.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def cache_root() -> Path:
    """The user cache folder: $LIVENESS_CACHE_DIR, else platformdirs' user cache dir for "liveness-app"."""
    env = os.environ.get("LIVENESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("liveness-app"))


def code_digest() -> "hashlib._Hash":
    """A running SHA-256 over the model code whose change must invalidate cached exports (``_MODEL_CODE``): the
    start of every export fingerprint (``runtime.fingerprint``) and of the warm-start key."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parents[1]  # models/
    for f in _MODEL_CODE:
        h.update((here / f).read_bytes())
    return h


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


def reference_path(cache_dir: "str | Path", fingerprint: str, x: np.ndarray) -> Path:
    """Where eager fp32's P(attack) on the normalised batch ``x`` of the model with export ``fingerprint`` is
    cached (``runtime.eager_reference`` writes it; a warm start reads it)."""
    h = hashlib.sha256(fingerprint.encode())
    h.update(str(x.shape).encode())
    h.update(_float_bytes(x))
    return Path(cache_dir) / "reference" / f"{h.hexdigest()[:32]}.npy"


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
_SINGLE_GUARD = 32  # crops also scored one by one when batch 1 runs on its own compiled model
_SINGLE_RECHECK = 4  # of those, re-scored one by one on a start whose guard result is cached


def _one_by_one(runtime: "Runtime", x: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime(x[i:i + 1]) for i in range(len(x))]) if len(x) else np.zeros(0, np.float32)


def check_agreement(runtime: "Runtime", x: np.ndarray, p_ref: np.ndarray, threshold: float,
                    record: "Path | None" = None, *, max_dp: float = AGREEMENT_MAX_DP,
                    recorded_only: bool = False) -> Agreement:
    """Score ``x`` with ``runtime`` and compare its decisions with eager fp32's ``p_ref``; RuntimeError (naming
    the figures) when the guard fails. The measurement is kept as ``runtime.agreement``.

    ``record``: a JSON file beside the runtime's cached model. A passed full guard is written there with the
    runtime's own scores; on the next start with the same model, crops, reference, bound and CPU only the first
    ``_GUARD_RECHECK`` crops are re-scored, and they must reproduce the recorded scores to 1e-4 (the same
    compiled model on the same CPU), else the full guard runs again, or, with ``recorded_only`` (a warm start,
    which must prove the recorded state and leaves anything else to the full start), RuntimeError.
    ``max_dp``: the bound on |dP| (AGREEMENT_MAX_DP for reduced precision; an fp32 runtime's own tolerance).

    A runtime whose batch of one runs on a model compiled for batch 1 (``runtime.single_batch``) has its first
    ``_SINGLE_GUARD`` crops scored one by one as well, under the same bounds (``runtime.agreement_single``);
    either failing fails the guard, and a recorded result re-scores ``_SINGLE_RECHECK`` of them one by one.
    """
    single = runtime.single_batch
    k1 = min(_SINGLE_GUARD, len(x)) if single else 0
    stamp = {"crops": hashlib.sha256(_float_bytes(x)).hexdigest()[:24],
             "reference": hashlib.sha256(_float_bytes(p_ref)).hexdigest()[:24],
             "threshold": float(threshold), "max_dp": float(max_dp),
             "cpu": platform.processor() or platform.machine(), "runtime": runtime.name, "single_batch": k1}
    if record is not None:
        try:
            saved = json.loads(Path(record).read_text())
            k, k1r = min(_GUARD_RECHECK, len(x)), min(_SINGLE_RECHECK, k1)
            if saved.get("stamp") == stamp and saved["agreement"]["passed"]:
                got = np.concatenate([runtime(x[:k]), _one_by_one(runtime, x[:k1r])])
                want = np.concatenate([np.asarray(saved["p_runtime"][:k]), np.asarray(saved["p_single"][:k1r])])
                if np.isfinite(got).all() and np.abs(got - want).max() <= 1e-4:
                    a = Agreement(np.asarray(saved["p_runtime"]), p_ref, threshold, max_dp=max_dp)
                    a1 = (Agreement(np.asarray(saved["p_single"]), p_ref[:k1], threshold, max_dp=max_dp)
                          if k1 else None)
                    runtime.agreement, runtime.agreement_single = a, a1
                    if a.passed and (a1 is None or a1.passed):
                        return a
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if recorded_only:
        raise RuntimeError(f"{runtime.name}: no passed guard recorded in {record} for these crops, reference and "
                           "CPU, or the model no longer reproduces its recorded scores")
    p = runtime(x)
    a = Agreement(p, p_ref, threshold, max_dp=max_dp)
    p1 = _one_by_one(runtime, x[:k1])
    a1 = Agreement(p1, p_ref[:k1], threshold, max_dp=max_dp) if k1 else None
    runtime.agreement, runtime.agreement_single = a, a1
    if not a.passed:
        message = f"{runtime.name} fails the decision-agreement guard against torch eager fp32: {a}"
    else:
        message = (f"{runtime.name} fails the decision-agreement guard against torch eager fp32 at batch 1 (its "
                   f"model compiled for one crop): {a1}")
    passed = a.passed and (a1 is None or a1.passed)
    if record is not None:  # passed or failed: the next start re-uses it (see runtime._recorded_rejection)
        try:
            write_text_atomic(record, json.dumps({
                "stamp": stamp, "agreement": {**a.as_dict(), "passed": passed}, "message": message,
                "p_runtime": [float(v) for v in p], "p_single": [float(v) for v in p1],
                "agreement_single": a1.as_dict() if a1 is not None else None}))
        except OSError as e:
            log.info("cannot record the guard result in %s: %s", record, e)
    if not passed:
        raise RuntimeError(message)
    return a


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
        self.agreement_single: Agreement | None = None  # the same at batch 1, for a runtime with single_batch
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def single_batch(self) -> bool:
        """True when a batch of one runs on its own model compiled for batch 1 (OpenVINO, ``open_openvino_pair``),
        which the decision-agreement guard then checks as well."""
        return bool(getattr(self._run, "single_batch", False))

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
        torch = sys.modules.get("torch")  # a tensor can only come from a process that imported torch
        is_tensor = torch is not None and isinstance(x, torch.Tensor)
        arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
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


# --- opening an exported file: one opener per format, used by the cached runtimes and ExportedRuntime -------
def open_openvino(xml: "str | Path", config: "dict | None" = None, core=None, *, batch: "int | None" = None):
    """Compile an OpenVINO IR (``.xml`` beside its ``.bin``) for the CPU; fp32 inference unless ``config`` says
    otherwise. ``batch``: compile for that one batch size instead of the IR's dynamic range (see
    ``open_openvino_pair``). The calling thread keeps its own signal stack (``export.keep_signal_stack``)."""
    disable_openvino_telemetry()  # before the import: importing openvino sends a usage event
    import openvino as ov
    core = ov.Core() if core is None else core
    config = {"INFERENCE_PRECISION_HINT": "f32", **(config or {})}
    with keep_signal_stack():
        if batch is None:
            return core.compile_model(str(Path(xml).with_suffix(".xml")), "CPU", config)
        model = core.read_model(str(Path(xml).with_suffix(".xml")))
        shape = model.input(0).get_partial_shape()
        shape[0] = batch
        model.reshape({0: shape})
        return core.compile_model(model, "CPU", config)


def open_openvino_pair(xml: "str | Path", config: "dict | None" = None, core=None, *, single: bool = True):
    """(the IR compiled for its dynamic batch range, the same IR compiled for batch 1, or None if not ``single``).

    OpenVINO's CPU plugin runs a shape known at compile time faster: on the bundled model 20 % (fp32) to 34 %
    (int8) less time per crop at batch 1 (a frame with one face, the app's usual call) than the dynamic-batch
    compilation (docs/performance.md).
    Both come from OpenVINO's blob cache when ``config`` names one. ``openvino_runner`` sends batch 1 to the
    second; the decision-agreement guard checks both (``check_agreement``)."""
    return open_openvino(xml, config, core), open_openvino(xml, config, core, batch=1) if single else None


def openvino_runner(compiled, single=None):
    """x -> the outputs of one OpenVINO infer request on ``compiled`` (copied out of the request's buffers);
    a batch of one goes to ``single`` (the same IR compiled for batch 1, ``open_openvino_pair``) when given."""
    with keep_signal_stack():
        request = compiled.create_infer_request()
        request_1 = single.create_infer_request() if single is not None else request
    n_out = len(compiled.outputs)

    def run(x: np.ndarray) -> list[np.ndarray]:
        req = request_1 if x.shape[0] == 1 else request
        with keep_signal_stack():
            req.infer({0: x})
        return [req.get_output_tensor(i).data.copy() for i in range(n_out)]
    run.single_batch = single is not None
    return run


def openvino_config(entry: "str | Path", precision: str, threads: "int | None" = None) -> dict:
    """The compile configuration of a cached OpenVINO entry: latency hint, the inference precision (bf16 runs the
    fp32 IR with a bf16 hint, int8 and fp32 infer in f32) and OpenVINO's compiled-blob cache in the entry
    (``compiled-<precision>/``), so a second start loads the compiled model instead of compiling it."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "CACHE_DIR": str(Path(entry) / f"compiled-{precision}")}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config
