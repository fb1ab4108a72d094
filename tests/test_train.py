"""The trainer: loss falls, a run writes checkpoints that reload with the same predictions, and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from models import data as fdata
from models import train as trainer


def _portrait() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return img  # BGR


def _make_manifest(root: Path, n_per_group: int = 6, groups: int = 4) -> Path:
    """Live crops = shifted windows of a real portrait; attacks = the same windows as a coarse halftone print."""
    img = _portrait()
    h, w = img.shape[:2]
    rng = np.random.default_rng(0)
    rows = ["path,label,attack_type,source,group"]
    for g in range(groups):
        for i in range(n_per_group):
            side = int(min(h, w) * rng.uniform(0.6, 0.9))
            y, x = rng.integers(0, h - side), rng.integers(0, w - side)
            crop = cv2.resize(img[y:y + side, x:x + side], (160, 160), interpolation=cv2.INTER_AREA)
            for label in (0, 1):
                out = crop
                if label:
                    yy, xx = np.mgrid[0:160, 0:160]
                    dots = (np.sin(xx * 1.3) * np.sin(yy * 1.3) > 0).astype(np.float32)[..., None]
                    out = np.clip(crop * (0.55 + 0.45 * dots) + 30, 0, 255).astype(np.uint8)
                name = f"g{g}_{i}_{label}.jpg"
                cv2.imwrite(str(root / name), out)
                rows.append(f"{name},{label},{'print' if label else 'none'},synth,synth-{g}")
    path = root / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = models.create_model("test-tiny").train()
    for block in model.visual.transformer.resblocks:
        if block.moe is not None:
            torch.nn.init.constant_(block.moe.gate, 0.1)
    x = torch.randn(16, 3, 32, 32)
    y = torch.tensor([0, 1] * 8)
    opt = trainer.make_optimizer(model, 1e-3, 1e-3, 0.0)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_lr_schedule_warms_up_then_decays():
    f = trainer.lr_lambda(total=100, warmup=10)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-9)


def test_cli_run_checkpoints_reload_and_resume(tmp_path):
    manifest = _make_manifest(tmp_path)
    out = tmp_path / "run"
    args = ["--config", "test-tiny", "--manifest", str(manifest), "--out", str(out), "--epochs", "2",
            "--steps-per-epoch", "6", "--batch-size", "8", "--cache", str(tmp_path / "cache"), "--seed", "3",
            "--threads", "1"]
    assert trainer.main(args) == 0
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "val_manifest.csv", "train.log"):
        assert (out / name).is_file(), name
    # the stored threshold is the validation EER threshold of the epoch that was saved
    last = models.load_checkpoint(out / "last.safetensors")
    assert last.threshold == pytest.approx(hist[-1]["threshold"])
    assert last.data_card["split"] == "group" and "terms" in last.data_card
    # validation split is group-held-out and re-readable
    val = fdata.read_manifest(out / "val_manifest.csv")
    train = fdata.read_manifest(out / "train_manifest.csv")
    assert val and train and not ({s.group for s in val} & {s.group for s in train})
    # reloaded weights give the predictions the trainer's validation gave
    x = models.preprocess([cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB) for s in val[:4]],
                          last.preprocessing)
    with torch.no_grad():
        p1 = last.model.predict_proba(x)
        p2 = models.load_checkpoint(out / "last.safetensors").model.scorer()(x)
    torch.testing.assert_close(p1, p2)
    # resume: continues at epoch 3 of a longer run, without starting over
    args_json = json.loads((out / "args.json").read_text())
    args_json["argv"][args_json["argv"].index("--epochs") + 1] = "3"
    (out / "args.json").write_text(json.dumps(args_json))
    assert trainer.main(["--resume", str(out)]) == 0
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert trainer.main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
