"""Training-only auxiliary objectives: the spectrum target, gradient reversal, the domain head, and a trainer run
that uses both and resumes with their state."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.training import train as trainer
from models.training.auxiliary import DomainHead, SpectrumHead, TokenTap, grad_reverse, spectrum_target

from test_train import _make_manifest  # same folder: pytest puts it on sys.path


def test_spectrum_target_is_scaled_and_sees_high_frequencies():
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = torch.from_numpy(np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / 400.0)).float()
    grainy = smooth + 0.3 * torch.randn(64, 64, generator=torch.Generator().manual_seed(0))  # sensor / print grain
    x = torch.stack([smooth, grainy])[:, None].expand(-1, 3, -1, -1)
    t = spectrum_target(x, 8)
    assert t.shape == (2, 1, 8, 8)
    assert float(t.min()) >= 0.0 and float(t.max()) == pytest.approx(1.0)
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:6, 2:6] = False  # outside the centre of the shifted spectrum: the high frequencies
    assert float(t[1, 0][border].mean()) > float(t[0, 0][border].mean()) + 0.1


def test_spectrum_head_learns_the_map_from_tokens():
    torch.manual_seed(0)
    head = SpectrumHead(16)
    x = torch.randn(4, 3, 32, 32)
    tokens = torch.cat([torch.zeros(4, 1, 16), torch.randn(4, 64, 16)], dim=1)  # class token + 8 x 8 grid
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    first = float(head.loss(tokens, x).detach())
    for _ in range(60):
        opt.zero_grad()
        loss = head.loss(tokens, x)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    with pytest.raises(ValueError, match="square token grid"):
        head(torch.randn(1, 10, 16))


def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_domain_head_classifiers_descend_and_features_ascend():
    torch.manual_seed(0)
    head = DomainHead(8, 3)
    tokens = torch.randn(6, 5, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    domains = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = head.loss(tokens, labels, domains, lam=1.0)
    loss.backward()
    g_feat = tokens.grad[:, 0].clone()
    # same loss without reversal: the feature gradient is exactly the opposite
    tokens.grad = None
    head.zero_grad()
    feat = torch.nn.functional.layer_norm(tokens[:, 0], (8,))
    plain = torch.stack([torch.nn.functional.cross_entropy(head.heads[c](feat[labels == c]), domains[labels == c])
                         for c in (0, 1)]).mean()
    plain.backward()
    torch.testing.assert_close(g_feat, -tokens.grad[:, 0])
    assert float(tokens.grad[:, 1:].abs().sum()) == 0.0  # only the class token is read
    assert DomainHead.schedule(0.0) == 0.0 and DomainHead.schedule(1.0) > 0.99
    with pytest.raises(ValueError):
        DomainHead(8, 1)


def test_the_tower_cannot_raise_the_domain_loss_by_scaling_its_features():
    # the first DANN run diverged this way: the reversed gradient grew the class token's norm, and the room
    # classifiers' cross-entropy with it, without hiding anything
    torch.manual_seed(0)
    head = DomainHead(8, 3)
    tokens = torch.randn(6, 5, 8)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    domains = torch.tensor([0, 1, 2, 0, 1, 2])
    base = head.loss(tokens, labels, domains, lam=1.0)
    for scale in (10.0, 1000.0):
        torch.testing.assert_close(head.loss(tokens * scale, labels, domains, lam=1.0), base, rtol=1e-4, atol=1e-4)


def test_token_tap_sees_the_tower_output_and_detaches():
    import models

    model = models.create_model("test-tiny").eval()
    tap = TokenTap(model)
    cfg = model.config.vision
    with torch.no_grad():
        model(torch.randn(2, 3, cfg.image_size, cfg.image_size))
    assert tap.tokens.shape == (2, cfg.num_tokens, cfg.width)
    tap.close()
    tap.tokens = None
    with torch.no_grad():
        model(torch.randn(1, 3, cfg.image_size, cfg.image_size))
    assert tap.tokens is None


def test_trainer_runs_both_objectives_and_resumes_their_state(tmp_path, capsys):
    manifest = _make_manifest(tmp_path)
    one_source = ["--config", "test-tiny", "--manifest", str(manifest), "--out", str(tmp_path / "bad"), "--epochs",
                  "1", "--steps-per-epoch", "2", "--batch-size", "8", "--cache", str(tmp_path / "cache"),
                  "--threads", "1", "--domain-adv", "0.1"]
    assert trainer.main(one_source) == 2
    assert "at least two capture sets" in capsys.readouterr().err
    # two capture sets: groups 1 and 3 become another source
    lines = manifest.read_text().splitlines()
    lines = [ln.replace(",synth,synth-1", ",synthb,synth-1").replace(",synth,synth-3", ",synthb,synth-3")
             for ln in lines]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    args = ["--config", "test-tiny", "--manifest", str(manifest), "--out", str(out), "--epochs", "1",
            "--steps-per-epoch", "3", "--batch-size", "8", "--cache", str(tmp_path / "cache"), "--threads", "1",
            "--aux-spectrum", "1", "--domain-adv", "0.1"]
    assert trainer.main(args) == 0
    st = torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("spectrum.") for k in st["aux"]) and any(k.startswith("domain.") for k in st["aux"])
    # the heads are not part of the exported model
    import models

    ckpt = models.load_checkpoint(out / "last.safetensors")
    assert not any("spectrum" in k or "domain" in k for k in ckpt.model.state_dict())
    args_json = json.loads((out / "args.json").read_text())
    args_json["argv"][args_json["argv"].index("--epochs") + 1] = "2"
    (out / "args.json").write_text(json.dumps(args_json))
    assert trainer.main(["--resume", str(out)]) == 0
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
