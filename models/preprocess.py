"""Face crops (uint8 RGB) -> the model's normalised input batch, using the preprocessing stored with the weights."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def preprocess(crops: "np.ndarray | Sequence[np.ndarray]", preprocessing) -> torch.Tensor:
    """uint8 RGB crops (b S S 3 array or list of H W 3) -> float32 b 3 size size, (x/255 - mean) / std.

    Crops of another size are resized (bilinear, antialiased); the app's cropper already cuts at ``size``.
    """
    size = preprocessing.size
    if isinstance(crops, np.ndarray) and crops.ndim == 3:
        crops = crops[None]
    if len(crops) == 0:
        return torch.zeros(0, 3, size, size)
    batch = []
    for c in crops:
        c = np.asarray(c)
        if c.ndim != 3 or c.shape[2] != 3 or c.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB crops H x W x 3, got {c.dtype} {c.shape}")
        t = torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1).float()
        if t.shape[1:] != (size, size):
            t = F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        batch.append(t)
    x = torch.stack(batch) / 255.0
    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    return (x - mean) / std
