"""Per-track temporal smoothing of P(attack): EMA over time, hysteresis, minimum evidence, quality gate.

Pure and deterministic: time is an argument, so tests replay exact sequences. One ``TrackSmoother`` per track:

- EMA over *time*: an observation at gap dt gets weight alpha = 1 - exp(-dt / tau), so a 60 fps camera and a
  10 fps one converge at the same speed in seconds.
- Minimum evidence: the verdict stays "uncertain" until ``min_evidence_frames`` observations that passed the
  quality gate have been counted *and* they span at least ``min_evidence_s`` seconds.
- Hysteresis: the first verdict is "attack" when the estimate is >= the threshold, else "live"; afterwards
  "live" turns "attack" only at >= threshold + hysteresis, and "attack" turns "live" only below
  threshold - hysteresis, so a score hovering at the threshold never flickers.
- Quality gate: observations flagged not ok (tiny, blurred, cut-off faces) are ignored entirely.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .config import AppConfig
from .types import Verdict


@dataclass(frozen=True)
class SmoothingParams:
    """Constants of the smoother; defaults and meaning: the fields of the same name in ``config.AppConfig``
    (``threshold`` there defaults to the model's; 0.5 here is the plain midpoint)."""

    threshold: float = 0.5
    hysteresis: float = AppConfig.hysteresis
    ema_tau_s: float = AppConfig.ema_tau_s
    min_evidence_frames: int = AppConfig.min_evidence_frames
    min_evidence_s: float = AppConfig.min_evidence_s

    @property
    def enter_attack(self) -> float:
        return min(1.0, self.threshold + self.hysteresis)

    @property
    def leave_attack(self) -> float:
        return max(0.0, self.threshold - self.hysteresis)

    def replace(self, **changes: float) -> "SmoothingParams":
        return replace(self, **changes)


@dataclass(frozen=True)
class SmoothState:
    """The smoother's output after an update: estimate (None before evidence), verdict, evidence so far."""

    smoothed: float | None
    verdict: Verdict
    evidence: int
    changed: bool = False  # verdict differs from the previous update's


class TrackSmoother:
    """Smooths one track's raw scores into a verdict; ``update(score, t, quality_ok)`` once per frame."""

    def __init__(self, params: SmoothingParams):
        self.params = params
        self.value: float | None = None
        self.verdict: Verdict = "uncertain"
        self.evidence = 0
        self.first_t: float | None = None
        self.last_t: float | None = None

    def update(self, score: float | None, t: float, quality_ok: bool = True) -> SmoothState:
        """Feed this frame's raw P(attack) (None: not scored) at time ``t`` seconds; return the new state."""
        if score is not None and quality_ok and math.isfinite(score):
            score = min(max(float(score), 0.0), 1.0)
            if self.value is None or self.last_t is None:
                self.value = score
                self.first_t = t
            else:
                dt = max(t - self.last_t, 0.0)
                tau = self.params.ema_tau_s
                alpha = 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)
                self.value += alpha * (score - self.value)
            self.last_t = t
            self.evidence += 1
        return self._decide()

    def _decide(self) -> SmoothState:
        p = self.params
        previous = self.verdict
        enough = (self.value is not None and self.first_t is not None and self.last_t is not None
                  and self.evidence >= p.min_evidence_frames and self.last_t - self.first_t >= p.min_evidence_s)
        if enough:
            v = self.value
            if self.verdict == "uncertain":
                self.verdict = "attack" if v >= p.threshold else "live"
            elif self.verdict == "live" and v >= p.enter_attack:
                self.verdict = "attack"
            elif self.verdict == "attack" and v < p.leave_attack:
                self.verdict = "live"
        return SmoothState(self.value, self.verdict, self.evidence, self.verdict != previous)

    def set_params(self, params: SmoothingParams) -> SmoothState:
        """Apply new constants now (e.g. a threshold moved in the UI); the verdict is re-decided at once.

        A verdict already given is re-decided from scratch against the new threshold, so moving the threshold
        takes effect immediately rather than waiting for the estimate to cross a hysteresis edge.
        """
        self.params = params
        before = self.verdict
        self.verdict = "uncertain"
        state = self._decide()
        return replace(state, changed=state.verdict != before)

    def reset(self) -> None:
        self.value, self.verdict, self.evidence, self.first_t, self.last_t = None, "uncertain", 0, None, None
