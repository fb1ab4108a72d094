"""Training-only auxiliary objectives (issue 11): they shape the image tower's features and are dropped at
export, so the shipped model, its checkpoint format and every backend stay unchanged.

- :class:`SpectrumHead`: Silent-Face's Fourier-spectrum supervision (Minivision, 2020: an ``FTGenerator``
  beside the classifier regresses the log-amplitude spectrum of the input). Here a small conv head maps the
  ``g x g`` patch-token grid to the ``g x g`` pooled log-amplitude spectrum of the (augmented) input crop, so
  the tokens must carry the frequency content where prints, screens and blends differ from skin.
- :class:`DomainHead`: domain-adversarial features (Ganin & Lempitsky, ICML 2015) on the capture-set label,
  class-conditional (one classifier for live crops, one for attacks, so that a source that holds only attacks
  does not make the label itself look like a domain cue): a gradient-reversal layer before each classifier
  pushes the class-token feature to *not* tell the rooms apart.

Both read the tower's tokens through :class:`TokenTap`, a forward hook on the vision transformer, so the
model's own forward is untouched.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class TokenTap:
    """Keeps the last output of ``model.visual.transformer`` (b m d: class token then the g x g patch tokens)."""

    def __init__(self, model: nn.Module):
        self.tokens: torch.Tensor | None = None
        self._handle = model.visual.transformer.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output) -> None:
        self.tokens = output[0] if isinstance(output, tuple) else output

    def close(self) -> None:
        self._handle.remove()


def spectrum_target(x: torch.Tensor, grid: int) -> torch.Tensor:
    """b 3 S S (normalised input) -> b 1 grid grid: centred log(1 + |FFT|) of the grey image, average-pooled
    to the token grid and min-max scaled per crop to [0, 1] (Silent-Face's target, at our grid size)."""
    grey = x.float().mean(dim=1)
    amp = torch.fft.fftshift(torch.fft.fft2(grey, norm="ortho"), dim=(-2, -1)).abs()
    t = F.adaptive_avg_pool2d(torch.log1p(amp).unsqueeze(1), grid)
    lo = t.amin(dim=(-2, -1), keepdim=True)
    hi = t.amax(dim=(-2, -1), keepdim=True)
    return (t - lo) / (hi - lo).clamp_min(1e-6)


class SpectrumHead(nn.Module):
    """Patch tokens b (g g) d -> predicted spectrum b 1 g g (two 3 x 3 convs, as Silent-Face's FTGenerator)."""

    def __init__(self, width: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(width, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        b, p, d = patch_tokens.shape
        g = math.isqrt(p)
        if g * g != p:
            raise ValueError(f"spectrum head needs a square token grid, got {p} patch tokens")
        return self.net(patch_tokens.float().transpose(1, 2).reshape(b, d, g, g))

    def loss(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """MSE between the head's map from ``tokens`` (b m d, class token first) and the input's spectrum."""
        pred = self(tokens[:, 1:])
        return F.mse_loss(pred, spectrum_target(x, pred.shape[-1]))


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward, gradient times ``-lam`` backward."""
    return _GradReverse.apply(x, lam)


class DomainHead(nn.Module):
    """Class-conditional capture-set classifiers behind a gradient-reversal layer."""

    def __init__(self, width: int, num_domains: int, hidden: int = 256):
        super().__init__()
        if num_domains < 2:
            raise ValueError("domain-adversarial training needs at least two capture sets")
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True),
                                                 nn.Linear(hidden, num_domains)) for _ in range(2))

    @staticmethod
    def schedule(progress: float) -> float:
        """DANN's reversal strength: 2 / (1 + exp(-10 p)) - 1, from 0 at the start to ~1 at the end."""
        return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor, lam: float) -> torch.Tensor:
        """Cross-entropy of the capture set from the reversed class-token feature, per class, averaged over the
        classes present in the batch; the classifiers learn the rooms, the tower learns to hide them.

        The feature is layer-normalised without an affine (what ``ln_post`` hands the liveness head, before its
        own scale): on the raw token the tower "wins" by growing the token's norm, which drives the room
        classifiers' cross-entropy up without bound (seen: 3 -> 20 in 200 steps) instead of hiding the room."""
        cls = tokens[:, 0].float()
        feat = grad_reverse(F.layer_norm(cls, cls.shape[-1:]), lam)
        losses = [F.cross_entropy(self.heads[c](feat[labels == c]), domains[labels == c])
                  for c in (0, 1) if bool((labels == c).any())]
        return torch.stack(losses).mean()
