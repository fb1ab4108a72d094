"""models.training.info: parameter counts and analytic FLOPs, cross-checked against torch's FlopCounterMode."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import models
from models.config import ModelConfig, get_config
from models.training.info import describe, image_flops, main

ROOT = Path(__file__).resolve().parents[3]


def variant(**moe) -> ModelConfig:
    d = get_config("test-tiny").to_dict()
    d["moe"].update(moe)
    return ModelConfig.from_dict(d)


@pytest.mark.parametrize("cfg", [
    variant(layers=[]),
    variant(layers=[1], weighting="la-b"),
    variant(layers=[0, 1], weighting="softmax", slots_per_expert=3, num_experts=2),
    variant(layers=[0], weighting="la-a", expert_ratio=2.0),
    variant(layers=[0, 1], weighting="la-a", la_query_proj=True),
], ids=["dense", "la-b", "softmax-2x3", "la-a-ratio2", "la-a-qproj"])
def test_flops_match_flop_counter(cfg):
    torch.manual_seed(0)
    scorer = models.create_model(cfg).eval().scorer()
    x = torch.randn(1, 3, 32, 32)
    # the math SDPA backend runs attention as matmuls the counter sees (the fused CPU kernel has no formula)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        scorer(x)
    assert image_flops(cfg)["total"] == counter.get_total_flops()
    # per crop: a batch of 3 costs three times as much
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        scorer(torch.randn(3, 3, 32, 32))
    assert 3 * image_flops(cfg)["total"] == counter.get_total_flops()


def test_vit_b16_figures():
    """OpenAI CLIP ViT-B/16's published sizes: 149.6 M parameters, image tower 86.2 M, ~17.6 GMACs at 224 px."""
    dense = image_flops(get_config("ViT-B-16-dense"))
    assert dense["moe"] == 0 and 17.4e9 < dense["total"] / 2 < 17.7e9
    paper = image_flops(get_config("ViT-B-16"))
    # 12 branches x 196 slots through 768-3072-768 experts: about as much again as the block MLPs
    assert paper["moe"] > 0.9 * paper["mlp"] and paper["total"] > dense["total"]
    cfg = get_config("ViT-B-16-dense")
    with torch.device("meta"):  # counts without allocating the weights
        model = models.create_model(cfg)
    info = describe(models.Checkpoint(model=model, config=cfg, preprocessing=models.Preprocessing.from_config(cfg),
                                      prompts=cfg.prompts, threshold=0.5))
    assert info["params"]["total"] == 149_620_737
    assert info["params"]["image_tower"] == 86_192_640 and info["params"]["moe"] == 0


def test_describe_counts(tiny_checkpoint):
    ck = models.load_checkpoint(tiny_checkpoint)
    info = describe(ck)
    m = ck.model
    p = info["params"]
    assert p["total"] == sum(t.numel() for t in m.parameters())
    assert p["image_tower"] == sum(t.numel() for t in m.visual.parameters())
    assert p["moe"] == sum(t.numel() for n, t in m.named_parameters() if ".moe." in n) > 0
    assert p["image_tower"] + p["text_tower"] + 1 == p["total"]  # + logit_scale
    assert (info["input_size"], info["tokens"]) == (32, 17)
    assert info["moe"] == {"layers": [1], "experts": 4, "slots_per_expert": 4, "slots": 16, "weighting": "la-b"}
    assert info["threshold"] == ck.threshold and info["prompts"] == list(ck.prompts)


def test_cli_table_and_json(tiny_checkpoint, tmp_path, capsys):
    model = models.create_model("test-tiny")
    path = models.save_checkpoint(tmp_path / "c.safetensors", model, threshold=0.42,
                                  data_card={"data": "faces/manifest.csv", "sources": ["x", "y"],
                                             "val_metrics": {"pooled": {"auc": 0.97}}})
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "threshold    0.4200" in out and "faces/manifest.csv" in out and "val_metrics: {pooled}" in out
    assert "FLOPs/crop" in out and "la-b in blocks [1]" in out
    assert main([str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["threshold"] == 0.42 and info["flops_per_crop"]["total"] == image_flops(model.config)["total"]
    assert main(["ViT-Ti-16-128-dense"]) == 0
    assert "none (dense CLIP)" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    assert main(["no-such-config"]) == 2
    assert "unknown model config 'no-such-config'" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"12345678")
    assert main([str(tmp_path / "bad.safetensors")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "models.training.info", "test-tiny", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"]["moe"] > 0


def test_stem_flops_match_flop_counter():
    d = get_config("test-tiny").to_dict()
    d["vision"].update(stem="mobilenetv2", patch_size=16, image_size=64)
    d["moe"].update(layers=[1], weighting="la-a", la_key_scale=5.0)
    cfg = ModelConfig.from_dict(d)
    scorer = models.create_model(cfg).eval().scorer()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        scorer(torch.randn(1, 3, 64, 64))
    flops = image_flops(cfg)
    assert flops["total"] == counter.get_total_flops()
    assert flops["patch_embed"] > 10 * 2 * 16 * (3 * 16 * 16) * 32  # the stem costs far more than a patch conv
