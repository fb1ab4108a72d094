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
from models.training import data as fdata
from models.training import train as trainer


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
    x = torch.from_numpy(models.preprocess([cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB)
                                            for s in val[:4]], last.preprocessing))
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


def test_split_seed_keeps_the_validation_split_while_the_training_seed_changes(tmp_path):
    manifest = _make_manifest(tmp_path, n_per_group=2, groups=6)
    vals = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        assert trainer.main(["--config", "test-tiny", "--manifest", str(manifest), "--out", str(out), "--epochs",
                             "1", "--steps-per-epoch", "1", "--batch-size", "4", "--cache", str(tmp_path / "cache"),
                             "--seed", str(seed), "--split-seed", "5", "--val-fraction", "0.3", "--threads", "1"]) == 0
        vals.append(sorted(s.path.name for s in fdata.read_manifest(out / "val_manifest.csv")))
    _, expected = fdata.group_split(fdata.read_manifest(manifest), 0.3, 5)
    assert vals[0] == vals[1] == sorted(s.path.name for s in expected)


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert trainer.main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_hold_out_sources_keeps_whole_sources_and_families_apart(tmp_path):
    from models.training.data import Sample, hold_out_sources

    rows = [Sample(tmp_path / f"{src}-{i}.jpg", i % 2, "none" if i % 2 == 0 else "replay", src, f"{src}-g{i % 3}")
            for src in ("cvzc-a", "cvzc-b", "pyis-x", "nuaa") for i in range(6)]
    train, val = hold_out_sources(rows, ["cvzc", "pyis-x"])
    assert {s.source for s in val} == {"cvzc-a", "cvzc-b", "pyis-x"} and {s.source for s in train} == {"nuaa"}
    assert len(train) + len(val) == len(rows)
    with pytest.raises(ValueError, match="no samples of source 'lfw'"):
        hold_out_sources(rows, ["nuaa", "lfw"])


def test_border_mix_partner_is_same_label_other_source():
    import random

    from models.training.train import CropDataset

    images = np.stack([np.full((16, 16, 3), v, np.uint8) for v in range(8)])
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    sources = ["a", "a", "a", "a", "b", "b", "b", "b"]
    seen = []

    def transform(img, label, partner=None):
        seen.append((int(img[0, 0, 0]), label, None if partner is None else int(partner[0, 0, 0])))
        return img, label

    ds = CropDataset(images, labels, transform, models.Preprocessing(16, (0, 0, 0), (1, 1, 1)), sources=sources)
    random.seed(0)
    for i in range(len(ds)):
        for _ in range(5):
            ds[i]
    for idx, label, partner in seen:
        if partner is not None:
            assert labels[partner] == label and sources[partner] != sources[idx]
    assert sum(p is not None for _, _, p in seen) > 0.8 * len(seen)


def test_missing_stem_weights_is_a_clear_error(tmp_path, capsys):
    rc = trainer.main(["--config", "ViT-Ti-16-128-mnv2", "--stem-weights", str(tmp_path / "none.safetensors"),
                       "--out", str(tmp_path / "run"), "--epochs", "1", "--steps-per-epoch", "1"])
    assert rc == 2
    assert "--stem-weights" in capsys.readouterr().err


def test_group_dro_weights_the_worst_group_and_reduces_to_the_mean():
    losses = torch.tensor([0.1, 0.1, 2.0, 2.0], requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1])
    plain = trainer.GroupDRO(2, eta=0.0)(losses, groups)
    assert torch.isclose(plain, losses.mean())
    dro = trainer.GroupDRO(2, eta=3.0)
    weighted = dro(losses, groups)
    assert weighted > losses.mean() + 0.5  # the hard group dominates
    weighted.backward()
    assert losses.grad[2] > 10 * losses.grad[0]
    # running losses persist across batches (and through a checkpoint of the trainer state)
    st = dro.state_dict()
    dro2 = trainer.GroupDRO(2, eta=3.0)
    dro2.load_state_dict(st)
    only_easy = dro2(torch.tensor([0.1, 0.1]), torch.tensor([0, 0]))
    assert torch.isclose(only_easy, torch.tensor(0.1))
    assert torch.allclose(dro2.running, st["running"])


def test_open_moe_sets_every_gate_and_router_scale():
    torch.manual_seed(0)
    model = models.create_model("test-tiny")
    trainer.open_moe(model, 0.3, 7.0)
    moes = [b.moe for b in model.visual.transformer.resblocks if b.moe is not None]
    assert moes and all(m.gate.item() == pytest.approx(0.3) and m.scale.item() == pytest.approx(7.0) for m in moes)
    trainer.open_moe(model, None, None)  # None leaves them
    assert all(m.gate.item() == pytest.approx(0.3) for m in moes)


def test_split_all_trains_on_every_crop_and_keeps_each_epoch(tmp_path):
    manifest = _make_manifest(tmp_path, n_per_group=2, groups=6)
    out = tmp_path / "all"
    assert trainer.main(["--config", "test-tiny", "--manifest", str(manifest), "--out", str(out), "--epochs", "2",
                         "--steps-per-epoch", "1", "--batch-size", "4", "--cache", str(tmp_path / "cache"),
                         "--split", "all", "--val-fraction", "0.3", "--keep-epochs", "--threads", "1"]) == 0
    every = sorted(s.path.name for s in fdata.read_manifest(manifest))
    assert sorted(s.path.name for s in fdata.read_manifest(out / "train_manifest.csv")) == every
    # the monitor crops are the group split's validation crops, all of them inside the training set
    _, expected = fdata.group_split(fdata.read_manifest(manifest), 0.3, 0)
    val = sorted(s.path.name for s in fdata.read_manifest(out / "val_manifest.csv"))
    assert val == sorted(s.path.name for s in expected) and set(val) <= set(every)
    assert "not held out" in (out / "train.log").read_text()
    for epoch in (1, 2):
        ck = models.load_checkpoint(out / f"epoch_{epoch}.safetensors")
        assert ck.data_card["split"] == "all" and ck.data_card["epoch"] == epoch
    torch.testing.assert_close(models.load_checkpoint(out / "epoch_2.safetensors").model.state_dict(),
                               models.load_checkpoint(out / "last.safetensors").model.state_dict())


def test_unknown_split_is_a_clear_error(tmp_path):
    manifest = _make_manifest(tmp_path)
    with pytest.raises(SystemExit, match="'all'"):
        trainer.main(["--config", "test-tiny", "--manifest", str(manifest), "--out", str(tmp_path / "x"),
                      "--split", "everything", "--threads", "1"])


def _sharpness_room(n: int = 200, seed: int = 0) -> tuple[list[fdata.Sample], np.ndarray]:
    """One webcam-like source whose attacks are the blurrier crops (log-sharpness live ~ N(5, 0.5), attack
    ~ N(4, 0.5)), plus a live-only web source."""
    rng = np.random.default_rng(seed)
    samples, sharp = [], []
    for label, mu in ((0, 5.0), (1, 4.0)):
        for i in range(n):
            samples.append(fdata.Sample(Path(f"room_{label}_{i}.jpg"), label, "replay" if label else "none",
                                        "room", "room"))
            sharp.append(np.expm1(rng.normal(mu, 0.5)))
    for i in range(50):
        samples.append(fdata.Sample(Path(f"web_{i}.jpg"), 0, "none", "web", "web"))
        sharp.append(np.expm1(rng.normal(6.0, 0.5)))
    return samples, np.array(sharp)


def test_sharpness_matching_equalises_the_classes_within_a_source_and_keeps_the_balance():
    samples, sharp = _sharpness_room()
    base = fdata.balanced_weights(samples, 0.7)
    w, report = fdata.sharpness_matched_weights(base, samples, sharp, bins=8)
    assert w.shape == base.shape and w.sum() == pytest.approx(1.0) and (w > 0).all()
    assert set(report) == {"room"}  # the live-only source has nothing to match
    room = report["room"]
    gap = lambda r: abs(np.log(r["median_live"] / r["median_attack"]))  # noqa: E731
    assert gap(room["before"]) > 0.8 and gap(room["after"]) < 0.15 and room["after"]["ess"] < room["before"]["ess"]
    # every (source, label) cell keeps its share, so the class and source balance of balanced_weights is unchanged
    for src, label in (("room", 0), ("room", 1), ("web", 0)):
        m = np.array([s.source == src and s.label == label for s in samples])
        assert w[m].sum() == pytest.approx(base[m].sum())
    web = np.array([s.source == "web" for s in samples])
    np.testing.assert_allclose(w[web], base[web])
    # the sharpest lives and the blurriest attacks (no partner of the other class) are drawn less, not never
    live = np.flatnonzero(np.array([s.label == 0 and s.source == "room" for s in samples]))
    sharpest = live[np.argmax(sharp[live])]
    assert 0 < w[sharpest] < base[sharpest] / 5


def test_sharpness_matching_rejects_bad_arguments():
    samples, sharp = _sharpness_room(n=10)
    base = fdata.balanced_weights(samples)
    with pytest.raises(ValueError, match="bins"):
        fdata.sharpness_matched_weights(base, samples, sharp, bins=1)
    with pytest.raises(ValueError, match="one value per sample"):
        fdata.sharpness_matched_weights(base, samples, sharp[:-1])
    with pytest.raises(ValueError, match="floor"):
        fdata.sharpness_matched_weights(base, samples, sharp, floor=2.0)
    with pytest.raises(ValueError, match="finite"):
        fdata.sharpness_matched_weights(base, samples, np.where(np.arange(len(sharp)) == 0, np.nan, sharp))


def test_cli_sharpness_match_is_logged_and_recorded(tmp_path):
    # both classes span the same range of blur (attacks slightly softer, tinted), so the bins overlap
    img = cv2.resize(_portrait(), (160, 160), interpolation=cv2.INTER_AREA)
    rows = ["path,label,attack_type,source,group"]
    for g in range(4):
        for i in range(4):
            for label in (0, 1):
                sigma = 0.3 + 0.5 * i + 0.4 * label
                out = cv2.GaussianBlur(img, (0, 0), sigma)
                if label:
                    out = np.clip(out * np.array([0.9, 1.0, 1.1]), 0, 255).astype(np.uint8)
                cv2.imwrite(str(tmp_path / f"g{g}_{i}_{label}.jpg"), out)
                rows.append(f"g{g}_{i}_{label}.jpg,{label},{'replay' if label else 'none'},synth,synth-{g}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "sm"
    assert trainer.main(["--config", "test-tiny", "--manifest", str(manifest), "--out", str(out), "--epochs", "1",
                         "--steps-per-epoch", "1", "--batch-size", "4", "--cache", str(tmp_path / "cache"),
                         "--sharpness-match", "4", "--threads", "1"]) == 0
    assert "sharpness matching synth: median live / attack" in (out / "train.log").read_text()
    assert models.load_checkpoint(out / "last.safetensors").data_card["sharpness_match_bins"] == 4
