"""scripts/sharpness_probe.py: views, sharpness and the per-group table on a tiny model and synthetic crops."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sharpness_probe", ROOT / "scripts" / "sharpness_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def _texture(seed: int, blur: float) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), blur)


def test_views_soften_and_sharpen_and_are_the_same_every_time():
    crop = _texture(0, 1.0)
    v = probe.views(crop)
    assert list(v) == list(probe.VIEWS) and v["as is"] is crop
    assert probe.sharpness(v["half resolution"]) < probe.sharpness(crop) < probe.sharpness(v["sharpened"])
    again = probe.views(crop)
    assert all(np.array_equal(v[k], again[k]) for k in v)


def test_probe_reports_every_source_and_label_with_each_models_views(tmp_path: Path, tiny_checkpoint: Path,
                                                                     capsys: pytest.CaptureFixture):
    rows = []
    for i in range(6):
        for source, blur in (("sharp-room", 0.6), ("soft-room", 3.0)):
            name = f"{source}-{i}.jpg"
            cv2.imwrite(str(tmp_path / name), _texture(i, blur))
            rows.append((name, i % 2, "none" if i % 2 == 0 else "replay", source, source))
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "attack_type", "source", "group"), *rows])
    out = probe.probe(manifest, [("a", tiny_checkpoint), ("b", tiny_checkpoint)], per_group=2)
    assert [(r["source"], r["label"], r["n"]) for r in out] == [
        ("sharp-room", 0, 2), ("sharp-room", 1, 2), ("soft-room", 0, 2), ("soft-room", 1, 2)]
    by = {(r["source"], r["label"]): r for r in out}
    assert by[("sharp-room", 0)]["sharpness"] > 5 * by[("soft-room", 0)]["sharpness"]
    for r in out:
        for view in probe.VIEWS:
            assert 0.0 <= r[f"a {view}"] <= 1.0 and r[f"a {view}"] == r[f"b {view}"]  # the same weights
    assert probe.main(["--manifest", str(manifest), "--model", f"a={tiny_checkpoint}", "--per-group", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| source | label | crops | sharpness | a as is |") and len(lines) == 2 + 4
    with pytest.raises(SystemExit):
        probe.main(["--manifest", str(manifest), "--model", "no-path"])
