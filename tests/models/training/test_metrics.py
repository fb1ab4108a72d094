"""models.training.metrics: hand-computed cases (numbers worked out by hand in the comments), ties, sklearn agreement."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.training import metrics as M

# Case A: live 0.1 0.2 0.3 0.4, attacks 0.35 0.6 0.7 0.8
A_Y = [0, 0, 0, 0, 1, 1, 1, 1]
A_S = [0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8]


def test_hand_case_rates_at_threshold():
    r = M.apcer_bpcer(A_Y, A_S, 0.5)
    # attacks below 0.5: {0.35} -> 1/4; live at or above 0.5: none -> 0; ACER = (0.25 + 0) / 2
    assert r["apcer"] == 0.25 and r["bpcer"] == 0.0 and r["acer"] == 0.125
    assert (r["n_live"], r["n_attack"]) == (4, 4)
    # score == threshold counts as attack: at 0.4 the live 0.4 is a false attack and 0.35 a missed attack
    r = M.apcer_bpcer(A_Y, A_S, 0.4)
    assert r["apcer"] == 0.25 and r["bpcer"] == 0.25


def test_hand_case_eer_auc_bpcer_at_apcer():
    # threshold 0.4: APCER 1/4 (0.35 missed), BPCER 1/4 (0.4 flagged): equal -> EER 0.25; any threshold in
    # (0.35, 0.4] gives it, the midpoint 0.375 is returned
    e, t = M.eer(A_Y, A_S)
    assert e == pytest.approx(0.25) and t == pytest.approx(0.375)
    # 16 pairs; 0.35 beats 3 live and loses to 0.4; the other 3 attacks beat all 4 -> 15 / 16
    assert M.auc(A_Y, A_S) == pytest.approx(15 / 16)
    # APCER <= 1 % (and 5 %) with 4 attacks means APCER 0: highest such threshold 0.35 -> live >= 0.35: {0.4}
    assert M.bpcer_at_apcer(A_Y, A_S, 0.01) == pytest.approx(0.25)
    assert M.bpcer_at_apcer(A_Y, A_S, 0.05) == pytest.approx(0.25)
    # APCER <= 25 % allows threshold 0.6 (midpoint to 0.4: 0.5) -> BPCER 0
    assert M.bpcer_at_apcer(A_Y, A_S, 0.25) == 0.0
    assert M.threshold_at_apcer(A_Y, A_S, 0.25) == pytest.approx(0.5)


def test_ties_cannot_be_split():
    # live 0.2 0.5 0.5, attacks 0.5 0.5 0.9. Operating points (threshold: APCER, BPCER):
    # inf: 1, 0 | 0.9: 2/3, 0 | 0.5: 0, 2/3 | 0.2: 0, 1. Nothing separates the four 0.5s.
    y, s = [0, 0, 0, 1, 1, 1], [0.2, 0.5, 0.5, 0.5, 0.5, 0.9]
    fpr, tpr, thr = M.roc_curve(y, s)
    assert thr.tolist() == [np.inf, 0.9, 0.5, 0.2]
    np.testing.assert_allclose(fpr, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1, 1])
    # AUC: 0.9 beats 3 live (3); each 0.5 attack beats 0.2 (1) and ties two 0.5s (2 x 1/2) -> 2 each; 7 / 9
    assert M.auc(y, s) == pytest.approx(7 / 9)
    # |APCER - BPCER| is 2/3 at both 0.9 and 0.5 with the same mean 1/3: the lower threshold wins (fewer
    # missed attacks); halfway from 0.5 to the next lower score 0.2 -> 0.35
    e, t = M.eer(y, s)
    assert e == pytest.approx(1 / 3) and t == pytest.approx(0.35)
    r = M.apcer_bpcer(y, s, 0.5)
    assert r["apcer"] == 0.0 and r["bpcer"] == pytest.approx(2 / 3)


def test_eer_known_cases():
    # separable: 0 error, threshold between the top live (0.3) and the bottom attack (0.7)
    assert M.eer([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9]) == (0.0, pytest.approx(0.5))
    # inverted: every threshold errs on one side fully or both; the equal point is APCER = BPCER = 1
    assert M.eer([1, 1, 0, 0], [0.1, 0.3, 0.7, 0.9])[0] == 1.0
    # uninformative constant score: 0.5
    assert M.eer([0, 1, 0, 1], [0.4] * 4)[0] == 0.5
    # a continuous case: live ~ U(0, 0.6), attacks ~ U(0.4, 1) on a fine grid -> the distributions overlap on
    # (0.4, 0.6), the EER threshold is 0.5 and EER = 0.1 / 0.6 = 1/6
    live = np.linspace(0, 0.6, 6001)[:-1] + 5e-5
    att = np.linspace(0.4, 1.0, 6001)[:-1] + 5e-5
    e, t = M.eer(np.r_[np.zeros(6000), np.ones(6000)], np.r_[live, att])
    assert e == pytest.approx(1 / 6, abs=2e-4) and t == pytest.approx(0.5, abs=2e-4)


def test_report_per_source_and_type_hand_case():
    y = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    s = [0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8, 0.9, 0.05]
    src = ["mixed"] * 6 + ["attack_only"] * 2 + ["live_only"] * 2
    at = ["none"] * 4 + ["print", "print", "replay", "replay", "none", "none"]
    r = M.report(y, s, 0.5, sources=src, attack_types=at)
    json.dumps(r, allow_nan=False)  # JSON-ready: no NaN, no numpy types
    p = r["pooled"]
    # live 0.1 0.2 0.3 0.4 0.9 0.05 -> 0.9 flagged: BPCER 1/6; attacks: 0.35 missed: APCER 1/4; ACER 5/24
    assert (p["n"], p["n_live"], p["n_attack"]) == (10, 6, 4)
    assert p["apcer"] == 0.25 and p["bpcer"] == pytest.approx(1 / 6) and p["acer"] == pytest.approx(5 / 24)
    # per type: print 0.35 0.6 -> 1/2, replay 0.7 0.8 -> 0; worst print; ACER_worst (1/2 + 1/6) / 2 = 1/3
    assert p["apcer_per_type"] == {"print": 0.5, "replay": 0.0}
    assert p["apcer_max"] == 0.5 and p["apcer_max_type"] == "print"
    assert p["acer_worst"] == pytest.approx(1 / 3)
    # AUC: 24 pairs; 0.35 beats 0.1 0.2 0.3 0.05 (4), 0.6 0.7 0.8 beat all but 0.9 (5 each) -> 19/24
    assert p["auc"] == pytest.approx(19 / 24)
    assert set(r["per_source"]) == {"mixed", "attack_only", "live_only"}
    m = r["per_source"]["mixed"]  # live 0.1..0.4, attacks 0.35 0.6: APCER 1/2, BPCER 0, AUC (3 + 4) / 8
    assert (m["n_live"], m["n_attack"]) == (4, 2)
    assert m["apcer"] == 0.5 and m["bpcer"] == 0.0 and m["acer"] == 0.25 and m["auc"] == pytest.approx(7 / 8)
    lo = r["per_source"]["live_only"]  # 0.9 flagged, 0.05 not: BPCER 1/2; nothing else is defined
    assert lo["bpcer"] == 0.5
    for k in ("apcer", "acer", "eer", "auc", "eer_threshold", "bpcer_at_apcer_1pct", "bpcer_at_apcer_5pct",
              "apcer_max", "acer_worst", "mean_score_attack"):
        assert lo[k] is None, k
    ao = r["per_source"]["attack_only"]
    assert ao["apcer"] == 0.0 and ao["apcer_per_type"] == {"replay": 0.0}
    for k in ("bpcer", "acer", "eer", "auc", "bpcer_at_apcer_1pct", "mean_score_live"):
        assert ao[k] is None, k
    # per attack type: that type's attacks against all 6 live samples
    pr = r["per_attack_type"]["print"]
    assert (pr["n_live"], pr["n_attack"]) == (6, 2)
    assert pr["apcer"] == 0.5 and pr["bpcer"] == pytest.approx(1 / 6)
    assert pr["auc"] == pytest.approx(9 / 12)  # 0.35 beats 4 of 6, 0.6 beats 5 of 6
    assert set(r["per_attack_type"]) == {"print", "replay"}  # "none" is not an attack type


def test_single_class_and_bad_input():
    r = M.report([0, 0], [0.2, 0.7], 0.5, sources=["x", "x"], attack_types=["none", "none"])
    assert r["pooled"]["bpcer"] == 0.5 and r["pooled"]["apcer"] is None and r["per_attack_type"] == {}
    with pytest.raises(ValueError, match="both bona fide"):
        M.eer([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="both bona fide"):
        M.auc([0, 0], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 \\(bona fide\\) or 1"):
        M.apcer_bpcer([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="not finite"):
        M.apcer_bpcer([0, 1], [0.1, np.nan], 0.5)
    with pytest.raises(ValueError, match="same length"):
        M.apcer_bpcer([0, 1, 1], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="one entry per sample"):
        M.report([0, 1], [0.1, 0.2], 0.5, sources=["a"])


def _brute_force(y: np.ndarray, s: np.ndarray):
    """Operating points by a plain loop over candidate thresholds (independent of the vectorised code)."""
    pts = []
    for t in sorted(set(s.tolist()) | {np.inf}, reverse=True):
        apcer = np.mean(s[y == 1] < t)
        bpcer = np.mean(s[y == 0] >= t)
        pts.append((t, apcer, bpcer))
    return pts


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 2), (2, 1), (3, None)])
def test_agrees_with_sklearn_on_random_data(seed, decimals):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 800))
    y = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(int)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    if decimals is not None:
        s = np.round(s, decimals)  # many ties
    assert M.auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    for drop in (False, True):
        fpr, tpr, thr = M.roc_curve(y, s, drop_intermediate=drop)
        fpr2, tpr2, thr2 = sk.roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, fpr2)
        np.testing.assert_allclose(tpr, tpr2)
        np.testing.assert_allclose(thr, thr2)
    # DET = the same points, read as (BPCER, APCER) with thresholds ascending; sklearn's det_curve is a sub-range
    bp, ap, dthr = M.det_curve(y, s)
    assert np.all(np.diff(dthr) > 0) and np.all(np.diff(bp) <= 0) and np.all(np.diff(ap) >= 0)
    skf, skn, skt = sk.det_curve(y, s)
    idx = np.searchsorted(dthr, skt)
    np.testing.assert_allclose(bp[idx], skf)
    np.testing.assert_allclose(ap[idx], skn)
    # EER and BPCER @ APCER against a brute-force loop
    pts = _brute_force(y, s)
    gap = min(abs(a - b) for _, a, b in pts)
    e, t = M.eer(y, s)
    cand = [(a + b) / 2 for _, a, b in pts if abs(abs(a - b) - gap) < 1e-12]
    assert e == pytest.approx(min(cand))
    r = M.apcer_bpcer(y, s, t)  # the returned threshold reproduces the EER point
    assert abs(r["apcer"] - r["bpcer"]) == pytest.approx(gap) and r["acer"] == pytest.approx(e)
    for target in M.TARGETS:
        want = min(b for _, a, b in pts if a <= target)
        assert M.bpcer_at_apcer(y, s, target) == pytest.approx(want)
        r = M.apcer_bpcer(y, s, M.threshold_at_apcer(y, s, target))
        assert r["apcer"] <= target and r["bpcer"] == pytest.approx(want)


def test_probit_matches_the_normal_quantile():
    from statistics import NormalDist

    p = np.array([1e-4, 0.001, 0.01, 0.02425, 0.1, 0.3, 0.5, 0.77, 0.97575, 0.99, 0.9999])
    want = [NormalDist().inv_cdf(x) for x in p]
    np.testing.assert_allclose(M.probit(p), want, atol=1e-6)
