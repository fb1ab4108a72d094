"""Loading official CLIP weight formats into our towers, and parity with transformers' CLIPModel.

Every format is written here from locally built weights (no downloads): OpenAI state dict (.pt, fp32 and fp16),
OpenAI-style TorchScript archive, open_clip training checkpoint, Hugging Face ``save_pretrained`` folder and
its single weights files. Parity: a randomly initialised ``transformers.CLIPModel`` of our geometry, loaded
with ``load_pretrained_clip``, gives the same image and text features as transformers itself.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch

import models
from models.config import ModelConfig, get_config

transformers = pytest.importorskip("transformers")

TEXTS = ["This is an image of a live face", "This is an image of a fake face", "a photo of a cat", "x"]


def cfg_with(base: str = "test-tiny", **moe) -> ModelConfig:
    d = get_config(base).to_dict()
    d["moe"].update(moe)
    return ModelConfig.from_dict(d)


def hf_config(cfg: ModelConfig, **vision_overrides) -> "transformers.CLIPConfig":
    """transformers.CLIPConfig with our geometry (OpenAI CLIP: quick_gelu, LayerNorm eps 1e-5)."""
    v, t = cfg.vision, cfg.text
    vision = dict(hidden_size=v.width, intermediate_size=int(v.width * v.mlp_ratio), num_hidden_layers=v.layers,
                  num_attention_heads=v.heads, image_size=v.image_size, patch_size=v.patch_size,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
    vision.update(vision_overrides)
    text = dict(hidden_size=t.width, intermediate_size=4 * t.width, num_hidden_layers=t.layers,
                num_attention_heads=t.heads, max_position_embeddings=t.context_length, vocab_size=t.vocab_size,
                hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.embed_dim)


@torch.no_grad()
def random_hf_model(cfg: ModelConfig, seed: int = 0, **vision_overrides) -> "transformers.CLIPModel":
    """A CLIPModel with every tensor random (LayerNorm weights and biases too, so no mapping hides behind 1/0)."""
    torch.manual_seed(seed)
    hf = transformers.CLIPModel(hf_config(cfg, **vision_overrides)).eval()
    for name, p in hf.named_parameters():
        if name != "logit_scale":
            p.add_(torch.randn_like(p) * (0.1 if "norm" in name else 0.02))
    return hf


def features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output object (transformers 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    """(transformers model, save_pretrained folder) at test-tiny geometry."""
    hf = random_hf_model(get_config("test-tiny"))
    folder = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(folder)
    return hf, folder


@pytest.fixture(scope="module")
def dense_source(tmp_path_factory):
    """A random dense test-tiny model: the CLIP whose weights the OpenAI/open_clip/TorchScript files carry."""
    torch.manual_seed(3)
    model = models.create_model(cfg_with(layers=[])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def openai_state_dict(model) -> dict[str, torch.Tensor]:
    """Our state dict minus MoE keys plus OpenAI's non-weight entries, as in its released state dicts."""
    sd = {k: v.clone() for k, v in model.state_dict().items() if ".moe." not in k}
    sd.update(input_resolution=torch.tensor(model.config.vision.image_size),
              context_length=torch.tensor(model.config.text.context_length),
              vocab_size=torch.tensor(model.config.text.vocab_size))
    return sd


def assert_same_function(model, reference, atol: float = 0.0):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    tokens = models.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), reference.encode_image(x), rtol=0, atol=atol)
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=atol)
        torch.testing.assert_close(model.predict_proba(x), reference.predict_proba(x), rtol=0, atol=atol)


# --- parity with transformers --------------------------------------------------------------------------
@pytest.mark.parametrize("weighting", ["softmax", "la-a", "la-b", None])
def test_parity_with_transformers_clip(hf_tiny, weighting):
    hf, folder = hf_tiny
    cfg = cfg_with(layers=[] if weighting is None else [0, 1], weighting=weighting or "la-b")
    torch.manual_seed(1)
    model = models.create_model(cfg).eval()
    x = torch.randn(3, 3, 32, 32)
    tokens = models.tokenize(TEXTS)
    with torch.no_grad():
        before = model.encode_image(x)
        report = models.load_pretrained_clip(model, folder)
        ref_img = features(hf.get_image_features(pixel_values=x))
        ref_txt = features(hf.get_text_features(input_ids=tokens))
        img, txt = model.encode_image(x), model.encode_text(tokens)
    assert report.source_format == "huggingface"
    assert report.missing_moe == (0 if weighting is None else 2 * len(dict(model.visual.transformer.resblocks[0]
                                                                          .moe.named_parameters())))
    assert rel_err(before, ref_img) > 0.1  # a fresh model is not already equal: the comparison can fail
    assert img.shape == ref_img.shape == (3, 32) and txt.shape == ref_txt.shape == (4, 32)
    assert rel_err(img, ref_img) < 1e-4
    assert rel_err(txt, ref_txt) < 1e-4
    torch.testing.assert_close(model.logit_scale, hf.logit_scale)
    # and the 2-way logits equal CLIPModel's logits_per_image on the two prompts
    with torch.no_grad():
        out = hf(input_ids=models.tokenize(list(cfg.prompts)), pixel_values=x)
        torch.testing.assert_close(model(x), out.logits_per_image, rtol=1e-4, atol=1e-4)


def test_moe_model_equals_dense_model_after_loading(hf_tiny):
    _, folder = hf_tiny
    moe = models.create_model(cfg_with(layers=[0, 1], weighting="la-b")).eval()
    dense = models.create_model(cfg_with(layers=[])).eval()
    models.load_pretrained_clip(moe, folder)
    models.load_pretrained_clip(dense, folder)
    for b in moe.visual.transformer.resblocks:  # upcycled from the loaded MLPs, not the random init ones
        assert torch.equal(b.moe.experts.c_fc_weight[2], b.mlp.c_fc.weight) and b.moe.gate.item() == 0.0
    assert_same_function(moe, dense)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_huggingface_single_file(hf_tiny, tmp_path, name):
    hf, folder = hf_tiny
    ref = models.create_model("test-tiny").eval()
    models.load_pretrained_clip(ref, folder)
    if name == "model.safetensors":
        path = folder / name  # the file inside the save_pretrained folder (config.json beside it is checked)
    else:
        path = tmp_path / name  # a lone torch.save'd state dict, no config.json
        torch.save(hf.state_dict(), path)
    model = models.create_model("test-tiny").eval()
    report = models.load_pretrained_clip(model, path)
    assert report.source_format == "huggingface"
    assert_same_function(model, ref)


def test_huggingface_config_mismatch_raises(tmp_path):
    cfg = get_config("test-tiny")
    hf = random_hf_model(cfg, hidden_act="gelu")
    hf.save_pretrained(tmp_path / "gelu")
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        models.load_pretrained_clip(models.create_model(cfg), tmp_path / "gelu")
    # 4 heads instead of 2: every shape matches, only the config can tell
    hf = random_hf_model(cfg, num_attention_heads=4)
    hf.save_pretrained(tmp_path / "heads")
    with pytest.raises(ValueError, match="num_attention_heads 4 != 2"):
        models.load_pretrained_clip(models.create_model(cfg), tmp_path / "heads")


# --- OpenAI, TorchScript, open_clip ------------------------------------------------------------------------
def test_openai_state_dict(dense_source, tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    torch.save(openai_state_dict(dense_source), path)
    model = models.create_model(cfg_with(layers=[1], weighting="la-a")).eval()
    report = models.load_pretrained_clip(model, path)
    assert report.source_format == "state-dict" and report.missing_moe > 0
    assert_same_function(model, dense_source)


def test_openai_fp16_state_dict(dense_source, tmp_path):
    """OpenAI's released weights are fp16: they are cast to the model's dtype on load."""
    path = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in openai_state_dict(dense_source).items()},
               path)
    model = models.create_model("test-tiny").eval()
    models.load_pretrained_clip(model, path)
    assert model.visual.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(model.visual.proj, dense_source.visual.proj.half().float(), rtol=0, atol=0)


def test_torchscript_archive(dense_source, tmp_path):
    """A TorchScript archive (how OpenAI ships ViT-B/16) is read through torch.jit.load's state_dict."""
    import copy

    module = copy.deepcopy(dense_source)
    for k, v in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        module.register_buffer(k, torch.tensor(v))  # OpenAI's archives carry these as tensors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python values
        traced = torch.jit.trace_module(module, {"encode_image": torch.randn(1, 3, 32, 32)}, check_trace=False)
        path = tmp_path / "ViT-tiny-jit.pt"
        torch.jit.save(traced, str(path))
    model = models.create_model("test-tiny").eval()
    report = models.load_pretrained_clip(model, path)
    assert report.source_format == "openai-torchscript"
    assert_same_function(model, dense_source)


def test_open_clip_checkpoint(dense_source, tmp_path):
    """open_clip training checkpoints: {"epoch", "name", "state_dict": {"module.<key>": ...}, "optimizer"}."""
    sd = {"module." + k: v for k, v in dense_source.state_dict().items()}
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "tiny", "state_dict": sd,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]}}, path)
    model = models.create_model("test-tiny").eval()
    assert models.load_pretrained_clip(model, path).source_format == "state-dict"
    assert_same_function(model, dense_source)


def test_safetensors_with_moe_branches_keeps_them(tmp_path):
    """A file that carries trained MoE branches is loaded as it is; only absent branches are upcycled."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = models.create_model(cfg_with(layers=[0, 1])).eval()
    with torch.no_grad():
        for b in src.visual.transformer.resblocks:
            b.moe.gate.fill_(0.5)
            b.moe.experts.c_fc_weight.mul_(1.5)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "moe.safetensors"))
    model = models.create_model(cfg_with(layers=[0, 1])).eval()
    assert models.load_pretrained_clip(model, tmp_path / "moe.safetensors").missing_moe == 0
    assert_same_function(model, src)
    # a branch with some of its tensors missing is an error naming them
    sd = {k: v.contiguous() for k, v in src.state_dict().items() if not k.endswith("resblocks.1.moe.gate")}
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"resblocks\.1\.moe\.gate"):
        models.load_pretrained_clip(model, tmp_path / "partial.safetensors")


def test_position_embedding_resized_to_a_larger_input(dense_source, tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(openai_state_dict(dense_source), path)
    d = get_config("test-tiny").to_dict()
    d["vision"]["image_size"] = 48  # 6 x 6 patches instead of 4 x 4
    model = models.create_model(d).eval()
    report = models.load_pretrained_clip(model, path)
    assert report.resized_position_embedding
    pos = model.visual.positional_embedding
    assert pos.shape == (37, 32)
    torch.testing.assert_close(pos[0], dense_source.visual.positional_embedding[0])  # CLS row kept
    assert model.encode_image(torch.randn(1, 3, 48, 48)).shape == (1, 32)


# --- errors -----------------------------------------------------------------------------------------------
def test_wrong_keys_and_shapes_raise_listing_them(dense_source, tmp_path):
    sd = openai_state_dict(dense_source)
    sd["visual.extra_head.weight"] = torch.zeros(2)
    del sd["ln_final.bias"]
    sd["text_projection"] = torch.zeros(32, 16)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError) as e:
        models.load_pretrained_clip(models.create_model("test-tiny"), path)
    msg = str(e.value)
    assert "visual.extra_head.weight" in msg and "ln_final.bias" in msg
    assert "text_projection: file (32, 16) vs model (32, 32)" in msg
    assert str(path) in msg


def test_weights_of_another_geometry_raise(hf_tiny):
    _, folder = hf_tiny
    d = get_config("test-tiny").to_dict()
    d["vision"]["layers"] = 3
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): \['visual\.transformer\.resblocks\.2\."):
        models.load_pretrained_clip(models.create_model(d), folder)


class _Sneaky:
    ran = False

    def __setstate__(self, state):
        _Sneaky.ran = True  # would run on unpickling


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(32, 32), "payload": _Sneaky()}, path)
    with pytest.raises(ValueError, match="Pickled objects are refused"):
        models.load_pretrained_clip(models.create_model("test-tiny"), path)
    assert not _Sneaky.ran


def test_missing_and_empty_paths(tmp_path):
    model = models.create_model("test-tiny")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        models.load_pretrained_clip(model, tmp_path / "nothing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        models.load_pretrained_clip(model, tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pt"):
        models.load_pretrained_clip(model, tmp_path / "junk.pt")


# --- the "done when": ViT-B/16 geometry into the paper's La-SoftMoE config ---------------------------
@pytest.mark.slow
def test_vit_b16_transformers_folder_into_paper_config(tmp_path):
    # the save_pretrained folder is ~570 MB: gone when the test ends, even when it fails (pytest keeps a failed
    # test's tmp_path)
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        _vit_b16_transformers_folder_into_paper_config(Path(folder))


def _vit_b16_transformers_folder_into_paper_config(tmp_path: Path) -> None:
    paper = get_config("ViT-B-16")
    assert paper.moe.layers == tuple(range(12)) and paper.moe.weighting in ("la-a", "la-b")
    torch.manual_seed(0)
    with torch.no_grad():
        hf = transformers.CLIPModel(hf_config(paper)).eval()
        for name, p in hf.named_parameters():  # perturb norms too (their init is 1 / 0)
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = models.tokenize(list(paper.prompts) + ["a photo of a cat"])
    with torch.no_grad():
        ref_img = features(hf.get_image_features(pixel_values=x))
        ref_txt = features(hf.get_text_features(input_ids=tokens))
    del hf
    model = models.create_model("ViT-B-16").eval()
    report = models.load_pretrained_clip(model, tmp_path)
    assert report.source_format == "huggingface" and report.missing_moe > 0
    with torch.no_grad():
        img, txt = model.encode_image(x), model.encode_text(tokens)
        p_moe = model.predict_proba(x)
    assert rel_err(img, ref_img) < 1e-4, rel_err(img, ref_img)
    assert rel_err(txt, ref_txt) < 1e-4, rel_err(txt, ref_txt)
    del model
    dense = models.create_model("ViT-B-16-dense").eval()
    models.load_pretrained_clip(dense, tmp_path)
    with torch.no_grad():
        p_dense = dense.predict_proba(x)
    assert torch.equal(p_moe, p_dense), (p_moe, p_dense)
