"""Presentation-attack-detection metrics (ISO/IEC 30107-3), pure numpy.

Conventions (docs/architecture.md "Metrics"): label 1 = attack, 0 = bona fide (live); a score is P(attack); a crop is
classified an attack when ``score >= threshold``.

- APCER: share of attacks classified bona fide (per attack type, the worst type, and pooled over all attacks).
- BPCER: share of bona fide samples classified attacks.
- ACER = (APCER + BPCER) / 2 with the pooled APCER; ``acer_worst`` uses the worst type's APCER (OULU-NPU style).
- EER: the error rate at the threshold where APCER and BPCER are closest (the validation threshold).
- AUC: area under the ROC curve (attacks as positives); tied scores count one half (Mann-Whitney).
- BPCER @ APCER = x: the BPCER at the highest threshold whose APCER is <= x.

Ties: a threshold cannot separate equal scores, so every curve and operating point here is evaluated only at
the distinct score values (and +inf), never between members of a tie. Undefined numbers (APCER without
attacks, BPCER without bona fide samples, EER / AUC without both) are ``None`` in ``report``; the lower-level
functions raise ``ValueError`` instead.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TARGETS = (0.01, 0.05)  # APCER operating points for BPCER @ APCER (1 % and 5 %)


def _check(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels and scores must be 1-D of the same length, got shapes {y.shape} and {s.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][:5]
        raise ValueError(f"labels must be 0 (bona fide) or 1 (attack), got values {bad.tolist()}")
    if not np.isfinite(s).all():
        idx = np.flatnonzero(~np.isfinite(s))
        raise ValueError(f"{idx.size} scores are not finite (first at index {int(idx[0])}: {s[idx[0]]})")
    return y.astype(np.int64), s


def _need_both(y: np.ndarray, what: str) -> None:
    n1 = int(y.sum())
    if n1 == 0 or n1 == y.size:
        raise ValueError(f"{what} needs both bona fide (0) and attack (1) samples, got {y.size - n1} bona fide and "
                         f"{n1} attacks")


def _counts_at_thresholds(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For thresholds at +inf then at each distinct score (descending): how many attacks (tp) and bona fide (fp)
    have ``score >= threshold``. Returns (thresholds, tp, fp), each of length distinct + 1."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores: there the cumulative counts include the whole tie
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    return np.r_[np.inf, s_sorted[last]], np.r_[0, tp], np.r_[0, fp]


def roc_curve(labels: Any, scores: Any, drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC with attacks as positives: (fpr = BPCER, tpr = 1 - APCER, thresholds), thresholds decreasing from +inf.

    Same points and order as ``sklearn.metrics.roc_curve`` (one point per distinct score plus the all-bona-fide
    point at +inf); ``drop_intermediate`` drops collinear points as scikit-learn does.
    """
    y, s = _check(labels, scores)
    _need_both(y, "roc_curve")
    thr, tp, fp = _counts_at_thresholds(y, s)
    if drop_intermediate and tp.size > 3:
        # judged on the finite thresholds only (without the +inf point), as scikit-learn does
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fp[1:], 2), np.diff(tp[1:], 2)), True]) + 1
        keep = np.r_[0, keep]
        thr, tp, fp = thr[keep], tp[keep], fp[keep]
    return fp / fp[-1], tp / tp[-1], thr


def det_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection-error trade-off: (BPCER, APCER, thresholds) at every distinct threshold, thresholds increasing.

    BPCER falls and APCER rises as the threshold rises; plot them on normal-deviate axes (``probit``).
    """
    fpr, tpr, thr = roc_curve(labels, scores)
    return fpr[::-1], 1.0 - tpr[::-1], thr[::-1]


def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve: P(score of a random attack > that of a random bona fide) + P(tie) / 2.

    Computed from average ranks (Mann-Whitney U), which counts ties as one half exactly; equals
    ``sklearn.metrics.roc_auc_score``.
    """
    y, s = _check(labels, scores)
    _need_both(y, "auc")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # average rank (1-based) of each tie run
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    ends = np.r_[starts[1:], s_sorted.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg, ends - starts)
    n1 = int(y.sum())
    n0 = y.size - n1
    u = ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n0 * n1))


def _rates(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, APCER, BPCER) at +inf and every distinct score, thresholds decreasing."""
    thr, tp, fp = _counts_at_thresholds(y, s)
    return thr, 1.0 - tp / tp[-1], fp / fp[-1]


def eer(labels: Any, scores: Any) -> tuple[float, float]:
    """Equal error rate and its threshold: ``(eer, threshold)``.

    Among the operating points (distinct thresholds), the one where |APCER - BPCER| is smallest (ties: the
    lowest mean error, then the lower threshold, which misses fewer attacks); EER = (APCER + BPCER) / 2 there. The threshold returned
    lies halfway between that score and the next lower distinct score, so it reproduces exactly these
    rates on this data while leaving a margin on both sides for new data (any threshold in that interval
    gives the same rates). At +inf (everything classified bona fide) the threshold is just above the top score.
    """
    y, s = _check(labels, scores)
    _need_both(y, "eer")
    thr, apcer, bpcer = _rates(y, s)
    gap = np.abs(apcer - bpcer)
    mean = (apcer + bpcer) / 2.0
    # lexicographic: smallest gap, then smallest mean error, then lowest threshold (thr is decreasing: last)
    best = np.flatnonzero(np.isclose(gap, gap.min(), rtol=0, atol=1e-12))
    best = best[np.isclose(mean[best], mean[best].min(), rtol=0, atol=1e-12)]
    i = int(best[-1])
    return float(mean[i]), _threshold_between(thr, i)


def _threshold_between(thr: np.ndarray, i: int) -> float:
    """A threshold giving operating point i: midway between distinct score thr[i] and the next lower one."""
    if i == 0:  # +inf: everything bona fide
        top = thr[1]
        return float(np.nextafter(top, np.inf) if top >= 1.0 or top < 0.0 else (top + 1.0) / 2.0)
    if i == thr.size - 1:  # the lowest score: everything an attack; any threshold <= it works
        return float(thr[i] / 2.0 if 0.0 < thr[i] <= 1.0 else thr[i])
    return float((thr[i] + thr[i + 1]) / 2.0)


def threshold_at_apcer(labels: Any, scores: Any, target: float) -> float:
    """The threshold for BPCER @ APCER = ``target``: the highest operating point whose APCER is <= ``target``
    (the one flagging fewest bona fide samples), placed midway to the next lower distinct score (see ``eer``)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target APCER must be in [0, 1], got {target}")
    y, s = _check(labels, scores)
    _need_both(y, "threshold_at_apcer")
    thr, apcer, _ = _rates(y, s)
    ok = np.flatnonzero(apcer <= target + 1e-12)  # APCER decreases as the threshold falls: ok is a tail
    return _threshold_between(thr, int(ok[0]))


def bpcer_at_apcer(labels: Any, scores: Any, target: float) -> float:
    """BPCER at the highest threshold whose APCER is <= ``target`` (e.g. 0.01 for BPCER @ APCER = 1 %)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target APCER must be in [0, 1], got {target}")
    y, s = _check(labels, scores)
    _need_both(y, "bpcer_at_apcer")
    _, apcer, bpcer = _rates(y, s)
    ok = np.flatnonzero(apcer <= target + 1e-12)
    return float(bpcer[ok[0]])


def apcer_bpcer(labels: Any, scores: Any, threshold: float,
                attack_types: Sequence[str] | None = None) -> dict[str, Any]:
    """Error rates at a fixed ``threshold`` (attack when score >= threshold).

    Returns ``apcer`` (pooled over all attacks), ``bpcer``, ``acer`` = (apcer + bpcer) / 2, and with
    ``attack_types`` (one per sample; bona fide rows are ignored) ``apcer_per_type`` {type: rate},
    ``apcer_max`` (the worst type), ``apcer_max_type`` and ``acer_worst`` = (apcer_max + bpcer) / 2. A rate
    whose denominator is empty is None, and so is any number built from it. Counts: n_live, n_attack.
    """
    y, s = _check(labels, scores)
    pred = s >= float(threshold)
    n_attack = int(y.sum())
    n_live = int(y.size - n_attack)
    apcer = float(np.mean(~pred[y == 1])) if n_attack else None
    bpcer = float(np.mean(pred[y == 0])) if n_live else None
    out: dict[str, Any] = {
        "threshold": float(threshold), "n_live": n_live, "n_attack": n_attack,
        "apcer": apcer, "bpcer": bpcer, "acer": _mean2(apcer, bpcer),
    }
    if attack_types is not None:
        at = np.asarray(attack_types, dtype=object)
        if at.shape != y.shape:
            raise ValueError(f"attack_types must have one entry per sample ({y.size}), got {at.shape[0]}")
        per: dict[str, float] = {}
        for t in sorted({str(a) for a in at[y == 1]}):
            m = (y == 1) & (at == t)
            per[t] = float(np.mean(~pred[m]))
        out["apcer_per_type"] = per
        worst = max(per, key=lambda k: (per[k], k)) if per else None
        out["apcer_max"] = per[worst] if worst is not None else None
        out["apcer_max_type"] = worst
        out["acer_worst"] = _mean2(out["apcer_max"], bpcer)
    return out


def _mean2(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a + b) / 2.0


def _summary(y: np.ndarray, s: np.ndarray, threshold: float, at: np.ndarray | None) -> dict[str, Any]:
    """Every metric that is defined for this subset; the rest None."""
    m = apcer_bpcer(y, s, threshold, None if at is None else list(at))
    both = m["n_live"] > 0 and m["n_attack"] > 0
    m["n"] = int(y.size)
    if both:
        e, et = eer(y, s)
        m.update(eer=e, eer_threshold=et, auc=auc(y, s))
        for t in TARGETS:
            m[f"bpcer_at_apcer_{round(t * 100)}pct"] = bpcer_at_apcer(y, s, t)
    else:
        m.update(eer=None, eer_threshold=None, auc=None)
        for t in TARGETS:
            m[f"bpcer_at_apcer_{round(t * 100)}pct"] = None
    m["mean_score_live"] = float(s[y == 0].mean()) if m["n_live"] else None
    m["mean_score_attack"] = float(s[y == 1].mean()) if m["n_attack"] else None
    return m


def report(labels: Any, scores: Any, threshold: float, sources: Sequence[str] | None = None,
           attack_types: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics at ``threshold``: ``pooled``, ``per_source`` and ``per_attack_type`` sections (JSON-ready).

    Each section holds counts (n, n_live, n_attack), APCER / BPCER / ACER at the threshold (with attack types:
    per type, worst type, acer_worst), EER and its threshold, AUC, BPCER @ APCER = 1 % / 5 % and mean scores;
    numbers a subset cannot define (a live-only source has no APCER, EER or AUC) are None. A source's
    section uses that source's samples; an attack type's section uses that type's attacks against ALL bona
    fide samples (so its BPCER is the pooled one and its ACER pairs the type's APCER with it).
    """
    y, s = _check(labels, scores)
    if y.size == 0:
        raise ValueError("report needs at least one sample")
    at = None
    if attack_types is not None:
        at = np.asarray([str(a) for a in attack_types], dtype=object)
        if at.shape != y.shape:
            raise ValueError(f"attack_types must have one entry per sample ({y.size}), got {at.shape[0]}")
    out: dict[str, Any] = {"threshold": float(threshold), "pooled": _summary(y, s, threshold, at),
                           "per_source": {}, "per_attack_type": {}}
    if sources is not None:
        src = np.asarray([str(x) for x in sources], dtype=object)
        if src.shape != y.shape:
            raise ValueError(f"sources must have one entry per sample ({y.size}), got {src.shape[0]}")
        for name in sorted(set(src.tolist())):
            m = src == name
            out["per_source"][name] = _summary(y[m], s[m], threshold, None if at is None else at[m])
    if at is not None:
        for t in sorted({a for a, lab in zip(at.tolist(), y.tolist()) if lab == 1}):
            m = (y == 0) | (at == t)
            sub = _summary(y[m], s[m], threshold, None)
            out["per_attack_type"][t] = sub
    return out


def probit(p: Any, eps: float = 1e-4) -> np.ndarray:
    """Normal-deviate (inverse standard normal CDF) of rates, clipped to [eps, 1 - eps]: DET plot axes."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    # Acklam's rational approximation (|relative error| < 1.2e-9), avoiding a scipy dependency
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    lo, hi = 0.02425, 1 - 0.02425
    out = np.empty_like(p)
    m = p < lo
    q = np.sqrt(-2 * np.log(p[m]))
    out[m] = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    m = p > hi
    q = np.sqrt(-2 * np.log(1 - p[m]))
    out[m] = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    m = (p >= lo) & (p <= hi)
    q = p[m] - 0.5
    r = q * q
    out[m] = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    return out


__all__ = ["TARGETS", "apcer_bpcer", "auc", "bpcer_at_apcer", "det_curve", "eer", "probit", "report", "roc_curve",
           "threshold_at_apcer"]
