"""Model configuration: frozen dataclasses, validated in one place.

Named variants live as small JSON files in ``models/model_configs/``; ``get_config(name)`` reads one,
``ModelConfig.from_dict`` validates any dict (also the JSON stored in a checkpoint's metadata) and says how
to fix a bad value.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

WEIGHTINGS = ("softmax", "la-a", "la-b")
STEMS = ("patch", "mobilenetv2")  # Soft MoE; La-SoftMoE reading A; reading B (docs/architecture.md)
DEFAULT_PROMPTS = ("This is an image of a live face", "This is an image of a fake face")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    stem: str = "patch"  # patch: CLIP's patch embedding; mobilenetv2: MobileNetV2 blocks 0..12 (models/stem.py)

    @property
    def num_tokens(self) -> int:
        """Patch tokens + CLS."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8


@dataclass(frozen=True)
class MoEConfig:
    """La-SoftMoE branch, parallel to the MLP of the listed image blocks (empty tuple = dense CLIP)."""

    layers: tuple[int, ...] = ()
    num_experts: int = 4
    slots_per_expert: int | None = None  # None: Soft MoE's rule round(tokens / experts)
    expert_ratio: float | None = None  # expert hidden width / model width; None: the block MLP's ratio
    weighting: str = "la-a"  # softmax | la-a | la-b (la-a won docs/ablation.md)
    la_query_proj: bool = False  # reading A: learnable linear map before the feature map
    # reading A: learnable scale on the unit slot keys before the feature map, initialised at this value. None:
    # no scale (phi of unit-norm keys is ~1 everywhere, so every slot gets the same combine weight: docs/ablation.md)
    la_key_scale: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str = "custom"
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # index 1 is the attack ("fake") class
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def slots_per_expert(self) -> int:
        if self.moe.slots_per_expert is not None:
            return self.moe.slots_per_expert
        return max(1, round(self.vision.num_tokens / self.moe.num_experts))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build and validate a config; unknown keys and bad values raise ``ValueError`` naming the key."""
        d = dict(d)
        sub = {}
        for key, klass in (("vision", VisionConfig), ("text", TextConfig), ("moe", MoEConfig)):
            sub[key] = _build(klass, d.pop(key, {}) or {}, prefix=key + ".")
        top = _build(cls, d, prefix="", skip=("vision", "text", "moe"))
        cfg = dataclasses.replace(top, **sub)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad key and what a valid value looks like."""
        v, t, m = self.vision, self.text, self.moe
        # integers first (bool is an int subclass but never a valid size), so the checks below can divide
        for key, val in (("vision.image_size", v.image_size), ("vision.patch_size", v.patch_size),
                         ("vision.width", v.width), ("vision.layers", v.layers), ("vision.heads", v.heads),
                         ("text.width", t.width), ("text.layers", t.layers), ("text.heads", t.heads),
                         ("embed_dim", self.embed_dim), ("moe.num_experts", m.num_experts),
                         ("text.context_length", t.context_length), ("text.vocab_size", t.vocab_size)):
            _check(_is_int(val) and val >= 1, key, f"{val!r} must be a positive integer")
        _check(v.image_size % v.patch_size == 0, "vision.image_size",
               f"{v.image_size} must be a multiple of vision.patch_size ({v.patch_size})")
        _check(_is_number(v.mlp_ratio) and v.mlp_ratio > 0 and int(v.width * v.mlp_ratio) >= 1,
               "vision.mlp_ratio", f"{v.mlp_ratio!r} must be a number > 0")
        _check(v.stem in STEMS, "vision.stem", f"{v.stem!r}; allowed: {', '.join(STEMS)}")
        _check(v.stem == "patch" or v.patch_size == 16, "vision.patch_size",
               f"{v.patch_size}: the {v.stem} stem has stride 16, so patch_size must be 16")
        _check(v.width % v.heads == 0, "vision.heads", f"vision.width {v.width} must divide by {v.heads} heads")
        _check(t.width % t.heads == 0, "text.heads", f"text.width {t.width} must divide by {t.heads} heads")
        _check(t.context_length >= 3, "text.context_length", f"{t.context_length} leaves no room for a prompt")
        _check(m.weighting in WEIGHTINGS, "moe.weighting", f"{m.weighting!r}; allowed: {', '.join(WEIGHTINGS)}")
        _check(isinstance(m.layers, tuple), "moe.layers", f"{m.layers!r} must be a list of block indices")
        bad = [i for i in m.layers if not (_is_int(i) and 0 <= i < v.layers)]
        _check(not bad, "moe.layers", f"{bad} outside 0..{v.layers - 1} (the image blocks)")
        _check(len(set(m.layers)) == len(m.layers), "moe.layers", "contains duplicates")
        _check(m.slots_per_expert is None or (_is_int(m.slots_per_expert) and m.slots_per_expert >= 1),
               "moe.slots_per_expert", f"{m.slots_per_expert!r} must be an integer >= 1 or null")
        _check(m.expert_ratio is None or (_is_number(m.expert_ratio) and m.expert_ratio > 0
                                          and int(v.width * m.expert_ratio) >= 1),
               "moe.expert_ratio", f"{m.expert_ratio!r} must be a number > 0 or null")
        _check(m.la_key_scale is None or (_is_number(m.la_key_scale) and m.la_key_scale > 0), "moe.la_key_scale",
               f"{m.la_key_scale!r} must be a number > 0 or null")
        _check(isinstance(m.la_query_proj, bool), "moe.la_query_proj", f"{m.la_query_proj!r} must be true/false")
        _check(isinstance(self.prompts, tuple) and len(self.prompts) == 2
               and all(isinstance(p, str) and p.strip() for p in self.prompts),
               "prompts", f"{self.prompts!r} must be two non-empty strings: [live, attack]")
        for key, vals in (("mean", self.mean), ("std", self.std)):
            _check(isinstance(vals, tuple) and len(vals) == 3 and all(_is_number(x) for x in vals), key,
                   f"{vals!r} must be three numbers (R, G, B)")
        _check(all(s > 0 for s in self.std), "std", f"{self.std!r}: every value must be > 0")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"model config: {key}: {msg}")


def _build(klass, d: dict[str, Any], prefix: str, skip: tuple[str, ...] = ()):
    if not isinstance(d, dict):
        raise ValueError(f"model config: {prefix.rstrip('.') or 'config'} must be an object, got {d!r}")
    names = {f.name: f for f in dataclasses.fields(klass)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"model config: unknown key(s) {[prefix + k for k in unknown]}; "
                         f"allowed: {sorted(prefix + k for k in names if k not in skip)}")
    kwargs = {}
    for k, val in d.items():
        if k in ("layers", "prompts", "mean", "std") and isinstance(val, list):
            val = tuple(val)
        kwargs[k] = val
    try:
        return klass(**kwargs)
    except TypeError as e:
        raise ValueError(f"model config: {e}") from e


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name: str) -> ModelConfig:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(list_configs())}")
    d = json.loads(path.read_text())
    d.pop("description", None)
    d.setdefault("name", name)
    return ModelConfig.from_dict(d)
