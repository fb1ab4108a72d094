"""Single-file safetensors checkpoints (docs/architecture.md "Checkpoint"): weights + JSON metadata, never unpickled.

Metadata keys: ``format``, ``config`` (ModelConfig JSON), ``preprocessing`` ({size, mean, std}),
``prompts``, ``threshold`` (chosen on a validation split), ``data_card``, ``extra``, ``weights_sha256`` (over
all tensors, sorted by name, so altered tensor bytes are caught even where the file still parses) and
``metadata_sha256`` (over the other metadata entries, so a damaged header cannot silently change the threshold,
a prompt or the data card). Files written before ``metadata_sha256`` existed still load, with a warning.

``read_header`` reads and checks everything but the tensors without importing torch (a warm start,
models/deploy/warm.py, needs no more); torch is imported by the functions that materialise tensors.
"""
from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_path
from .config import ModelConfig
from .preprocess import Preprocessing
from .tensors import file_weights_digest, key_fit, weights_digest

if TYPE_CHECKING:
    import torch

    from .clip import LaSoftMoECLIP

FORMAT = "lasoftmoe-clip/1"
_META_KEYS = {"format", "config", "preprocessing", "prompts", "threshold", "data_card", "extra", "weights_sha256"}
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, altered or of another architecture."""


@dataclass(frozen=True)
class CheckpointHeader:
    """Everything a checkpoint file says except its tensors, read and checked by ``read_header`` (no torch).

    ``weights_sha256`` is the digest the file claims; ``metadata_sha256`` is the digest of its metadata as read
    (computed, so also for older files without one). ``tensors`` is the header's index (name -> dtype, shape,
    data_offsets) and ``data_start`` where the tensor bytes begin: what ``verify_weights`` hashes."""

    path: Path
    config: ModelConfig
    preprocessing: Preprocessing
    prompts: tuple[str, ...]
    threshold: float
    data_card: dict[str, Any]
    extra: dict[str, Any]
    weights_sha256: str
    metadata_sha256: str
    tensors: dict[str, dict]
    data_start: int

    def verify_weights(self) -> None:
        """CheckpointError unless the file's tensor bytes match ``weights_sha256`` (hashed from the file, no
        torch: the same digest ``load_checkpoint`` checks on the loaded tensors)."""
        try:
            digest = file_weights_digest(self.path, self.tensors, self.data_start)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.path}: unreadable or truncated weights ({e})") from e
        if digest != self.weights_sha256:
            raise CheckpointError(f"{self.path}: weights do not match the checksum in the file: it was altered or "
                                  "damaged")


@dataclass
class Checkpoint:
    model: LaSoftMoECLIP
    config: ModelConfig
    preprocessing: Preprocessing
    prompts: tuple[str, ...]
    threshold: float
    data_card: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    header: CheckpointHeader | None = None  # the file's header as loaded (its digests key the warm start)


def _metadata_digest(meta: dict[str, str]) -> str:
    """SHA-256 over every metadata entry except the digest itself, in key order."""
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: str | Path, model: LaSoftMoECLIP, *, threshold: float = 0.5,
                    data_card: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` with its config, preprocessing, prompts, threshold and data card to one file.

    ``dtype`` (e.g. torch.float16) stores floating tensors at that precision to halve the file; they are
    loaded back as float32.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v
    cfg = model.config
    meta = {
        "format": FORMAT,
        "config": cfg.to_json(),
        "preprocessing": json.dumps(Preprocessing.from_config(cfg).__dict__),
        "prompts": json.dumps(list(cfg.prompts)),
        "threshold": repr(float(threshold)),
        "data_card": json.dumps(data_card or {}),
        "extra": json.dumps(extra or {}),
        "weights_sha256": weights_digest(tensors),
    }
    meta["metadata_sha256"] = _metadata_digest(meta)
    with atomic_path(path) as tmp:  # never a half-written checkpoint under the real name
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The safetensors header (parsed JSON) and the offset of the data section; CheckpointError if malformed."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a .safetensors checkpoint file "
                              "(for a Hugging Face CLIP folder use models.load_pretrained_clip)")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short: {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2 ** 20):
            raise CheckpointError(f"{path}: not a safetensors file or truncated (header of {n} bytes, file {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: corrupt safetensors header (metadata is not a map of strings)")
    return header, 8 + n


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header's metadata, read without touching the tensors; CheckpointError if malformed."""
    return _read_safetensors_header(Path(path))[0].get("__metadata__", {})


def read_header(path: str | Path, verify: bool = True) -> CheckpointHeader:
    """The checkpoint's header, parsed and checked (format, metadata checksum, config, threshold, prompts), with
    neither tensors nor torch: the one reader of a checkpoint's header (``load_checkpoint`` uses it too).

    Raises FileNotFoundError for a missing file and CheckpointError naming what is wrong otherwise. The weights
    are not hashed here (``CheckpointHeader.verify_weights`` does it from the file bytes)."""
    path = Path(path)
    header, data_start = _read_safetensors_header(path)
    meta = header.get("__metadata__", {})
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a La-SoftMoE CLIP checkpoint (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}); for CLIP weights use models.load_pretrained_clip")
    if verify:
        _verify_metadata(path, meta)
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
        threshold = float(meta.get("threshold", "0.5"))
        data_card = json.loads(meta.get("data_card", "{}"))
        extra = json.loads(meta.get("extra", "{}"))
        prompts = json.loads(meta["prompts"]) if "prompts" in meta else list(cfg.prompts)
    except (KeyError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: bad metadata ({e})") from e
    if not 0.0 <= threshold <= 1.0:
        raise CheckpointError(f"{path}: threshold {threshold} outside [0, 1]")
    if not isinstance(data_card, dict) or not isinstance(extra, dict):
        raise CheckpointError(f"{path}: bad metadata (data_card and extra must be JSON objects)")
    if tuple(prompts) != tuple(cfg.prompts):
        raise CheckpointError(f"{path}: prompts {prompts} differ from the config's {list(cfg.prompts)}")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    return CheckpointHeader(path=path, config=cfg, preprocessing=Preprocessing.from_config(cfg),
                            prompts=tuple(cfg.prompts), threshold=threshold, data_card=data_card, extra=extra,
                            weights_sha256=str(meta.get("weights_sha256", "")),
                            metadata_sha256=_metadata_digest(meta), tensors=tensors, data_start=data_start)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    verify: bool = True) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint``; the model comes back in eval mode, float32.

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) for a truncated,
    altered, foreign or mismatched file, with the reason in the message.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .clip import create_model

    head = read_header(path, verify)
    path = head.path
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: unreadable or truncated weights ({e})") from e
    if verify and weights_digest(tensors) != head.weights_sha256:
        raise CheckpointError(f"{path}: weights do not match the checksum in the file: it was altered or damaged")
    cfg = head.config
    model = create_model(cfg, init=False)  # every tensor is replaced below: random init is only start-up time
    expected = model.state_dict()
    missing, unexpected, wrong = key_fit(expected, tensors)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not fit its config {cfg.name!r}: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}, wrong shape {wrong[:8]}")
    model.load_state_dict({k: _float32(v) for k, v in tensors.items()}, assign=True)  # assign: no second copy
    model.to(map_location).eval()
    return Checkpoint(model=model, config=cfg, preprocessing=head.preprocessing, prompts=head.prompts,
                      threshold=head.threshold, data_card=head.data_card, extra=head.extra, path=path,
                      header=head if verify else None)


def _float32(t: torch.Tensor) -> torch.Tensor:
    """Floating tensors as float32 (exact for float16 / bfloat16). float16 goes through numpy: a process's first
    torch half-to-float conversion costs ~0.3 s of thread-pool start-up here, numpy's a few ms (issue 15)."""
    import torch

    if t.dtype == torch.float16:
        return torch.from_numpy(t.numpy().astype("float32"))
    return t.float() if t.is_floating_point() else t


def _verify_metadata(path: Path, meta: dict[str, str]) -> None:
    """CheckpointError if the header's metadata was altered (unknown entries, or a checksum mismatch)."""
    unknown = sorted(set(meta) - _META_KEYS - {"metadata_sha256"})
    if unknown:
        raise CheckpointError(f"{path}: unknown metadata entries {unknown}: the header was altered or damaged")
    if "metadata_sha256" not in meta:
        log.warning("%s: written without a metadata checksum (an older file); its header is not verified", path)
        return
    if _metadata_digest(meta) != meta["metadata_sha256"]:
        raise CheckpointError(f"{path}: metadata (config, prompts, threshold, data card) do not match the checksum "
                              "in the file: it was altered or damaged")


def load_model(name_or_path: str | Path) -> Checkpoint:
    """A checkpoint file, or a config name built with fresh weights (threshold 0.5)."""
    from .clip import create_model

    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists():
        return load_checkpoint(p)
    model = create_model(str(name_or_path)).eval()
    return Checkpoint(model=model, config=model.config, preprocessing=Preprocessing.from_config(model.config),
                      prompts=tuple(model.config.prompts), threshold=0.5)
