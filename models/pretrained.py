"""Load official CLIP weights into our towers: OpenAI (state dict or TorchScript archive), open_clip, and
Hugging Face ``CLIPModel`` (a ``save_pretrained`` folder or its weights file).

Strict (docs/architecture.md, rule 4): after the rename rules, every key of the file must exist in the model with the same
shape, and the only model keys allowed to stay missing are the new MoE parameters (a whole branch at a time).
Afterwards the experts of every branch the file did not carry are upcycled from the freshly loaded MLPs and
those branches start at zero, so the model computes exactly what the loaded CLIP computes.
"""
from __future__ import annotations

import json
import logging
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .clip import LaSoftMoECLIP
from .tensors import key_fit

log = logging.getLogger(__name__)

# keys some exporters carry that are not weights
_IGNORED = re.compile(r"^(input_resolution|context_length|vocab_size|attn_mask|"
                      r"(text_model|vision_model)\.embeddings\.position_ids)$")
_MOE_KEY = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.moe\.")

# Hugging Face CLIPModel -> OpenAI names (q/k/v and the projections are handled in code)
_HF_RULES = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.", r"visual.transformer.resblocks.\1."),
    (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^text_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1."),
    (r"\.layer_norm1\.", ".ln_1."), (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."), (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
]


@dataclass(frozen=True)
class LoadReport:
    source_format: str
    loaded: int
    missing_moe: int
    resized_position_embedding: bool


def _is_hf(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("vision_model.", "text_model.")) for k in sd)


def convert_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face CLIPModel state dict to OpenAI CLIP's names (q, k, v -> in_proj)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        if _IGNORED.match(key):
            continue
        if key == "visual_projection.weight":
            out["visual.proj"] = t.t().contiguous()
            continue
        if key == "text_projection.weight":
            out["text_projection"] = t.t().contiguous()
            continue
        new = key
        for pat, rep in _HF_RULES:
            new = re.sub(pat, rep, new)
        m = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", new)
        if m:
            qkv.setdefault(f"{m.group(1)}.attn.in_proj_{m.group(3)}", {})[m.group(2)] = t
            continue
        out[new] = t
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"Hugging Face weights: {key} lacks {sorted({'q', 'k', 'v'} - set(parts))} projection")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                sd, _ = _read_file(path / name)
                return sd, "huggingface"
        shards = sorted(path.glob("model-*.safetensors"))
        if shards:
            sd = {}
            for s in shards:
                sd.update(load_file(str(s)))
            return sd, "huggingface"
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path)), "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            # OpenAI's released .pt files are TorchScript archives; only their tensors are used
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, the files are not
                module = torch.jit.load(str(path), map_location="cpu")
            return {k: v for k, v in module.state_dict().items()}, "openai-torchscript"
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for foreign files
        raise ValueError(f"{path}: not a readable weights file with plain tensors ({e}). Pickled objects "
                         "are refused; convert to safetensors") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # open_clip training checkpoints
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return obj, "state-dict"


def _check_hf_config(model: LaSoftMoECLIP, path: Path) -> None:
    """Compare a Hugging Face ``config.json`` (in the folder, or beside the weights file) with our config.

    Shapes are checked key by key later; what shapes cannot show is checked here: the activation, the number
    of attention heads and the LayerNorm epsilon. Without a config.json nothing is checked (a warning).
    """
    cfg_path = (path if path.is_dir() else path.parent) / "config.json"
    if not cfg_path.is_file():
        log.warning("%s: no config.json beside the weights; activation and head counts are not checked", path)
        return
    try:
        hf = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
    ours = model.config
    # CLIP's defaults (transformers' CLIPVisionConfig / CLIPTextConfig) for keys a diff-saved config omits
    for tower, heads, default_heads in (("vision_config", ours.vision.heads, 12), ("text_config", ours.text.heads, 8)):
        sub = hf.get(tower) or {}
        act = sub.get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise ValueError(f"{cfg_path}: {tower}.hidden_act {act!r} is not supported (CLIP uses quick_gelu)")
        n = sub.get("num_attention_heads", default_heads)
        if n != heads:
            raise ValueError(f"{cfg_path}: {tower}.num_attention_heads {n} != {heads} heads of model "
                             f"{ours.name!r}; pick the model config with the file's geometry")
        eps = sub.get("layer_norm_eps", 1e-5)
        if abs(eps - 1e-5) > 1e-12:
            raise ValueError(f"{cfg_path}: {tower}.layer_norm_eps {eps} is not supported (CLIP uses 1e-5)")


def _resize_pos_embed(t: torch.Tensor, tokens: int) -> torch.Tensor:
    """Bicubic resize of a (1 + g*g) x d position table to ``tokens`` rows (open_clip does the same)."""
    cls, grid = t[:1], t[1:]
    g_old, g_new = int(round(grid.shape[0] ** 0.5)), int(round((tokens - 1) ** 0.5))
    if g_old * g_old != grid.shape[0] or g_new * g_new != tokens - 1:
        raise ValueError(f"cannot resize a position table of {t.shape[0]} rows to {tokens}: both must be "
                         "1 + a square number of patches")
    grid = grid.reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(g_new, g_new), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(g_new * g_new, -1).to(t.dtype)], dim=0)


def load_pretrained_clip(model: LaSoftMoECLIP, path: str | Path) -> LoadReport:
    """Load official CLIP weights from ``path`` into ``model`` (strict; MoE keys may be missing)."""
    path = Path(path)
    sd, fmt = _read_file(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if _is_hf(sd):
        sd, fmt = convert_hf_state_dict(sd), "huggingface"
    sd = {k: v for k, v in sd.items() if not _IGNORED.match(k)}
    if fmt == "huggingface":
        _check_hf_config(model, path)
    else:  # OpenAI's build_model derives the head counts as width / 64; a state dict cannot show them
        v, t = model.config.vision, model.config.text
        if (v.heads, t.heads) != (v.width // 64, t.width // 64):
            log.warning("model %r has %d/%d heads (image/text); OpenAI CLIP weights use width/64 = %d/%d",
                        model.config.name, v.heads, t.heads, v.width // 64, t.width // 64)

    expected = model.state_dict()
    resized = False
    key = "visual.positional_embedding"
    if key in sd and key in expected and sd[key].shape != expected[key].shape \
            and sd[key].shape[1:] == expected[key].shape[1:]:
        log.info("resizing %s from %s to %s", key, tuple(sd[key].shape), tuple(expected[key].shape))
        sd[key] = _resize_pos_embed(sd[key], expected[key].shape[0])
        resized = True
    missing, unexpected, wrong_keys = key_fit(expected, sd)
    missing_bad = [k for k in missing if not _MOE_KEY.match(k)]
    # an MoE branch is either absent from the file (new: upcycled below) or complete (kept as loaded)
    moe_blocks = {int(_MOE_KEY.match(k).group(1)) for k in expected if _MOE_KEY.match(k)}
    fresh = set()
    for i in sorted(moe_blocks):
        block_keys = [k for k in expected if k.startswith(f"visual.transformer.resblocks.{i}.moe.")]
        present = [k for k in block_keys if k in sd]
        if not present:
            fresh.add(i)
        elif len(present) != len(block_keys):
            missing_bad += [k for k in block_keys if k not in sd]
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong_keys]
    if unexpected or missing_bad or wrong:
        raise ValueError(f"{path} ({fmt}) does not fit model {model.config.name!r}:\n"
                         f"  unexpected keys ({len(unexpected)}): {unexpected[:10]}\n"
                         f"  missing keys ({len(missing_bad)}): {missing_bad[:10]}\n"
                         f"  shape mismatches ({len(wrong)}): {wrong[:10]}")
    dtype_sd = {k: v.to(expected[k].dtype) for k, v in sd.items()}
    model.load_state_dict(dtype_sd, strict=False)
    model.upcycle_experts(blocks=fresh)
    model._text_cache = None
    log.info("loaded %d tensors from %s (%s); %d MoE branch(es) upcycled from their MLPs", len(sd), path, fmt,
             len(fresh))
    return LoadReport(fmt, len(sd), len(missing), resized)
