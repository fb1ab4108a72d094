"""Warm start: a start that reaches its first verdict without importing torch (issue 15, docs/performance.md).

A full start (``runtime.create_runtime``) loads the checkpoint into torch, computes the prompt features, exports
or finds the cached OpenVINO model and checks it against torch eager fp32. When what it settles on is an
OpenVINO CPU runtime whose check passed, it writes a warm-start record, ``<cache>/warm-start/<key>.json``: which
cache entry it used, the SHA-256 of that entry's model files, the export fingerprint (which names the cached
eager fp32 reference) and the guard record to re-confirm. The prompt features need no torch on the way back:
they are baked into the exported model (``LivenessScorer``).

``open_warm`` is the way back. It reads the checkpoint's header (``read_header``), derives the key from the
digests it states and everything else that decides what the full start would choose (backend asked for, batch
range, threads, routing outputs, agreement crops, model code, runtime versions, CPU); with a record under that
key it hashes the file's tensor bytes (``CheckpointHeader.verify_weights``: the weights digest and metadata
checksum a full load checks), and then opens the
recorded entry only if its files still hash as recorded and the recorded guard re-confirms: the first 16
agreement crops must reproduce the recorded scores (``check_agreement(recorded_only=True)``), which themselves
passed against eager fp32's cached scores. Anything it cannot prove raises ``WarmStartRefused`` with the reason,
and the caller takes the full start: a changed or swapped checkpoint has other digests, hence another key, and
is never scored through an export of other weights.

The guard re-confirmed is the one the full start ran: for int8 / bf16 the decision-agreement guard on every
agreement crop; for fp32 (whose full-start check runs on random inputs, which need torch to reproduce) the
full start also measures the first 16 agreement crops against eager fp32 at the fp32 tolerance and records that.
``$LIVENESS_WARM_START=0`` switches warm starts (and their records) off.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..checkpoint import CheckpointError, CheckpointHeader, read_header
from .engine import (MAX_BATCH, Runtime, _GUARD_RECHECK, agreement_batch, check_agreement, code_digest,
                     open_openvino_pair, openvino_config, openvino_runner, reference_path)

log = logging.getLogger(__name__)

WARM_ENV = "LIVENESS_WARM_START"  # "0": never take a warm start, nor record one
# requests whose full start tries a GPU first: warm only where no NVIDIA GPU can be present (see _no_nvidia_gpu)
_GPU_FIRST = ("auto", "tensorrt", "cuda")
_MODEL_FILES = ("model.xml", "model.bin")  # an OpenVINO entry's IR, hashed into the record


class WarmStartRefused(Exception):
    """No warm start this time; the message says why (the caller logs it and takes the full start)."""


def enabled() -> bool:
    return os.environ.get(WARM_ENV, "1") != "0"


def guard_crops(precision: str) -> int | None:
    """How many agreement crops (from the first) the recorded guard covers: all of them (None) for reduced
    precision, ``_GUARD_RECHECK`` for fp32 (its full-start check is on random inputs; see the module docstring)."""
    return None if precision != "fp32" else _GUARD_RECHECK


def _no_nvidia_gpu() -> bool:
    """True where no NVIDIA driver is loaded: a full start's tensorrt / cuda attempts fail there for sure."""
    return not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists()


def _versions() -> dict[str, "str | None"]:
    """Installed versions that change an export or its runtime, read from package metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("openvino", "nncf", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def request_key(header: CheckpointHeader, backend: str, crops: np.ndarray, max_batch: int, threads: "int | None",
                routing: bool) -> str:
    """The record's name: a digest of the checkpoint's digests and of everything else that decides the outcome
    of a full start (``create_runtime``) for this request."""
    crops = np.ascontiguousarray(crops)
    parts = {"weights": header.weights_sha256, "metadata": header.metadata_sha256,
             "code": code_digest().hexdigest(), "backend": backend, "max_batch": int(max_batch),
             "threads": threads, "routing": bool(routing), "versions": _versions(),
             "crops": hashlib.sha256(memoryview(crops).cast("B")).hexdigest() + str(crops.shape),
             "cpu": platform.processor() or platform.machine()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _file_digests(entry: Path) -> dict[str, str]:
    """SHA-256 of the entry's IR files: what the warm start checks before it trusts the entry."""
    out = {}
    for name in _MODEL_FILES:
        with open(entry / name, "rb") as f:
            out[name] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def write_record(header: CheckpointHeader, backend: str, crops: np.ndarray, runtime: Runtime, fingerprint: str,
                 cache_dir: Path, max_batch: int, threads: "int | None", routing: bool) -> Path:
    """Record ``runtime`` (an OpenVINO runtime the full start just built and checked, its guard record written
    beside its entry) as the warm start of this request. Returns the record's path."""
    cache_dir = Path(cache_dir)
    entry = Path(runtime.cache_path)
    guard = entry / f"guard-{runtime.name}.json"
    if not guard.is_file():
        raise RuntimeError(f"no guard record {guard}")
    record = {"runtime": runtime.name, "precision": runtime.precision,
              "entry": entry.resolve().relative_to(cache_dir.resolve()).as_posix(),
              "files": _file_digests(entry), "fingerprint": fingerprint, "guard": guard.name,
              "guard_crops": guard_crops(runtime.precision), "max_dp": runtime.agreement.max_dp_allowed,
              "input_size": runtime.input_size, "routing": runtime.routing, "notice": runtime.notice,
              "notice_level": runtime.notice_level, "checkpoint": str(header.path)}
    path = cache_dir / "warm-start" / f"{request_key(header, backend, crops, max_batch, threads, routing)}.json"
    write_text_atomic(path, json.dumps(record, indent=1))
    log.info("warm start recorded for %s on %s: %s", header.path.name, runtime.name, path)
    return path


class WarmRuntime(Runtime):
    """The recorded OpenVINO entry, compiled with the configuration the full start's runtime of the same name
    uses (``openvino_config``), so it is the same compiled model (loaded from OpenVINO's blob cache)."""

    def __init__(self, name: str, precision: str, entry: Path, input_size: int, max_batch: int,
                 threads: "int | None", routing: bool):
        self.name, self.precision = name, precision
        super().__init__(input_size, max_batch, "cpu", routing)
        self.cache_path = entry
        self.built = False
        self._run = openvino_runner(*open_openvino_pair(entry / "model.xml",
                                                        openvino_config(entry, precision, threads)))


def open_warm(path: "str | Path", backend: str, crops: np.ndarray, cache_dir: Path, *, max_batch: int = MAX_BATCH,
              threads: "int | None" = None, routing: bool = True) -> tuple[CheckpointHeader, WarmRuntime]:
    """(the checkpoint's header, the recorded runtime with its guard re-confirmed) for this request, without
    torch; WarmStartRefused naming the reason when any of it cannot be proven (see the module docstring)."""
    if not enabled():
        raise WarmStartRefused(f"switched off (${WARM_ENV}=0)")
    if backend in _GPU_FIRST and not _no_nvidia_gpu():
        raise WarmStartRefused(f"backend {backend!r} tries the NVIDIA GPU first, which needs torch")
    try:
        header = read_header(path)
    except (CheckpointError, OSError) as e:
        raise WarmStartRefused(f"checkpoint not verified: {e}") from e
    cache_dir = Path(cache_dir)
    where = cache_dir / "warm-start" / f"{request_key(header, backend, crops, max_batch, threads, routing)}.json"
    try:
        record = json.loads(where.read_text())
        entry = (cache_dir / record["entry"]).resolve()
        n = None if record["guard_crops"] is None else int(record["guard_crops"])
        name, precision, guard = str(record["runtime"]), str(record["precision"]), str(record["guard"])
        files, fingerprint, max_dp = dict(record["files"]), str(record["fingerprint"]), float(record["max_dp"])
        notice, level, routing_out = str(record["notice"]), int(record["notice_level"]), bool(record["routing"])
        input_size = int(record["input_size"])
    except FileNotFoundError:
        raise WarmStartRefused(f"no warm-start record for this checkpoint and backend {backend!r} yet") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WarmStartRefused(f"warm-start record {where} unreadable ({e})") from e
    try:  # only now, with a record keyed on the digests the file claims: a first start does not hash it twice
        header.verify_weights()  # the tensor bytes, hashed from the file: a changed file has another key anyway
    except (CheckpointError, OSError) as e:
        raise WarmStartRefused(f"checkpoint not verified: {e}") from e
    if (not entry.is_relative_to(cache_dir.resolve()) or Path(guard).name != guard
            or input_size != header.preprocessing.size):
        raise WarmStartRefused(f"warm-start record {where} does not describe a cache entry of this model")
    try:
        if _file_digests(entry) != files:
            raise WarmStartRefused(f"cached model {entry} changed since it was recorded")
    except OSError as e:
        raise WarmStartRefused(f"cached model {entry} incomplete ({e})") from e
    x = agreement_batch(crops if n is None else crops[:n], header.preprocessing)
    try:
        p_ref = np.load(reference_path(cache_dir, fingerprint, x))
    except (OSError, ValueError) as e:
        raise WarmStartRefused(f"no cached eager fp32 reference ({e})") from e
    if p_ref.shape != (len(x),) or not np.isfinite(p_ref).all():
        raise WarmStartRefused("cached eager fp32 reference damaged")
    try:
        runtime = WarmRuntime(name, precision, entry, input_size, max_batch, threads, routing_out)
        check_agreement(runtime, x, p_ref, header.threshold, entry / guard, max_dp=max_dp, recorded_only=True)
    except Exception as e:  # noqa: BLE001 - OpenVINO raises its own types for a damaged model or blob
        raise WarmStartRefused(f"{name}: {e}".splitlines()[0]) from e
    runtime.notice, runtime.notice_level = notice, level
    return header, runtime
