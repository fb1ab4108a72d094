"""scripts/ship_check.py: the shipping rule's arithmetic on scores whose answers are known by construction."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ship_check", ROOT / "scripts" / "ship_check.py")
ship_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ship_check)


def test_bpcer_threshold_holds_the_target_and_is_the_lowest_that_does():
    live = np.array([0.1, 0.2, 0.3, 0.9, 0.95] + [0.05] * 95)  # 100 live crops, two high scores
    t = ship_check.bpcer_threshold(live, 0.01)  # at most 1 of 100 may be called attack
    assert np.sum(live >= t) == 1
    assert np.sum(live >= np.nextafter(t, -np.inf)) == 2  # any lower threshold calls a second one attack
    assert np.sum(live >= ship_check.bpcer_threshold(live, 0.0)) == 0


def test_calibration_half_takes_alternate_sorted_live_web_crops_only():
    cols = {"path": np.array(["w/d", "w/a", "r/x", "w/c", "w/b", "w/e"]),
            "label": np.array([0, 0, 1, 0, 0, 0]), "source": np.array(["web", "web", "room", "web", "web", "web"]),
            "score": np.zeros(6)}
    half = ship_check.calibration_half(cols, "web")
    assert sorted(cols["path"][half]) == ["w/a", "w/c", "w/e"]


def _write(path: Path, rows: list[tuple[str, float, int, str]]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "label", "attack_type", "source", "group"])
        for p, s, y, src in rows:
            w.writerow([p, s, y, "none" if y == 0 else "replay", src, src])
    return str(path)


def _pair(tmp_path: Path, cand_attack_low: float) -> tuple[str, str]:
    """An incumbent whose room scores overlap (AUC < 1) and a candidate that separates the room, with its attacks
    in [cand_attack_low, cand_attack_low + 0.2), but scores 30 of 100 web photos at 0.7."""
    rng = np.random.default_rng(0)
    rows_i, rows_c = [], []
    for i in range(200):
        y = i % 2
        rows_i.append((f"room/{i:03d}", float(0.3 * y + 0.3 + 0.4 * rng.random()), y, "room"))
        rows_c.append((rows_i[-1][0], float((cand_attack_low if y else 0.1) + 0.2 * rng.random()), y, "room"))
    for i in range(100):
        rows_i.append((f"web/{i:03d}", 0.1, 0, "web"))
        rows_c.append((f"web/{i:03d}", 0.7 if i < 30 else 0.1, 0, "web"))
    return _write(tmp_path / "i.csv", rows_i), _write(tmp_path / "c.csv", rows_c)


def test_raised_threshold_passes_the_web_photos_when_the_attacks_stay_caught(tmp_path, capsys):
    inc, cand = _pair(tmp_path, cand_attack_low=0.75)
    base = ["--incumbent", f"inc={inc}:0.6", "--rooms", "room", "--web-photos", "web",
            "--candidate", f"cand={cand}:0.5"]
    assert ship_check.main(base) == 1  # at its own 0.5 the candidate calls 30 % of the web photos attack
    assert "FAIL  web BPCER" in capsys.readouterr().out
    assert ship_check.main(base + ["--calibrate-web-bpcer", "0.01"]) == 0  # lifted above 0.7; attacks >= 0.75
    out = capsys.readouterr().out
    assert "PASS  web BPCER" in out and "PASS  ACER at each model's threshold no higher" in out


def test_acer_criterion_fails_a_threshold_that_buys_web_photos_with_missed_attacks(tmp_path, capsys):
    inc, cand = _pair(tmp_path, cand_attack_low=0.6)  # half the candidate's attacks lie below 0.7
    args = ["--incumbent", f"inc={inc}:0.6", "--rooms", "room", "--web-photos", "web",
            "--candidate", f"cand={cand}:0.5", "--calibrate-web-bpcer", "0.01"]
    assert ship_check.main(args) == 1
    out = capsys.readouterr().out
    assert "PASS  web BPCER" in out and "FAIL  ACER at each model's threshold no higher" in out
