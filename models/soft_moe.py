"""Soft MoE (Puigcerver et al., ICLR 2024) with the La-SoftMoE combine weighting (Zou et al., IJCB 2024).

Axis letters used in the einsums below:
    b batch, m tokens, d model width, n experts, p slots per expert, s = n * p slots, h expert hidden width.

    L = scale * l2norm(X) @ l2norm(Phi)           (b m s)   routing logits
    D = softmax_m(L)                               dispatch: every slot is a convex mix of tokens
    S = D^T X                                      (b s d)   slot inputs, experts see un-normalised tokens
    Y_s = f_n(S_n)                                 (b n p d) expert k processes its own p slots
    Y = C Y_s                                      (b m d)   C: combine weights, one row per token

The combine weights C are selected by ``weighting`` (docs/architecture.md "The model"):
    softmax  C = softmax_s(L)                                    Soft MoE
    la-a     C = phi(IN(X) W) . phi(t l2norm(Phi)) / sum         La-SoftMoE reading A (linear attention;
                                                                 t = 1 or a learnable key scale)
    la-b     C = phi(IN_m(L)) / sum                              La-SoftMoE reading B (normalised logits)
with phi(x) = elu(x) + 1 > 0 and IN the instance norm over the token axis, so every row of C is positive
and sums to 1. The branch output is multiplied by ``gate`` (initialised at 0), so a block that gains the
branch still computes what it computed before.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .config import WEIGHTINGS, MoEConfig


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quick_gelu(x)


def _phi(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


def _instance_norm_tokens(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel over the token axis (b m c -> b m c); permutation-equivariant in m."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class StackedExperts(nn.Module):
    """n two-layer QuickGELU MLPs stored as stacked weights (nn.Linear layout per expert: out x in).

    ``unrolled`` (set by ``unrolled_experts`` around an export) computes the same function as one ``F.linear``
    per expert instead of one einsum over all of them: the exported graph then has plain matmuls with 2-D
    weights, which post-training int8 quantisation (NNCF) quantises; an einsum with a 3-D weight it leaves fp32.
    """

    unrolled = False

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__()
        self.c_fc_weight = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.c_fc_bias = nn.Parameter(torch.zeros(num_experts, hidden))
        self.c_proj_weight = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.c_proj_bias = nn.Parameter(torch.zeros(num_experts, dim))
        nn.init.normal_(self.c_fc_weight, std=dim ** -0.5)
        nn.init.normal_(self.c_proj_weight, std=hidden ** -0.5)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        # slots: b n p d -> b n p d
        if self.unrolled:
            return torch.stack([F.linear(quick_gelu(F.linear(slots[:, i], self.c_fc_weight[i], self.c_fc_bias[i])),
                                         self.c_proj_weight[i], self.c_proj_bias[i])
                                for i in range(self.c_fc_weight.shape[0])], dim=1)
        h = torch.einsum("bnpd,nhd->bnph", slots, self.c_fc_weight) + self.c_fc_bias[None, :, None]
        h = quick_gelu(h)
        return torch.einsum("bnph,ndh->bnpd", h, self.c_proj_weight) + self.c_proj_bias[None, :, None]

    @torch.no_grad()
    def upcycle_from(self, c_fc: nn.Linear, c_proj: nn.Linear) -> None:
        """Copy a dense MLP into every expert ("upcycling"); shapes must match."""
        if c_fc.weight.shape != self.c_fc_weight.shape[1:]:
            raise ValueError(f"cannot upcycle: block MLP hidden {tuple(c_fc.weight.shape)} != expert "
                             f"{tuple(self.c_fc_weight.shape[1:])}; set moe.expert_ratio to the MLP's ratio")
        self.c_fc_weight.copy_(c_fc.weight.expand_as(self.c_fc_weight))
        self.c_fc_bias.copy_(c_fc.bias.expand_as(self.c_fc_bias))
        self.c_proj_weight.copy_(c_proj.weight.expand_as(self.c_proj_weight))
        self.c_proj_bias.copy_(c_proj.bias.expand_as(self.c_proj_bias))


@contextlib.contextmanager
def unrolled_experts(module: nn.Module):
    """Within the block, every ``StackedExperts`` in ``module`` runs one matmul per expert (see its docstring)."""
    experts = [m for m in module.modules() if isinstance(m, StackedExperts)]
    before = [m.unrolled for m in experts]
    for m in experts:
        m.unrolled = True
    try:
        yield module
    finally:
        for m, b in zip(experts, before):
            m.unrolled = b


class SoftMoE(nn.Module):
    """Soft MoE layer with selectable combine weighting; input and output b m d (defaults: ``MoEConfig``'s)."""

    def __init__(self, dim: int, hidden: int, num_experts: int, slots_per_expert: int,
                 weighting: str = MoEConfig.weighting, la_query_proj: bool = MoEConfig.la_query_proj,
                 la_key_scale: float | None = MoEConfig.la_key_scale):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {weighting!r} not in {WEIGHTINGS}")
        self.num_experts, self.slots_per_expert, self.weighting = num_experts, slots_per_expert, weighting
        self.slot_embeds = nn.Parameter(torch.randn(dim, num_experts * slots_per_expert) * dim ** -0.5)  # d s
        self.scale = nn.Parameter(torch.ones(()))
        self.gate = nn.Parameter(torch.zeros(()))
        self.experts = StackedExperts(num_experts, dim, hidden)
        self.query_proj = nn.Linear(dim, dim) if (la_query_proj and weighting == "la-a") else None
        self.key_scale = (nn.Parameter(torch.tensor(float(la_key_scale))) if (la_key_scale is not None
                          and weighting == "la-a") else None)

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dispatch and combine weights, both b m s: dispatch sums to 1 over m, combine over s."""
        phi_n = F.normalize(self.slot_embeds, dim=0)
        logits = self.scale * torch.einsum("bmd,ds->bms", F.normalize(x, dim=-1), phi_n)
        dispatch = logits.softmax(dim=1)
        if self.weighting == "softmax":
            combine = logits.softmax(dim=-1)
        elif self.weighting == "la-a":
            q = _instance_norm_tokens(x)
            if self.query_proj is not None:
                q = self.query_proj(q)
            keys = phi_n if self.key_scale is None else self.key_scale * phi_n
            w = torch.einsum("bmd,ds->bms", _phi(q), _phi(keys))
            combine = w / w.sum(dim=-1, keepdim=True)
        else:  # la-b
            w = _phi(_instance_norm_tokens(logits))
            combine = w / w.sum(dim=-1, keepdim=True)
        return dispatch, combine

    def forward(self, x: torch.Tensor, return_expert_weights: bool = False, return_routing: bool = False):
        """b m d -> b m d; with ``return_expert_weights`` also each expert's combine share (b n); with
        ``return_routing`` the pair (combine share b n, per-token dispatch share b m n): the share of token t's
        dispatch mass that goes to expert e's slots (rows sum to 1), read from the same pass."""
        b, m, d = x.shape
        dispatch, combine = self.routing(x)
        slots = torch.einsum("bms,bmd->bsd", dispatch, x)  # b s d
        y_slots = self.experts(slots.reshape(b, self.num_experts, self.slots_per_expert, d))
        y = torch.einsum("bms,bsd->bmd", combine, y_slots.reshape(b, -1, d)) * self.gate
        if return_expert_weights or return_routing:
            # share of each expert in the combine weights, averaged over tokens: b n, sums to 1
            shares = combine.reshape(b, m, self.num_experts, self.slots_per_expert).sum(-1).mean(1)
            if not return_routing:
                return y, shares
            # where each token's content goes: its dispatch weights summed per expert, normalised per token
            per_expert = dispatch.reshape(b, m, self.num_experts, self.slots_per_expert).sum(-1)  # b m n
            return y, (shares, per_expert / per_expert.sum(-1, keepdim=True).clamp_min(1e-12))
        return y
