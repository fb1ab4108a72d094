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

What runs without torch (the Runtime interface, the guard, the OpenVINO opener, the cache folder) lives in
models/deploy/engine.py; after a checked OpenVINO runtime is chosen, ``create_runtime`` writes the warm-start
record (models/deploy/warm.py) that lets the next start of the same checkpoint and request skip torch.
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
import time
from pathlib import Path

import numpy as np
import torch

from . import export as _export
from . import warm
# the torch-free core (models/deploy/engine.py), re-exported: the guard, the Runtime interface, the OpenVINO opener
from .engine import (AGREEMENT_MAX_DP, AGREEMENT_MIN, AGREEMENT_TILE, DEFAULT_AGREEMENT_CROPS,  # noqa: F401
                     MAX_BATCH, MIN_BATCH, TOLERANCE, Agreement, Runtime, _float_bytes, agreement_batch, cache_root,
                     check_agreement, code_digest, disable_onnxruntime_telemetry, disable_openvino_telemetry,
                     load_agreement_crops, open_openvino, open_openvino_pair, openvino_config, openvino_runner,
                     reference_path)
from ..atomic import atomic_path
from ..checkpoint import Checkpoint
from ..clip import LivenessScorer
from ..tensors import weights_digest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "cuda", "cpu")
CPU_ENGINES = ("openvino", "onnxruntime", "torch")  # fp32 CPU engines
REDUCED_CPU_ENGINES = ("openvino-int8", "openvino-bf16")  # reduced precision, guarded by decision agreement
# the cpu chain, fastest first (docs/performance.md); a candidate that fails its check hands over to the next
CPU_CHAIN = REDUCED_CPU_ENGINES + CPU_ENGINES
def fingerprint(module: LivenessScorer) -> str:
    """sha256 over the model code and the scorer's tensors (``tensors.weights_digest``): what an export holds.

    Remembered on the module for the duration of one ``create_runtime`` (the cache key and the eager
    reference both need it; hashing 28 MB twice is start-up time), see ``_fingerprint_once``."""
    memo = getattr(module, "_fingerprint_memo", None)
    if memo is not None:
        return memo
    return weights_digest(module.state_dict(), code_digest())


def cache_key(module: LivenessScorer, runtime: str, versions: dict[str, str], max_batch: int,
              extra: "dict | None" = None) -> str:
    """Key of one cached export: weights + code hash, runtime and its versions, input size, batch range, whether
    it has the routing outputs, and ``extra`` (e.g. the calibration data of an int8 model)."""
    parts = {"weights": fingerprint(module), "runtime": runtime, "size": module.image_size,
             "batch": [MIN_BATCH, max_batch], "versions": versions,
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

def _eager_p(module: LivenessScorer, x: np.ndarray, chunk: int = 16) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([_export.p_attack(module(torch.from_numpy(x[i:i + chunk]))).float().numpy()
                               for i in range(0, len(x), chunk)])


def eager_reference(module: LivenessScorer, x: np.ndarray, cache_dir: "Path | None" = None) -> np.ndarray:
    """torch eager fp32 P(attack) of ``x``, cached under ``cache_dir/reference`` per weights, code and input
    bytes (eager is the reference, deterministic for them), so a second start skips the eager pass."""
    if cache_dir is None:
        return _eager_p(module, x)
    path = reference_path(cache_dir, fingerprint(module), x)
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


def _numpy_outputs(out) -> list[np.ndarray]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().cpu().numpy() for o in outs]


def open_onnx(path: "str | Path", threads: int | None = None):
    """An ONNX Runtime CPU session on ``path``, full graph optimisation, ``threads`` intra-op threads."""
    disable_onnxruntime_telemetry()  # before the import: it writes under ~/.cache
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


def _module_runner(mod: torch.nn.Module, device: torch.device):
    """x -> the outputs of a loaded torch module (an ExportedProgram's, a TensorRT engine's) on ``device``."""
    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return _numpy_outputs(mod(torch.from_numpy(x).to(device)))
    return run


class ExportedRuntime(Runtime):
    """Runs a file written by ``models.export`` (``fmt`` one of ``export.FORMATS``) through the same opener as
    the cached runtime of that engine: what ``python -m models.export`` checks against eager."""

    def __init__(self, fmt: str, path: "str | Path", input_size: int, max_batch: int = MAX_BATCH,
                 routing: bool = False):
        if fmt not in _export.FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(_export.FORMATS)}")
        self.name = f"{fmt}-file"
        gpu = fmt == "tensorrt"
        super().__init__(input_size, max_batch, "cuda" if gpu else "cpu", routing)
        path = Path(path)
        if fmt in ("openvino", "openvino-int8"):
            self._run = openvino_runner(*open_openvino_pair(path))
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

    def __init__(self, module: LivenessScorer, max_batch: int = MAX_BATCH, threads: int | None = None):
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
    entry), so a second start skips compilation. ``single_batch`` (default) also compiles the IR for batch 1 and
    runs a batch of one there (``engine.open_openvino_pair``).
    """

    name = "openvino-cpu"

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = MAX_BATCH,
                 threads: int | None = None, precision: str = "fp32", calibration: "np.ndarray | None" = None,
                 single_batch: bool = True):
        if precision not in ("fp32", "bf16", "int8"):
            raise ValueError(f"OpenVINO precision must be fp32, bf16 or int8, got {precision!r}")
        disable_openvino_telemetry()  # before the import: importing openvino sends a usage event
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
            return open_openvino_pair(entry / "model.xml", openvino_config(entry, precision, threads), core,
                                      single=single_batch)

        folder, self.built, compiled = _load_cached(folder, build, load, "OpenVINO model")
        self.cache_path = folder
        self._run = openvino_runner(*compiled)

    @staticmethod
    def entry(module: LivenessScorer, cache_dir: Path, max_batch: int, precision: str,
              calibration: "np.ndarray | None" = None) -> tuple[Path, dict]:
        """(cache folder, versions) of the IR this runtime uses; ``folder / "meta.json"`` exists once built."""
        disable_openvino_telemetry()
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

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = MAX_BATCH,
                 threads: int | None = None):
        disable_onnxruntime_telemetry()  # before the import: it writes under ~/.cache
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

    def __init__(self, module: LivenessScorer, max_batch: int = MAX_BATCH, dtype: torch.dtype = torch.half,
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

    def __init__(self, module: LivenessScorer, cache_dir: Path, max_batch: int = MAX_BATCH):
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
                         threads: int | None, calibration: np.ndarray,
                         warm_request: "dict | None" = None) -> "subprocess.Popen | None":
    """Quantise and cache the int8 model in a separate low-priority process, for the next start to use.

    A process, not a thread: the running app neither waits for it at exit (a short ``--images`` run ends at
    once; the build finishes on its own, detached in its own session) nor shares its heap and thread pools
    with NNCF and a second OpenVINO compile. The job (the checkpoint, fp32, and the calibration crops) is
    written to a folder in the cache that the child removes when done; cache entries are written atomically,
    so a killed build leaves no broken entry, and a second start while one runs only builds it twice.

    ``warm_request`` (the checkpoint file, the backend asked for, the raw routing flag, the agreement crops and
    the chain's failures before int8) lets the child also run int8's decision-agreement guard and, when it
    passes, write the warm-start record the next full start would write (models/deploy/warm.py): the second
    start is then already warm instead of the third. The child loads that checkpoint file itself (its digests
    key the record) and records nothing if they changed meanwhile.
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
    spec = {"cache": str(cache_dir), "max_batch": max_batch, "threads": threads, "routing": routing}
    if warm_request is not None:
        np.save(job / "agreement_crops.npy", np.ascontiguousarray(warm_request.pop("crops"), np.uint8))
        spec["warm"] = warm_request
    (job / "job.json").write_text(json.dumps(spec))
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
        runtime = OpenVINORuntime(module, Path(spec["cache"]), spec["max_batch"], spec["threads"], precision="int8",
                                  calibration=np.load(job / "calibration.npy"))
        print(f"int8 model built in {time.perf_counter() - t0:.1f} s", flush=True)
        if "warm" in spec:
            _record_built_int8(runtime, module, spec, np.load(job / "agreement_crops.npy"))
        return 0
    except Exception as e:  # noqa: BLE001 - a failed optional build is a line in its log, nothing more
        print(f"background int8 build failed: {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _record_built_int8(runtime: "OpenVINORuntime", built: LivenessScorer, spec: dict, crops: np.ndarray) -> None:
    """In the background build's child: guard the int8 model just built (from the job's copy of the weights,
    ``built``) as the next full start would, and record its warm start when the guard passes (see
    ``_build_in_background``). Nothing is recorded unless the checkpoint file still has the digests the start
    saw and holds exactly the weights that were built."""
    from ..checkpoint import load_checkpoint

    w = spec["warm"]
    checkpoint = load_checkpoint(w["checkpoint"])  # verifies the file's digests
    if checkpoint.header is None or [checkpoint.header.weights_sha256, checkpoint.header.metadata_sha256] != \
            w["digests"]:
        print("warm start not recorded: the checkpoint file changed since the build was started", flush=True)
        return
    module = checkpoint.model.scorer(routing=spec["routing"]).eval()
    if fingerprint(module) != fingerprint(built):
        print("warm start not recorded: the checkpoint's weights are not the ones built", flush=True)
        return
    cache = Path(spec["cache"])
    x_ref = agreement_batch(crops, checkpoint.preprocessing)
    reference = (x_ref, eager_reference(module, x_ref, cache), float(checkpoint.threshold))
    try:
        verify(runtime, module, reference=reference)
    except RuntimeError as e:  # recorded as refused beside the entry: the next start does not try it either
        print(f"int8 guard refused it: {e}", flush=True)
        return
    _set_notice(runtime, w["backend"], w["failures"], unexpected=False)
    _record_warm_start(checkpoint, w["backend"], runtime, module, crops, x_ref, reference, cache,
                       spec["max_batch"], spec["threads"], w["routing"])
    print(f"int8 guard passed ({runtime.agreement}); warm start recorded", flush=True)


def _nncf_present() -> bool:
    """NNCF is installed, so a deferred int8 build can succeed (``_nncf_version``: read without importing it)."""
    try:
        _nncf_version()
    except RuntimeError:
        return False
    return True


def _set_notice(rt: Runtime, backend: str, failures: list[str], unexpected: bool) -> None:
    """``rt.notice`` / ``notice_level`` for the chain's outcome: what ``auto`` / ``cpu`` chose and why others
    failed; settling on the CPU of a machine without a GPU, or on fp32 when reduced precision is not usable, is
    a normal case (INFO), any other failure a warning."""
    if failures or backend == "auto":
        why = f" ({'; '.join(failures)})" if failures else ""
        if backend in ("auto", "cpu"):
            rt.notice = f"{backend} chose {rt.name}{why}"
        else:
            rt.notice = f"backend {backend!r} unavailable, using {rt.name}{why}"
        rt.notice_level = logging.INFO if not unexpected else logging.WARNING
        log.log(rt.notice_level, "%s", rt.notice)


def _build(kind: str, module: LivenessScorer, cache_dir: Path, max_batch: int, threads: int | None,
           calibration: "np.ndarray | None" = None, single_batch: bool = True) -> Runtime:
    if kind == "tensorrt":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU")
        return TensorRTRuntime(module, cache_dir, max_batch)
    if kind == "cuda":
        return CudaRuntime(module, max_batch)
    if kind == "openvino":
        return OpenVINORuntime(module, cache_dir, max_batch, threads, single_batch=single_batch)
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

    fp32 runtimes: max |P_runtime - P_eager| on a reproducible random batch (and on one crop, for a runtime with a
    batch-1 model) must not exceed ``runtime.tolerance``. Reduced-precision runtimes: the decision-agreement guard on ``reference`` =
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
    # a runtime with its own batch-1 model (OpenVINO) is checked at batch 1 too
    diffs = compare_with_eager(runtime, module, (batch, 1) if runtime.single_batch else (batch,))
    diff = max(diffs.values())
    if not np.isfinite(diff) or diff > runtime.tolerance:
        raise RuntimeError(f"{runtime.name} disagrees with torch eager fp32 by {diff:.2e} "
                           f"(> tolerance {runtime.tolerance:.0e})")
    return diff


def create_runtime(checkpoint: Checkpoint, backend: str = "auto", *, cache_dir: "str | Path | None" = None,
                   max_batch: int = MAX_BATCH, threads: int | None = None,
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
                before_int8 = (list(failures), unexpected)  # what a start with int8 built would report
                raise RuntimeError("not built yet; building it in the background for the next start")
            if kind == "openvino-bf16" and deferred is not None and _nncf_present():
                # a first start that leaves int8 to the background serves on fp32: compiling bf16 and scoring the
                # agreement crops with eager fp32 for its guard would cost seconds of the cold start (measured
                # 3.6 s of 7.9) for one session; the next start chooses again, int8 first, bf16 if int8 is refused
                raise RuntimeError("not tried while int8 is built in the background (the next start chooses)")
            if kind in REDUCED_CPU_ENGINES and check and x_ref is not None:
                seen = _recorded_rejection(kind, module, cache, max_batch, calibration)
                if seen:  # the guard refused this model here before: do not compile it again to learn that
                    raise RuntimeError(seen)
            # a start that leaves int8 to the background serves on fp32 for this session only: it skips the
            # second (batch-1) compilation, about 1 s of the cold start
            rt = _build(kind, module, cache, max_batch, threads, calibration, deferred is None)
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
            request = None
            if (check and not before_int8[1] and checkpoint.header is not None and warm.enabled()
                    and checkpoint.header.path.is_file()):
                request = {"checkpoint": str(checkpoint.header.path), "backend": backend, "routing": routing,
                           "digests": [checkpoint.header.weights_sha256, checkpoint.header.metadata_sha256],
                           "failures": before_int8[0], "crops": agreement_crops}
            _build_in_background(checkpoint, routing and checkpoint.model.has_moe, cache, max_batch, threads,
                                 deferred, request)
        _set_notice(rt, backend, failures, unexpected)
        if (isinstance(rt, OpenVINORuntime) and check and fallback and deferred is None and not unexpected
                and agreement_crops is not None and checkpoint.header is not None and warm.enabled()):
            _record_warm_start(checkpoint, backend, rt, module, agreement_crops, x_ref, reference, cache, max_batch,
                               threads, routing)
        return rt
    raise RuntimeError(f"no backend could run the model: {'; '.join(failures)}")


def _record_warm_start(checkpoint: Checkpoint, backend: str, rt: "OpenVINORuntime", module: LivenessScorer,
                       crops: np.ndarray, x_ref: "np.ndarray | None", reference, cache: Path, max_batch: int,
                       threads: "int | None", routing: bool) -> None:
    """Write the warm-start record of this request (models/deploy/warm.py), so the next start can skip torch.

    Called only for an outcome that the next full start would repeat: an OpenVINO runtime, checked, no int8
    build pending, no unexpected failure on the way. A reduced-precision runtime's guard record is already
    beside its entry; an fp32 runtime was checked on random inputs, so its first ``warm.guard_crops`` agreement
    crops are measured against eager fp32 at its own tolerance here (the eager scores are cached). A failure
    only costs the next start its warm path."""
    try:
        if x_ref is None:
            x_ref = agreement_batch(crops, checkpoint.preprocessing)
        if not rt.reduced_precision:
            x = x_ref[:warm.guard_crops(rt.precision)]
            record = Path(rt.cache_path) / f"guard-{rt.name}.json"
            check_agreement(rt, x, eager_reference(module, x, cache), float(checkpoint.threshold), record,
                            max_dp=rt.tolerance)
        elif reference is None or rt.agreement is None or not rt.agreement.passed:
            raise RuntimeError("its guard did not run")
        warm.write_record(checkpoint.header, backend, crops, rt, fingerprint(module), cache, max_batch, threads,
                          routing)
    except Exception as e:  # noqa: BLE001 - an unwritable cache, a failed fp32 measurement: the next start is full
        log.info("warm start not recorded: %s", e)


if __name__ == "__main__":  # python -m models.deploy.runtime --build-int8 JOB (started by _build_in_background)
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--build-int8":
        sys.exit(_run_build_job(Path(sys.argv[2])))
    print("usage: python -m models.deploy.runtime --build-int8 JOB_FOLDER (the app starts this itself)", file=sys.stderr)
    sys.exit(2)
