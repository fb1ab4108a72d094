"""Inference backends behind the scorer: normalised b 3 S S float32 -> P(attack) b, as float32 numpy.

    tensorrt  torch-tensorrt dynamo engine, FP16, batch 1..16; built once per weights / GPU model / TensorRT /
              torch version and cached in the user cache folder, loaded on the next start.
    cuda      torch on the GPU in half precision, one CUDA graph per power-of-two batch bucket (launch overhead
              dominates small batches of a small ViT); optionally torch.compile'd before capture.
    cpu       the fastest CPU engine that is installed: OpenVINO (IR cached like the TensorRT engine), else
              ONNX Runtime (ONNX cached), else torch eager. OpenVINO won on the bundled model (docs/performance.md).
    auto      the first of tensorrt, cuda, cpu that builds and passes the start-up check, with a notice.

``create_runtime`` also accepts the CPU engines by name (``openvino``, ``onnxruntime``, ``torch``) for the
benchmark and tests; those never fall back. Every runtime is checked at start against torch eager fp32 on a
reproducible batch and rejected (with a notice, then the next one is tried) when it differs by more than its
``tolerance``. Calls are serialised by a lock, so one runtime may be shared between threads.

Cache entries are keyed by a hash of the exported tensors (weights, baked text features, logit scale), a hash
of the model code, the input size, the batch range and the runtime versions, so a changed model never reuses a
stale export; they are written under a temporary name and renamed into place.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from . import export as _export
from ..checkpoint import Checkpoint
from ..clip import LivenessScorer
from ..tensors import weights_digest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "cuda", "cpu")
CPU_ENGINES = ("openvino", "onnxruntime", "torch")
# Stated agreement with torch eager fp32, as max |P_backend - P_eager| over a batch (probabilities in [0, 1]).
TOLERANCE = {"torch": 1e-5, "openvino": 1e-4, "onnxruntime": 1e-4, "cuda": 2e-2, "tensorrt": 2e-2}
_MODEL_CODE = ("clip.py", "soft_moe.py", "deploy/export.py")  # code whose change must invalidate cached exports


def cache_root() -> Path:
    """The user cache folder: $LIVENESS_CACHE_DIR, else platformdirs' user cache dir for "liveness-app"."""
    env = os.environ.get("LIVENESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("liveness-app"))


def fingerprint(module: LivenessScorer) -> str:
    """sha256 over the model code and the scorer's tensors (``tensors.weights_digest``): what an export holds."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parents[1]  # models/
    for f in _MODEL_CODE:
        h.update((here / f).read_bytes())
    return weights_digest(module.state_dict(), h)


def cache_key(module: LivenessScorer, runtime: str, versions: dict[str, str], max_batch: int) -> str:
    """Key of one cached export: weights + code hash, runtime and its versions, input size, batch range."""
    parts = {"weights": fingerprint(module), "runtime": runtime, "size": module.image_size,
             "batch": [_export.MIN_BATCH, max_batch], "versions": versions}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return f"{runtime}-{module.image_size}px-b{max_batch}-{digest}"


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


class Runtime:
    """One inference engine for the scorer. ``runtime(x)`` -> float32 P(attack) per row of x (b 3 S S).

    Batches above ``max_batch`` are split; calls are serialised by a lock (engines keep per-call state).
    """

    name = "runtime"
    backend = "cpu"  # the family: tensorrt | cuda | cpu

    def __init__(self, input_size: int, max_batch: int, device: str):
        self.input_size = input_size
        self.max_batch = max_batch
        self.device = device
        self.notice = ""
        self.notice_level = logging.INFO  # WARNING when the notice reports an unexpected fallback
        self.tolerance = TOLERANCE.get(self.name.split("-")[0], 1e-4)
        self._lock = threading.Lock()

    def __call__(self, x: "torch.Tensor | np.ndarray") -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        s = self.input_size
        if arr.ndim != 4 or arr.shape[1:] != (3, s, s):
            raise ValueError(f"{self.name}: expected a normalised batch b x 3 x {s} x {s}, got {arr.shape}")
        if arr.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        with self._lock:
            outs = [self._run(arr[i:i + self.max_batch]) for i in range(0, arr.shape[0], self.max_batch)]
        return np.concatenate(outs).astype(np.float32, copy=False).reshape(-1)

    def _run(self, x: np.ndarray) -> np.ndarray:  # x: b 3 S S float32, 1 <= b <= max_batch -> b
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"


class TorchRuntime(Runtime):
    """torch eager, fp32, CPU: the reference every other runtime is checked against."""

    name = "torch-cpu"

    def __init__(self, module: LivenessScorer, max_batch: int = _export.MAX_BATCH, threads: int | None = None):
        super().__init__(module.image_size, max_batch, "cpu")
        self.module = module.eval()
        if threads:
            torch.set_num_threads(threads)

    def _run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).float().numpy()


class OpenVINORuntime(Runtime):
    """OpenVINO on the CPU from a cached IR (fp32 weights, fp32 inference, latency hint)."""

    name = "openvino-cpu"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = _export.MAX_BATCH,
                 threads: int | None = None):
        _export.disable_openvino_telemetry()  # before the import: importing openvino sends a usage event
        import openvino as ov
        super().__init__(module.image_size, max_batch, "cpu")
        versions = {"openvino": ov.__version__, "torch": torch.__version__}
        folder = cache_dir / "openvino" / cache_key(module, "openvino", versions, max_batch)

        def build(tmp: Path) -> dict:
            _export.export_openvino(module, tmp / "model.xml", max_batch)
            return {"versions": versions}

        folder, self.built = _cached_dir(folder, build)
        self.cache_path = folder
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        try:
            compiled = core.compile_model(str(folder / "model.xml"), "CPU", config)
        except RuntimeError as e:  # a damaged cache entry: rebuild it once
            log.warning("cached OpenVINO model %s unusable (%s); rebuilding", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
            folder, self.built = _cached_dir(folder, build)
            compiled = core.compile_model(str(folder / "model.xml"), "CPU", config)
        self._request = compiled.create_infer_request()

    def _run(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: x})
        return self._request.get_output_tensor(0).data.copy()


class OnnxRuntimeRuntime(Runtime):
    """ONNX Runtime's CPU provider on a cached ONNX export (full graph optimisation)."""

    name = "onnxruntime-cpu"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = _export.MAX_BATCH,
                 threads: int | None = None):
        import onnxruntime as ort
        super().__init__(module.image_size, max_batch, "cpu")
        versions = {"onnxruntime": ort.__version__, "torch": torch.__version__}
        folder = cache_dir / "onnxruntime" / cache_key(module, "onnxruntime", versions, max_batch)

        def build(tmp: Path) -> dict:
            _export.export_onnx(module, tmp / "model.onnx")
            return {"versions": versions}

        folder, self.built = _cached_dir(folder, build)
        self.cache_path = folder
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        try:
            self._session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            log.warning("cached ONNX model %s unusable (%s); rebuilding", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
            folder, self.built = _cached_dir(folder, build)
            self._session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"images": x})[0]


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
        super().__init__(module.image_size, max_batch, f"{dev} ({_gpu_name(dev)})")
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
    def _capture(self, b: int, pool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
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
    def _run(self, x: np.ndarray) -> np.ndarray:
        b = x.shape[0]
        xt = torch.from_numpy(x)
        if not self._graphs:
            return self._fn(xt.to(self._dev, self.dtype)).float().cpu().numpy()
        bucket = next(k for k in self.buckets if k >= b)
        graph, x_in, y_out = self._graphs[bucket]
        x_in[:b].copy_(xt)  # host fp32 -> device half, one copy
        graph.replay()
        return y_out[:b].float().cpu().numpy()  # .cpu() synchronises


class TensorRTRuntime(Runtime):
    """A torch-tensorrt FP16 engine, batch 1..max_batch, built once and cached per weights and versions."""

    name = "tensorrt-fp16"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = _export.MAX_BATCH):
        trt = _export.import_torch_tensorrt()  # ExportError without torch-tensorrt / TensorRT / a GPU
        import tensorrt
        dev = torch.device("cuda", torch.cuda.current_device())
        super().__init__(module.image_size, max_batch, f"{dev} ({_gpu_name(dev)})")
        versions = {"gpu": _gpu_name(dev), "capability": ".".join(map(str, torch.cuda.get_device_capability(dev))),
                    "tensorrt": tensorrt.__version__, "torch_tensorrt": trt.__version__, "torch": torch.__version__}
        root = cache_dir / "tensorrt"
        folder = root / cache_key(module, "tensorrt", versions, max_batch)

        def build(tmp: Path) -> dict:
            # a copy on the GPU: the checkpoint's model stays on the CPU
            _export.export_tensorrt(copy.deepcopy(module), tmp / "model.ep", root / "engines", max_batch)
            return {"versions": versions}

        folder, self.built = _cached_dir(folder, build)
        self.cache_path = folder
        try:
            self._mod = trt.load(str(folder / "model.ep")).module()
        except Exception as e:  # noqa: BLE001 - a damaged entry: rebuild once
            log.warning("cached TensorRT engine %s unusable (%s); rebuilding", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
            folder, self.built = _cached_dir(folder, build)
            self._mod = trt.load(str(folder / "model.ep")).module()
        self._dev = dev

    def _run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._mod(torch.from_numpy(x).to(self._dev)).float().cpu().numpy()


def _build(kind: str, module: LivenessScorer, cache_dir: Path, max_batch: int, threads: int | None) -> Runtime:
    if kind == "tensorrt":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU")
        return TensorRTRuntime(module, cache_dir, max_batch)
    if kind == "cuda":
        return CudaRuntime(module, max_batch)
    if kind == "openvino":
        return OpenVINORuntime(module, cache_dir, max_batch, threads)
    if kind == "onnxruntime":
        return OnnxRuntimeRuntime(module, cache_dir, max_batch, threads)
    if kind == "torch":
        return TorchRuntime(module, max_batch, threads)
    raise ValueError(f"unknown backend {kind!r}")


def verify(runtime: Runtime, module: LivenessScorer, batch: int = 3) -> float:
    """Max |P_runtime - P_eager_fp32| on a reproducible batch; raises RuntimeError above runtime.tolerance."""
    x = _export.example_input(runtime.input_size, batch, seed=1234)
    with torch.inference_mode():
        ref = module(x).float().numpy()
    got = runtime(x)
    diff = float(np.abs(got - ref).max())
    if not np.isfinite(diff) or diff > runtime.tolerance:
        raise RuntimeError(f"{runtime.name} disagrees with torch eager fp32 by {diff:.2e} "
                           f"(> tolerance {runtime.tolerance:.0e})")
    return diff


def create_runtime(checkpoint: Checkpoint, backend: str = "auto", *, cache_dir: "str | Path | None" = None,
                   max_batch: int = _export.MAX_BATCH, threads: int | None = None,
                   check: bool = True, fallback: bool = True) -> Runtime:
    """Build the runtime for ``backend`` (auto | tensorrt | cuda | cpu, or a CPU engine by name).

    ``tensorrt`` falls back to ``cuda`` then ``cpu``, ``cuda`` to ``cpu``, ``cpu`` tries OpenVINO, ONNX Runtime,
    torch; each fallback is logged and put in ``runtime.notice`` with its reason. ``auto``'s notice also names
    the choice. A CPU engine named explicitly (benchmarks, tests) never falls back. ``check`` compares each
    candidate with torch eager fp32 before accepting it (see ``verify``). ``fallback=False`` builds exactly
    ``backend`` (``cpu``: OpenVINO) or raises RuntimeError, as the benchmark needs.
    """
    names = BACKENDS + CPU_ENGINES
    if backend not in names:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(names)}")
    cache = Path(cache_dir) if cache_dir else cache_root()
    module = checkpoint.model.scorer().eval()
    cpu_chain = list(CPU_ENGINES)
    chain = {"auto": ["tensorrt", "cuda"] + cpu_chain, "tensorrt": ["tensorrt", "cuda"] + cpu_chain,
             "cuda": ["cuda"] + cpu_chain, "cpu": cpu_chain}.get(backend, [backend])
    if not fallback:
        if backend == "auto":
            raise ValueError("fallback=False needs a concrete backend, not 'auto'")
        chain = chain[:1]
    failures: list[str] = []
    unexpected = False  # a failure other than "no GPU" while auto looks for one: worth a warning
    for kind in chain:
        try:
            t0 = time.perf_counter()
            rt = _build(kind, module, cache, max_batch, threads)
            diff = verify(rt, module) if check else float("nan")
            log.info("backend %s ready in %.1f s (max |dP| vs eager fp32 %.1e)", rt.name, time.perf_counter() - t0,
                     diff)
        except Exception as e:  # noqa: BLE001 - any failure of an optional runtime means: try the next one
            if not fallback or (kind == backend and backend in CPU_ENGINES):
                raise RuntimeError(f"backend {backend!r} failed: {e}") from e
            reason = f"{kind}: {e}".splitlines()[0]
            quiet = backend == "auto" and kind in ("tensorrt", "cuda")  # expected on every machine without a GPU
            (log.info if quiet else log.warning)("backend %s unavailable: %s", kind, e)
            failures.append(reason)
            unexpected = unexpected or not quiet
            continue
        if failures or backend == "auto":
            why = f" ({'; '.join(failures)})" if failures else ""
            rt.notice = (f"auto chose {rt.name}{why}" if backend == "auto"
                         else f"backend {backend!r} unavailable, using {rt.name}{why}")
            # auto settling on the CPU of a machine without a GPU is the normal case, not a warning
            rt.notice_level = logging.INFO if backend == "auto" and not unexpected else logging.WARNING
            log.log(rt.notice_level, "%s", rt.notice)
        return rt
    raise RuntimeError(f"no backend could run the model: {'; '.join(failures)}")
