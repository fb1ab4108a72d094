"""State-dict utilities shared by checkpoints, the CLIP loaders and the export cache: one tensor digest, one
key-fit check.

torch is not imported here: ``file_weights_digest`` computes the same digest from a safetensors file's bytes, which
is how a warm start (models/deploy/warm.py) checks a checkpoint's weights without loading torch.
"""
from __future__ import annotations

import hashlib
import mmap
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import torch

# safetensors' dtype codes -> the dtype names torch prints, which the digest hashes (its format predates this map)
_TORCH_DTYPE = {"F64": "torch.float64", "F32": "torch.float32", "F16": "torch.float16", "BF16": "torch.bfloat16",
                "I64": "torch.int64", "I32": "torch.int32", "I16": "torch.int16", "I8": "torch.int8",
                "U8": "torch.uint8", "BOOL": "torch.bool"}


def _digest(entries: Iterable[tuple[str, str, tuple, object]], h: "hashlib._Hash | None") -> str:
    """SHA-256 over (name, dtype name, shape, raw bytes) entries given in name order."""
    h = hashlib.sha256() if h is None else h
    for name, dtype, shape, data in entries:
        h.update(name.encode())
        h.update(dtype.encode())
        h.update(str(tuple(shape)).encode())
        h.update(data)
    return h.hexdigest()


def weights_digest(tensors: Mapping[str, "torch.Tensor"], h: "hashlib._Hash | None" = None) -> str:
    """SHA-256 over ``tensors`` sorted by name: each name, dtype, shape and raw bytes (what a checkpoint's
    ``weights_sha256`` holds). ``h`` continues a running hash (the export cache adds the model code)."""
    import torch  # the caller holds torch tensors: already imported

    def entries():
        for name in sorted(tensors):
            t = tensors[name].detach().contiguous().cpu()
            # reshape: 0-d tensors cannot be viewed as bytes; the numpy view is hashed in place (no tobytes copy)
            yield name, str(t.dtype), tuple(t.shape), t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
    return _digest(entries(), h)


def file_weights_digest(path: "str | Path", index: Mapping[str, dict], data_start: int) -> str:
    """``weights_digest`` of the tensors of a safetensors file, hashed from the file's bytes without torch.

    ``index``: the header's tensor entries (name -> {"dtype", "shape", "data_offsets"}), ``data_start``: where
    the data section begins (8 + header length). Every entry is checked before anything is hashed (ValueError
    for a dtype the digest has no name for, or offsets outside the file: a truncated file); the bytes are then
    read through a memory map, without a copy, each slice released before the map is closed."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        spans = []
        for name in sorted(index):
            e = index[name]
            if e["dtype"] not in _TORCH_DTYPE:
                raise ValueError(f"tensor {name}: dtype {e['dtype']!r} has no digest name")
            begin, end = (data_start + int(o) for o in e["data_offsets"])
            if not data_start <= begin <= end <= len(mm):
                raise ValueError(f"tensor {name}: data offsets outside the file (truncated?)")
            spans.append((name, _TORCH_DTYPE[e["dtype"]], tuple(e["shape"]), begin, end))
        with memoryview(mm) as view:
            def entries():
                for name, dtype, shape, begin, end in spans:
                    with view[begin:end] as data:
                        yield name, dtype, shape, data
            return _digest(entries(), None)


def key_fit(expected: Mapping[str, "torch.Tensor"],
            tensors: Mapping[str, "torch.Tensor"]) -> tuple[list[str], list[str], list[str]]:
    """How ``tensors`` fit a model's state dict ``expected``: (missing, unexpected, wrong-shape) keys, sorted."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    return missing, unexpected, wrong
