"""Per-track smoothing: EMA over time, hysteresis, minimum evidence, quality gate; scripted sequences."""
import math

import numpy as np
import pytest

from liveness_app.smoothing import SmoothingParams, TrackSmoother


def run(params, seq):
    """Feed (t, score[, quality_ok]) tuples; return the verdict after each."""
    s = TrackSmoother(params)
    return [s.update(x[1], x[0], x[2] if len(x) > 2 else True).verdict for x in seq]


def test_ema_weights_time_not_frames():
    p = SmoothingParams(threshold=0.5, ema_tau_s=0.5, min_evidence_frames=1, min_evidence_s=0.0)
    values = {}
    for fps in (10, 60):
        s = TrackSmoother(p)
        s.update(0.0, 0.0)
        for i in range(1, fps + 1):  # a step to 1.0 held for exactly one second
            st = s.update(1.0, i / fps)
        values[fps] = st.smoothed
    expected = 1.0 - math.exp(-1.0 / 0.5)
    assert values[10] == pytest.approx(expected) and values[60] == pytest.approx(expected)


def test_scripted_transitions_are_exact():
    # tau=0: the estimate equals the latest score, so the script below is the verdict logic itself
    p = SmoothingParams(threshold=0.5, hysteresis=0.1, ema_tau_s=0.0, min_evidence_frames=3, min_evidence_s=0.2)
    seq = [(0.0, 0.9), (0.1, 0.9), (0.2, 0.9),  # 3 frames spanning 0.2 s: first verdict at the 3rd
           (0.3, 0.55), (0.4, 0.45),            # inside the band: stays attack
           (0.5, 0.39),                         # below 0.4: live
           (0.6, 0.59), (0.7, 0.5),             # below 0.6: stays live
           (0.8, 0.6),                          # reaches 0.6: attack
           (0.9, 0.41)]                         # not below 0.4: stays attack
    assert run(p, seq) == ["uncertain", "uncertain", "attack", "attack", "attack", "live", "live", "live",
                           "attack", "attack"]


def test_first_verdict_is_decided_at_the_threshold_itself():
    p = SmoothingParams(threshold=0.5, hysteresis=0.1, ema_tau_s=0.0, min_evidence_frames=1, min_evidence_s=0.0)
    assert run(p, [(0.0, 0.52)]) == ["attack"]
    assert run(p, [(0.0, 0.48)]) == ["live"]


def test_minimum_evidence_needs_frames_and_seconds():
    p = SmoothingParams(ema_tau_s=0.0, min_evidence_frames=3, min_evidence_s=1.0)
    fast = [(i * 0.01, 0.1) for i in range(50)]  # 50 frames in 0.49 s: not enough time
    assert set(run(p, fast)) == {"uncertain"}
    slow = [(0.0, 0.1), (1.0, 0.1), (2.0, 0.1)]  # enough time after the 2nd, enough frames at the 3rd
    assert run(p, slow) == ["uncertain", "uncertain", "live"]


def test_quality_gate_ignores_bad_observations():
    p = SmoothingParams(ema_tau_s=0.3, min_evidence_frames=2, min_evidence_s=0.0)
    s = TrackSmoother(p)
    for i in range(10):
        st = s.update(0.99, i * 0.1, quality_ok=False)
    assert (st.smoothed, st.verdict, st.evidence) == (None, "uncertain", 0)
    s.update(0.1, 1.0)
    st = s.update(0.1, 1.1)
    assert st.verdict == "live" and st.evidence == 2
    st = s.update(0.99, 1.2, quality_ok=False)  # a blurred attack-looking frame changes nothing
    assert st.smoothed == pytest.approx(0.1) and st.verdict == "live"
    assert s.update(None, 1.3).smoothed == pytest.approx(0.1)  # unscored frame: no evidence either


def count_changes(verdicts):
    return sum(a != b for a, b in zip(verdicts, verdicts[1:]))


def test_hysteresis_does_not_flicker_on_a_score_hovering_at_the_threshold():
    rng = np.random.default_rng(1)
    seq = [(i / 30, 0.5 + rng.uniform(-0.04, 0.04)) for i in range(600)]  # 20 s at 30 fps around 0.5
    with_h = run(SmoothingParams(threshold=0.5, hysteresis=0.05, ema_tau_s=0.0), seq)
    assert count_changes(with_h) == 1  # uncertain -> one verdict, then never changes
    # the same sequence without hysteresis flickers: the test above could fail
    without = run(SmoothingParams(threshold=0.5, hysteresis=0.0, ema_tau_s=0.0), seq)
    assert count_changes(without) > 50


def test_new_params_apply_immediately():
    p = SmoothingParams(threshold=0.5, hysteresis=0.05, ema_tau_s=0.0, min_evidence_frames=1, min_evidence_s=0.0)
    s = TrackSmoother(p)
    assert s.update(0.3, 0.0).verdict == "live"
    st = s.set_params(p.replace(threshold=0.2))
    assert st.verdict == "attack" and st.changed
    assert s.update(0.3, 0.1).verdict == "attack"
    assert p.replace(threshold=0.98, hysteresis=0.05).enter_attack == 1.0  # band edges stay in [0, 1]
