"""State-dict utilities shared by checkpoints, the CLIP loaders and the export cache: one tensor digest, one
key-fit check."""
from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def weights_digest(tensors: Mapping[str, torch.Tensor], h: "hashlib._Hash | None" = None) -> str:
    """SHA-256 over ``tensors`` sorted by name: each name, dtype, shape and raw bytes (what a checkpoint's
    ``weights_sha256`` holds). ``h`` continues a running hash (the export cache adds the model code)."""
    h = hashlib.sha256() if h is None else h
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        # reshape: 0-d tensors cannot be viewed as bytes; the numpy view is hashed in place (no tobytes copy)
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def key_fit(expected: Mapping[str, torch.Tensor],
            tensors: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """How ``tensors`` fit a model's state dict ``expected``: (missing, unexpected, wrong-shape) keys, sorted."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    return missing, unexpected, wrong
