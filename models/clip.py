"""CLIP towers with a La-SoftMoE branch in selected image blocks; OpenAI CLIP's parameter names.

One class serves dense CLIP, Soft MoE CLIP and La-SoftMoE CLIP: the config's ``moe`` section decides
(docs/architecture.md, rule 2). Block: ``x = x + attn(ln_1(x)); h = ln_2(x); x = x + mlp(h) + moe(h)`` (docs/architecture.md "The model").
Tensors are batch-first (b n d) inside; parameter names and shapes equal OpenAI's, so its state dicts load
with a strict key check.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .soft_moe import QuickGELU, SoftMoE
from .stem import ConvStem


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names, via SDPA."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # b n 3d
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (b h n e)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, moe_layer: nn.Module | None = None):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(dim, hidden)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(hidden, dim))]))
        self.moe = moe_layer

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, with_routing: bool = False):
        """b m d -> b m d; ``with_routing`` -> (b m d, routing or None): the MoE branch's (expert shares b n,
        per-token dispatch shares b m n) from this same pass, None for a block without the branch."""
        x = x + self.attn(self.ln_1(x), attn_mask)
        h = self.ln_2(x)
        if self.moe is None:
            x = x + self.mlp(h)
            return (x, None) if with_routing else x
        if not with_routing:
            return x + self.mlp(h) + self.moe(h)
        y, routing = self.moe(h, return_routing=True)
        return x + self.mlp(h) + y, routing


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                 moe_layers: dict[int, nn.Module] | None = None):
        super().__init__()
        moe_layers = moe_layers or {}
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, moe_layers.get(i)) for i in range(layers))

    def forward(self, x, attn_mask=None, with_routing: bool = False):
        """b m d -> b m d; ``with_routing`` -> (b m d, [routing of each MoE block, in order])."""
        if not with_routing:
            for block in self.resblocks:
                x = block(x, attn_mask)
            return x
        routing = []
        for block in self.resblocks:
            x, r = block(x, attn_mask, with_routing=True)
            if r is not None:
                routing.append(r)
        return x, routing


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v, m = cfg.vision, cfg.moe
        scale = v.width ** -0.5
        self.input_resolution = v.image_size
        if v.stem == "patch":
            self.conv1 = nn.Conv2d(3, v.width, kernel_size=v.patch_size, stride=v.patch_size, bias=False)
            self.stem = None
        else:  # a convolutional stem in place of the patch embedding (models/stem.py); same token grid
            self.conv1 = None
            self.stem = ConvStem(v.width)
        self.class_embedding = nn.Parameter(scale * torch.randn(v.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(v.num_tokens, v.width))
        self.ln_pre = nn.LayerNorm(v.width)
        expert_ratio = m.expert_ratio if m.expert_ratio is not None else v.mlp_ratio
        moe_layers = {i: SoftMoE(v.width, int(v.width * expert_ratio), m.num_experts, cfg.slots_per_expert(),
                                 m.weighting, m.la_query_proj, m.la_key_scale) for i in m.layers}
        self.transformer = Transformer(v.width, v.layers, v.heads, v.mlp_ratio, moe_layers)
        self.ln_post = nn.LayerNorm(v.width)
        self.proj = nn.Parameter(scale * torch.randn(v.width, cfg.embed_dim))

    def forward(self, x: torch.Tensor, with_routing: bool = False):
        """b 3 S S -> b embed; ``with_routing`` -> (b embed, expert shares b L n, token dispatch b L P n) for the
        L MoE blocks and the P patch tokens (the class token left out), from this same pass. A dense tower
        returns empty b 0 0 / b 0 P 0 routing tensors."""
        if self.stem is None:
            x = self.conv1(x).flatten(2).transpose(1, 2)  # b d g g -> b (g g) d
        else:
            x = self.stem(x)  # b (g g) d
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # b m d
        if not with_routing:
            x = self.transformer(self.ln_pre(x))
            return self.ln_post(x[:, 0]) @ self.proj  # b embed
        x, routing = self.transformer(self.ln_pre(x), with_routing=True)
        emb = self.ln_post(x[:, 0]) @ self.proj
        b, m = x.shape[:2]
        if not routing:
            return emb, x.new_zeros(b, 0, 0), x.new_zeros(b, 0, m - 1, 0)
        shares = torch.stack([r[0] for r in routing], dim=1)  # b L n
        tokens = torch.stack([r[1][:, 1:] for r in routing], dim=1)  # b L P n, patch tokens only
        return emb, shares, tokens


class LaSoftMoECLIP(nn.Module):
    """CLIP (image + text towers) with the La-SoftMoE branch; ``forward`` gives 2-way logits [live, attack]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        t = cfg.text
        self.visual = VisionTransformer(cfg)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.transformer = Transformer(t.width, t.layers, t.heads)
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # log(1 / 0.07)
        self._init_weights()
        self.upcycle_experts()
        self._text_cache: torch.Tensor | None = None

    def _init_weights(self) -> None:
        """OpenAI CLIP's initialisation (its model.py), for training from scratch."""
        t = self.config.text
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=t.width ** -0.5)
        for tower in (self.visual.transformer, self.transformer):
            width = tower.resblocks[0].ln_1.normalized_shape[0]
            proj_std = width ** -0.5 * (2 * len(tower.resblocks)) ** -0.5
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    @torch.no_grad()
    def upcycle_experts(self, blocks: "set[int] | None" = None) -> None:
        """Copy each MoE block's MLP into its experts (where shapes match) and zero the branch gates.

        ``blocks`` limits this to those image-block indices (default: every MoE block), so weights loaded
        for some branches are kept while the others start fresh.
        """
        for i, block in enumerate(self.visual.transformer.resblocks):
            if block.moe is not None and (blocks is None or i in blocks):
                if block.moe.experts.c_fc_weight.shape[1:] == block.mlp.c_fc.weight.shape:
                    block.moe.experts.upcycle_from(block.mlp.c_fc, block.mlp.c_proj)
                block.moe.gate.zero_()

    # --- OpenAI CLIP's API ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.visual.class_embedding.dtype

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Projected, un-normalised image features: b 3 S S -> b embed."""
        return self.visual(images.to(self.dtype))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Projected, un-normalised features of the EOT token: b ctx (int) -> b embed."""
        x = self.token_embedding(tokens).to(self.dtype) + self.positional_embedding.to(self.dtype)
        n = tokens.shape[1]
        causal = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        x = self.ln_final(self.transformer(x, attn_mask=causal))
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection

    # --- liveness -------------------------------------------------------------------------------------
    def prompt_features(self) -> torch.Tensor:
        """L2-normalised text features of the two prompts (2 x embed). Cached outside training."""
        if self.training or self._text_cache is None or self._text_cache.device != self.logit_scale.device:
            from .tokenizer import tokenize
            tokens = tokenize(list(self.config.prompts), self.config.text.context_length)
            feats = F.normalize(self.encode_text(tokens.to(self.logit_scale.device)), dim=-1)
            if self.training:
                return feats
            self._text_cache = feats.detach()
        return self._text_cache

    def train(self, mode: bool = True):
        self._text_cache = None
        return super().train(mode)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """2-way logits [live, attack] = exp(logit_scale) * cosine(image, prompt): b 3 S S -> b 2."""
        img = F.normalize(self.encode_image(images), dim=-1)
        return self.logit_scale.exp() * img @ self.prompt_features().to(img.dtype).t()

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """P(attack) per image, b."""
        return self.forward(images).softmax(dim=-1)[:, 1]

    def expert_weights(self, images: torch.Tensor) -> torch.Tensor:
        """Share of each expert in each MoE layer's combine weights: b x moe_layers x experts (rows sum to 1)."""
        return self.visual(images.to(self.dtype), with_routing=True)[1]

    @property
    def has_moe(self) -> bool:
        return any(b.moe is not None for b in self.visual.transformer.resblocks)

    def scorer(self, routing: bool = False) -> "LivenessScorer":
        """The deployable module; ``routing=True`` (MoE models only) also returns the routing statistics."""
        return LivenessScorer(self, routing=routing)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained CLIP parameters, new parameters: the MoE branches) for separate learning rates."""
        new_ids = {id(p) for b in self.visual.transformer.resblocks if b.moe is not None for p in b.moe.parameters()}
        params = [p for p in self.parameters() if p.requires_grad]
        return [p for p in params if id(p) not in new_ids], [p for p in params if id(p) in new_ids]

    def stem_parameters(self) -> list[nn.Parameter]:
        """Parameters of the convolutional stem's pretrained features (empty for the patch embedding)."""
        stem = self.visual.stem
        return [] if stem is None else [p for p in stem.features.parameters() if p.requires_grad]


class LivenessScorer(nn.Module):
    """Deployable module: normalised image batch b 3 S S -> P(attack) b, the prompts' features baked in.

    This is what gets exported (torch.export / ONNX / TensorRT); the text tower is not part of it. With
    ``routing=True`` (a model with MoE blocks) it returns, from the same forward pass, the triple
    (P(attack) b, expert shares b L n, token dispatch shares b L P n): for each of the L MoE blocks each
    expert's share of the combine weights, and for each of the P patch tokens the share of its dispatch mass
    that goes to each expert's slots (its argmax is the expert the token is sent to most). Every runtime
    exports this form when the model has MoE blocks and passes the extra outputs through
    (``Runtime.run_routing``), so the GUI's routing panel costs no second model call.
    """

    ROUTING_OUTPUTS = ("p_attack", "expert_shares", "token_experts")

    def __init__(self, model: LaSoftMoECLIP, routing: bool = False):
        super().__init__()
        if routing and not model.has_moe:
            raise ValueError("routing=True needs a model with MoE blocks; this one is dense")
        self.routing = bool(routing)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            text = model.prompt_features().detach().clone()
            scale = model.logit_scale.exp().detach().clone()
        model.train(was_training)
        self.visual = model.visual
        self.register_buffer("text_features", text)  # 2 embed, L2-normalised
        self.register_buffer("logit_scale", scale)  # exp(logit_scale), scalar
        self.image_size = model.config.vision.image_size

    def forward(self, images: torch.Tensor):
        if not self.routing:
            return self._p_attack(self.visual(images))
        emb, shares, tokens = self.visual(images, with_routing=True)
        return self._p_attack(emb), shares, tokens

    def _p_attack(self, emb: torch.Tensor) -> torch.Tensor:
        img = F.normalize(emb, dim=-1)
        logits = self.logit_scale * img @ self.text_features.t()
        return logits.softmax(dim=-1)[:, 1]


def create_model(name_or_config: "str | ModelConfig | dict", init: bool = True) -> LaSoftMoECLIP:
    """Build a model from a config name (models/model_configs/NAME.json), a ModelConfig or a dict.

    ``init=False`` leaves every parameter uninitialised (``torch.empty`` contents), for a caller that replaces
    all of them at once, as loading a checkpoint does; see ``skip_init``."""
    from .config import get_config

    if isinstance(name_or_config, str):
        cfg = get_config(name_or_config)
    elif isinstance(name_or_config, dict):
        cfg = ModelConfig.from_dict(name_or_config)
    elif isinstance(name_or_config, ModelConfig):
        cfg = name_or_config
    else:
        raise TypeError(f"create_model takes a config name, ModelConfig or dict, not {type(name_or_config)}")
    if init:
        return LaSoftMoECLIP(cfg)
    with skip_init():
        return LaSoftMoECLIP(cfg)


_skip = threading.local()
_skip_lock = threading.Lock()
_skip_users = 0
_INIT_FNS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
             "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def skip_init():
    """Inside this block, ``torch.nn.init`` functions called *by this thread* leave their tensor as it is.

    Modules then build with ``torch.empty`` contents, which is what a caller that loads every tensor next
    wants: building a 14 M-parameter model with its random initialisation costs a start ~0.3 s. Other threads
    keep the real initialisers throughout (the flag is thread-local); the wrappers are installed while any
    thread is inside the block and removed after the last one leaves. (``torch.device("meta")`` would do
    without wrappers, but its first use in a process imports torch's Python reference ops: ~2 s.)"""
    global _skip_users
    with _skip_lock:
        if _skip_users == 0:
            for name in _INIT_FNS:
                setattr(nn.init, name, _skippable(getattr(nn.init, name)))
        _skip_users += 1
    outer, _skip.on = getattr(_skip, "on", False), True
    try:
        yield
    finally:
        _skip.on = outer
        with _skip_lock:
            _skip_users -= 1
            if _skip_users == 0:
                for name in _INIT_FNS:
                    setattr(nn.init, name, getattr(nn.init, name).__wrapped__)


def _skippable(fn):
    @functools.wraps(fn)
    def wrapper(tensor, *args, **kwargs):
        return tensor if getattr(_skip, "on", False) else fn(tensor, *args, **kwargs)
    return wrapper
