"""The MobileNetV2 stem option (vision.stem) of the La-SoftMoE CLIP class: geometry, strict loading of the
ImageNet release layout, the real weights (an ImageNet cat), checkpoints and export; plus the La-SoftMoE key
scale and independent expert initialisation that make routing differ between inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import models
from models.config import ModelConfig, get_config
from models.soft_moe import SoftMoE
from models.stem import NUM_CONVS, MobileNetV2Stem, _InvertedResidual, load_mobilenet_v2_stem

from conftest import SHARED

MNV2 = SHARED / "pretrained" / "mobilenet_v2_1.0_224.safetensors"


def tiny_stem_config(**vision) -> ModelConfig:
    d = get_config("test-tiny").to_dict()
    d["vision"].update({"stem": "mobilenetv2", "patch_size": 16, "image_size": 64, **vision})
    d["mean"], d["std"], d["name"] = [0.5] * 3, [0.5] * 3, "tiny-stem"
    return ModelConfig.from_dict(d)


def release_like(tmp_path, drop: str | None = None, reshape: str | None = None, extra: str | None = None):
    """A file in the release's layout (c0..c52) with random values; optionally damaged."""
    stem = MobileNetV2Stem()
    sd = {}
    for k, conv in enumerate(stem.convs()):
        sd[f"c{k}.weight"] = torch.randn_like(conv.weight)
        sd[f"c{k}.bias"] = torch.randn_like(conv.bias)
    for k in range(NUM_CONVS, 53):  # blocks 13..16 and the classifier: present in the file, ignored
        sd[f"c{k}.weight"], sd[f"c{k}.bias"] = torch.randn(4, 4, 1, 1), torch.randn(4)
    if drop:
        del sd[drop]
    if reshape:
        sd[reshape] = torch.randn(1, *sd[reshape].shape)
    if extra:
        sd[extra] = torch.zeros(1)
    path = tmp_path / "mnv2.safetensors"
    save_file(sd, str(path))
    return path, sd


def test_stem_geometry_matches_the_patch_embedding():
    cfg = get_config("ViT-Ti-16-128-mnv2")
    assert cfg.vision.stem == "mobilenetv2" and cfg.vision.num_tokens == 65
    model = models.create_model(cfg).eval()
    assert model.visual.conv1 is None
    feats = model.visual.stem.features(torch.zeros(2, 3, 128, 128))
    assert feats.shape == (2, 96, 8, 8)
    assert model.visual.stem(torch.zeros(2, 3, 128, 128)).shape == (2, 64, 192)
    assert sum(p.numel() for p in model.visual.stem.features.parameters()) == pytest.approx(0.53e6, rel=0.05)
    with torch.no_grad():
        p = model.predict_proba(torch.randn(3, 3, 128, 128))
    assert p.shape == (3,) and torch.all((p > 0) & (p < 1))


def test_stem_config_is_validated():
    d = tiny_stem_config().to_dict()
    d["vision"]["stem"] = "resnet"
    with pytest.raises(ValueError, match="vision.stem"):
        ModelConfig.from_dict(d)
    d["vision"].update(stem="mobilenetv2", patch_size=8, image_size=64)
    with pytest.raises(ValueError, match="patch_size must be 16"):
        ModelConfig.from_dict(d)


def test_release_layout_loads_strictly(tmp_path):
    path, sd = release_like(tmp_path)
    stem = MobileNetV2Stem()
    assert load_mobilenet_v2_stem(stem, path) == 2 * NUM_CONVS
    assert torch.equal(stem.convs()[7].weight, sd["c7.weight"])
    assert torch.equal(stem.convs()[-1].bias, sd[f"c{NUM_CONVS - 1}.bias"])


@pytest.mark.parametrize("damage,match", [({"drop": "c5.bias"}, "missing c5.bias"),
                                          ({"reshape": "c12.weight"}, "c12.weight has shape"),
                                          ({"extra": "classifier.weight"}, "unexpected keys")])
def test_damaged_release_file_is_refused(tmp_path, damage, match):
    path, _ = release_like(tmp_path, **damage)
    with pytest.raises(ValueError, match=match):
        load_mobilenet_v2_stem(MobileNetV2Stem(), path)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mobilenet_v2_stem(MobileNetV2Stem(), tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_mobilenet_v2_stem(MobileNetV2Stem(), bad)


def test_real_imagenet_weights_see_a_cat():
    """Through the stem plus blocks 13..16 and the classifier of the same file, the public-domain 'chelsea'
    photo (scikit-image) is a cat: proves layout, padding and activations match the release."""
    if not MNV2.is_file():
        pytest.skip("../shared/pretrained is not present")
    from safetensors.torch import load_file
    from skimage import data

    import cv2

    sd = load_file(str(MNV2))
    stem = MobileNetV2Stem().eval()
    load_mobilenet_v2_stem(stem, MNV2)
    rest = [_InvertedResidual(96, 160, 2, 6), _InvertedResidual(160, 160, 1, 6), _InvertedResidual(160, 160, 1, 6),
            _InvertedResidual(160, 320, 1, 6)]
    convs = [m.conv for r in rest for m in r.modules() if hasattr(m, "conv") and isinstance(m.conv, torch.nn.Conv2d)]
    with torch.no_grad():
        for k, conv in enumerate(convs, start=NUM_CONVS):
            conv.weight.copy_(sd[f"c{k}.weight"])
            conv.bias.copy_(sd[f"c{k}.bias"])
        img = cv2.resize(data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
        x = stem(torch.from_numpy(img).permute(2, 0, 1)[None])
        for r in rest:
            x = r(x)
        x = F.relu6(F.conv2d(x, sd["c51.weight"], sd["c51.bias"])).mean((2, 3), keepdim=True)
        probs = F.conv2d(x, sd["c52.weight"], sd["c52.bias"]).flatten().softmax(0)
    # 1001 classes, 0 = background: 282 tabby, 283 tiger cat, 286 Egyptian cat
    top = int(probs.argmax())
    assert top in (282, 283, 286) and float(probs[top]) > 0.5


def test_stem_model_checkpoint_round_trip_and_export(tmp_path):
    cfg = tiny_stem_config()
    model = models.create_model(cfg).eval()
    path = models.save_checkpoint(tmp_path / "stem.safetensors", model, threshold=0.4)
    ck = models.load_checkpoint(path)
    assert ck.config.vision.stem == "mobilenetv2" and ck.preprocessing.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ck.model.predict_proba(x), model.predict_proba(x), atol=1e-6)
    from models.deploy.runtime import OnnxRuntimeRuntime, OpenVINORuntime, verify

    scorer = ck.model.scorer().eval()
    for kind in (OpenVINORuntime, OnnxRuntimeRuntime):
        rt = kind(scorer, tmp_path / kind.__name__)
        assert verify(rt, scorer) < 1e-4


def test_patch_checkpoint_cannot_load_into_a_stem_model(tmp_path):
    patch = models.create_model("test-tiny")
    stem = models.create_model(tiny_stem_config())
    with pytest.raises(RuntimeError):
        stem.load_state_dict(patch.state_dict())


def test_key_scale_makes_la_a_combine_weights_differ_between_slots():
    """Without the scale, phi(unit keys) is ~1 everywhere and every slot gets about the same combine weight."""
    torch.manual_seed(0)
    x = torch.randn(4, 30, 64)

    def spread(**kw) -> float:
        torch.manual_seed(1)
        moe = SoftMoE(64, 128, num_experts=4, slots_per_expert=8, weighting="la-a", **kw)
        with torch.no_grad():
            _, combine = moe.routing(x)
        return float((combine * combine.shape[-1]).std())  # relative deviation from uniform

    flat, scaled = spread(), spread(la_key_scale=10.0)
    assert flat < 0.05 and scaled > 4 * flat
    moe = SoftMoE(64, 128, 4, 8, weighting="la-a", la_key_scale=10.0)
    assert moe.key_scale is not None and moe.key_scale.requires_grad
    assert SoftMoE(64, 128, 4, 8, weighting="softmax", la_key_scale=10.0).key_scale is None


def test_fresh_experts_are_independent_and_keep_the_branch_closed():
    from models.training.train import fresh_experts

    d = get_config("test-tiny").to_dict()
    d["moe"].update(layers=[1], weighting="la-a")
    model = models.create_model(ModelConfig.from_dict(d)).eval()
    x = torch.randn(2, 3, model.config.vision.image_size, model.config.vision.image_size)
    with torch.no_grad():
        before = model.predict_proba(x)
        e = model.visual.transformer.resblocks[1].moe.experts
        assert torch.equal(e.c_fc_weight[0], e.c_fc_weight[1])  # upcycled: identical copies
        fresh_experts(model, seed=0)
        assert not torch.equal(e.c_fc_weight[0], e.c_fc_weight[1])
        assert torch.allclose(model.predict_proba(x), before)  # gate still 0: same function
