"""Soft MoE / La-SoftMoE layer and CLIP towers on tiny configs: shapes, routing sums, permutation
equivariance, gradients, upcycling (fresh MoE model == dense model), config validation."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import models
from models.config import WEIGHTINGS, ModelConfig, get_config
from models.soft_moe import SoftMoE, unrolled_experts

TINY = get_config("test-tiny")


def tiny(weighting: str = "la-b", layers=(1,), **moe) -> ModelConfig:
    d = TINY.to_dict()
    d["moe"].update(layers=list(layers), weighting=weighting, **moe)
    d["name"] = f"tiny-{weighting}"
    return ModelConfig.from_dict(d)


def layer(weighting: str, seed: int = 0, **kw) -> SoftMoE:
    torch.manual_seed(seed)
    moe = SoftMoE(dim=16, hidden=24, num_experts=3, slots_per_expert=5, weighting=weighting, **kw)
    with torch.no_grad():
        moe.gate.fill_(0.7)  # the branch starts at 0; open it so the tests see the experts' output
        moe.scale.fill_(3.0)  # sharper routing than the init value 1, so sums and permutations are not trivial
    return moe


WEIGHTING_CASES = [("softmax", {}), ("la-a", {}), ("la-a", {"la_query_proj": True}), ("la-b", {})]
IDS = ["softmax", "la-a", "la-a-qproj", "la-b"]


@pytest.mark.parametrize("weighting,kw", WEIGHTING_CASES, ids=IDS)
def test_soft_moe_shapes_and_routing_sums(weighting, kw):
    moe = layer(weighting, **kw)
    x = torch.randn(2, 11, 16)
    y, expert_share = moe(x, return_expert_weights=True)
    assert y.shape == (2, 11, 16)
    assert expert_share.shape == (2, 3)
    torch.testing.assert_close(expert_share.sum(-1), torch.ones(2))
    dispatch, combine = moe.routing(x)
    assert dispatch.shape == combine.shape == (2, 11, 15)  # b m s, s = 3 experts x 5 slots
    assert (dispatch > 0).all() and (combine > 0).all()
    torch.testing.assert_close(dispatch.sum(dim=1), torch.ones(2, 15))  # each slot: convex mix of tokens
    torch.testing.assert_close(combine.sum(dim=-1), torch.ones(2, 11))  # each token: convex mix of slots
    # the combine weights of the three weightings differ (the option is not ignored)
    others = {w: layer(w, **kw)(x) for w in WEIGHTINGS if w != weighting}
    for w, other in others.items():
        assert not torch.allclose(y, other, atol=1e-4), f"{weighting} and {w} give the same output"


@pytest.mark.parametrize("weighting,kw", WEIGHTING_CASES, ids=IDS)
def test_soft_moe_matches_a_loop_reference(weighting, kw):
    """The einsum forward equals a plain per-expert loop written from the equations in docs/architecture.md and soft_moe.py."""
    moe = layer(weighting, **kw)
    x = torch.randn(2, 9, 16)
    dispatch, combine = moe.routing(x)
    # routing logits from the definition: scale * l2norm(X) @ l2norm(Phi)
    logits = moe.scale * F.normalize(x, dim=-1) @ F.normalize(moe.slot_embeds, dim=0)
    torch.testing.assert_close(dispatch, logits.softmax(dim=1))
    if weighting == "softmax":
        torch.testing.assert_close(combine, logits.softmax(dim=-1))
    elif weighting == "la-b":
        mu, sd = logits.mean(1, keepdim=True), logits.std(1, unbiased=False, keepdim=True)
        w = F.elu((logits - mu) / torch.sqrt(sd ** 2 + 1e-5)) + 1
        torch.testing.assert_close(combine, w / w.sum(-1, keepdim=True))
    else:  # la-a: linear attention, queries = tokens instance-normalised over the token axis, keys = slots
        q = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
        if kw.get("la_query_proj"):
            q = moe.query_proj(q)
        w = (F.elu(q) + 1) @ (F.elu(F.normalize(moe.slot_embeds, dim=0)) + 1)
        torch.testing.assert_close(combine, w / w.sum(-1, keepdim=True))
    slots = dispatch.transpose(1, 2) @ x  # b s d
    outs = []
    e = moe.experts
    for k in range(moe.num_experts):
        s_k = slots[:, k * moe.slots_per_expert:(k + 1) * moe.slots_per_expert]
        h = s_k @ e.c_fc_weight[k].t() + e.c_fc_bias[k]
        h = h * torch.sigmoid(1.702 * h)
        outs.append(h @ e.c_proj_weight[k].t() + e.c_proj_bias[k])
    ref = (combine @ torch.cat(outs, dim=1)) * moe.gate
    torch.testing.assert_close(moe(x), ref, rtol=1e-5, atol=1e-6)
    with unrolled_experts(moe):  # the export's form: one matmul per expert, the same function
        assert moe.experts.unrolled
        torch.testing.assert_close(moe(x), ref, rtol=1e-5, atol=1e-6)
    assert not moe.experts.unrolled  # restored after the block


@pytest.mark.parametrize("weighting,kw", WEIGHTING_CASES, ids=IDS)
def test_soft_moe_permutation_equivariant_over_tokens(weighting, kw):
    moe = layer(weighting, **kw)
    x = torch.randn(2, 13, 16)
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(1))
    y = moe(x)
    torch.testing.assert_close(moe(x[:, perm]), y[:, perm], rtol=1e-5, atol=1e-6)
    # and it is not simply token-wise: changing one token changes the others' outputs (slots mix tokens)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(moe(x2)[:, 1:], y[:, 1:], atol=1e-6)


def test_soft_moe_rejects_unknown_weighting():
    with pytest.raises(ValueError, match="weighting 'linear'"):
        SoftMoE(8, 16, 2, 2, weighting="linear")


@pytest.mark.parametrize("weighting,kw", WEIGHTING_CASES, ids=IDS)
def test_model_shapes(weighting, kw):
    torch.manual_seed(0)
    model = models.create_model(tiny(weighting, **kw)).eval()
    x = torch.randn(3, 3, 32, 32)
    tokens = models.tokenize(["a photo of a cat", "a face"])
    assert model.encode_image(x).shape == (3, 32)
    assert model.encode_text(tokens).shape == (2, 32)
    logits = model(x)
    assert logits.shape == (3, 2)
    p = model.predict_proba(x)
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
    torch.testing.assert_close(model.scorer()(x), p)
    ew = model.expert_weights(x)
    assert ew.shape == (3, 1, 4)  # batch x MoE layers x experts
    torch.testing.assert_close(ew.sum(-1), torch.ones(3, 1))
    # the routing scorer: the same P(attack), and the routing from that same pass
    p2, shares, tok = model.scorer(routing=True)(x)
    torch.testing.assert_close(p2, p)
    torch.testing.assert_close(shares, ew)
    assert tok.shape == (3, 1, 16, 4)  # batch x MoE layers x patches (4 x 4 grid) x experts
    torch.testing.assert_close(tok.sum(-1), torch.ones(3, 1, 16))


def test_dense_model_has_no_moe_and_no_expert_weights():
    cfg = tiny(layers=())
    model = models.create_model(cfg).eval()
    assert all(b.moe is None for b in model.visual.transformer.resblocks)
    assert model.expert_weights(torch.randn(2, 3, 32, 32)).shape == (2, 0, 0)
    assert not model.has_moe
    with pytest.raises(ValueError, match="dense"):
        model.scorer(routing=True)
    base, new = model.param_groups()
    assert new == [] and len(base) == len(list(model.parameters()))


@pytest.mark.parametrize("weighting,kw", WEIGHTING_CASES, ids=IDS)
def test_every_parameter_gets_a_gradient(weighting, kw):
    torch.manual_seed(0)
    model = models.create_model(tiny(weighting, layers=(0, 1), **kw)).train()
    with torch.no_grad():
        for b in model.visual.transformer.resblocks:
            b.moe.gate.fill_(0.5)  # gates start at 0, which would stop every MoE gradient but the gate's
    x = torch.randn(4, 3, 32, 32)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 1, 0]))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    base, new = model.param_groups()
    moe_names = {n for n, _ in model.named_parameters() if ".moe." in n}
    assert len(new) == len(moe_names) > 0 and len(base) + len(new) == len(list(model.parameters()))


def test_moe_branch_starts_at_zero_but_learns():
    """With the gate at 0 only the gate gets a gradient at step 0; it is nonzero, so the branch opens."""
    torch.manual_seed(0)
    model = models.create_model(tiny("la-b")).train()
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 1, 0]))
    loss.backward()
    moe = model.visual.transformer.resblocks[1].moe
    assert moe.gate.grad is not None and moe.gate.grad.abs() > 0


@pytest.mark.parametrize("weighting,kw", WEIGHTING_CASES, ids=IDS)
def test_fresh_moe_model_equals_dense_model(weighting, kw):
    """A freshly built MoE model computes exactly what the dense CLIP with the same weights computes."""
    torch.manual_seed(0)
    moe_model = models.create_model(tiny(weighting, layers=(0, 1), **kw)).eval()
    dense = models.create_model(tiny(layers=())).eval()
    missing, unexpected = dense.load_state_dict(moe_model.state_dict(), strict=False)
    assert missing == [] and all(".moe." in k for k in unexpected) and unexpected
    # experts are upcycled copies of the block MLP
    for b in moe_model.visual.transformer.resblocks:
        for k in range(4):
            torch.testing.assert_close(b.moe.experts.c_fc_weight[k], b.mlp.c_fc.weight, rtol=0, atol=0)
            torch.testing.assert_close(b.moe.experts.c_proj_bias[k], b.mlp.c_proj.bias, rtol=0, atol=0)
        assert b.moe.gate.item() == 0.0
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(moe_model.encode_image(x), dense.encode_image(x))
        assert torch.equal(moe_model.predict_proba(x), dense.predict_proba(x))
        # the branch is really computed and would change the output once the gate opens
        for b in moe_model.visual.transformer.resblocks:
            b.moe.gate.fill_(1.0)
        assert not torch.allclose(moe_model.encode_image(x), dense.encode_image(x), atol=1e-4)


def test_upcycle_mismatched_expert_width_keeps_random_experts_and_zero_gate():
    torch.manual_seed(0)
    model = models.create_model(tiny("softmax", expert_ratio=2.0))
    moe = model.visual.transformer.resblocks[1].moe
    assert moe.experts.c_fc_weight.shape == (4, 64, 32)
    assert moe.gate.item() == 0.0
    with pytest.raises(ValueError, match="expert_ratio"):
        moe.experts.upcycle_from(model.visual.transformer.resblocks[1].mlp.c_fc,
                                 model.visual.transformer.resblocks[1].mlp.c_proj)


def test_prompt_features_cache_follows_mode_and_weights():
    torch.manual_seed(0)
    model = models.create_model("test-tiny").eval()
    a = model.prompt_features()
    assert a.shape == (2, 32) and not a.requires_grad
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    assert model.prompt_features() is a  # cached in eval
    model.train()
    assert model.prompt_features().requires_grad  # recomputed, differentiable in training
    with torch.no_grad():
        model.text_projection.mul_(-1.0)
    model.eval()
    torch.testing.assert_close(model.prompt_features(), -a)


def test_paper_config_geometry():
    """The paper's configuration (docs/architecture.md "The model"): ViT-B/16 at 224 px, La-SoftMoE in all 12 blocks, 4 x 49 slots."""
    cfg = get_config("ViT-B-16")
    assert (cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.width, cfg.vision.layers,
            cfg.vision.heads) == (224, 16, 768, 12, 12)
    assert cfg.vision.num_tokens == 197
    assert cfg.moe.layers == tuple(range(12)) and cfg.moe.num_experts == 4 and cfg.slots_per_expert() == 49
    assert cfg.moe.weighting in ("la-a", "la-b")
    assert (cfg.text.width, cfg.text.layers, cfg.text.context_length, cfg.embed_dim) == (512, 12, 77, 512)
    assert get_config("ViT-B-16-dense").moe.layers == ()
    assert get_config("ViT-B-16-softmoe").moe.weighting == "softmax"
    # Soft MoE's default slot rule when slots_per_expert is not given: round(197 / 4) = 49
    d = cfg.to_dict()
    d["moe"]["slots_per_expert"] = None
    assert ModelConfig.from_dict(d).slots_per_expert() == 49


def test_every_named_config_builds_valid():
    for name in models.list_configs():
        cfg = get_config(name)
        assert cfg.name == name
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg  # the JSON round trip used by checkpoints


@pytest.mark.parametrize("path,value,key", [
    (("vision", "patch_size"), 7, "vision.image_size"),
    (("vision", "patch_size"), 0, "vision.patch_size"),
    (("vision", "image_size"), -32, "vision.image_size"),
    (("vision", "heads"), 3, "vision.heads"),
    (("vision", "mlp_ratio"), 0, "vision.mlp_ratio"),
    (("vision", "layers"), 2.5, "vision.layers"),
    (("vision", "layers"), True, "vision.layers"),
    (("text", "width"), 31, "text.heads"),
    (("moe", "weighting"), "linear", "moe.weighting"),
    (("moe", "layers"), [2], "moe.layers"),
    (("moe", "layers"), [1, 1], "moe.layers"),
    (("moe", "num_experts"), 0, "moe.num_experts"),
    (("moe", "slots_per_expert"), 0, "moe.slots_per_expert"),
    (("moe", "expert_ratio"), -1.0, "moe.expert_ratio"),
    (("prompts",), ["only one"], "prompts"),
    (("prompts",), ["live", ""], "prompts"),
    (("std",), [0.2, 0.0, 0.2], "std"),
    (("vision", "depth"), 3, "vision.depth"),
    (("colour",), "red", "colour"),
])
def test_config_validation_names_the_key(path, value, key):
    d = TINY.to_dict()
    target = d
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        models.create_model(d)


def test_unknown_config_name_lists_known():
    with pytest.raises(ValueError, match="test-tiny"):
        models.create_model("ViT-Z-99")
    with pytest.raises(TypeError):
        models.create_model(42)


def test_model_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    model = models.create_model(tiny("la-a")).eval()
    with torch.no_grad():
        model.visual.transformer.resblocks[1].moe.gate.fill_(1.0)
    x = torch.randn(4, 3, 32, 32)
    full = model.predict_proba(x)
    parts = torch.cat([model.predict_proba(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(full, parts, rtol=1e-5, atol=1e-6)
    # deep copy gives the same function (no hidden state outside parameters/buffers)
    torch.testing.assert_close(copy.deepcopy(model).predict_proba(x), full)
