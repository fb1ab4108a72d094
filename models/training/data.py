"""Labelled face crops: manifest / protocol readers, group-wise splits, balanced sampling weights.

Manifest CSV (shared/data format): ``path,label,attack_type,source,group``; label 1 = attack; ``path`` relative
to the manifest's own folder. Splits are by group (person / client / capture set), never by image, except for
*collection* groups: a whole web collection of distinct people filed as one group (e.g. ``utkface``), which is
split per image because its images are already independent people.
"""
from __future__ import annotations

import csv
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

ATTACK_TYPES = ("none", "print", "replay", "mask", "digital-edit", "faceswap", "gan", "adversarial", "unknown")
# groups of the training data that are web collections of distinct people (one person per image, no capture
# set to leak between splits), split per image
DEFAULT_COLLECTION_GROUPS = ("genphotos", "utkface", "yonsei", "lfw-real", "lfw-fake")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 = attack, 0 = bona fide
    attack_type: str
    source: str
    group: str


def read_manifest(csv_path: str | Path) -> list[Sample]:
    """Read a manifest CSV; rows are validated and paths resolved relative to the CSV's folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest not found: {csv_path}")
    root = csv_path.parent
    out: list[Sample] = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"path", "label", "attack_type", "source", "group"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: header must contain {sorted(need)}, got {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise ValueError(f"{csv_path}:{i}: label must be 0 (live) or 1 (attack), got {row['label']!r}")
            label = int(row["label"])
            at = row["attack_type"] or ("none" if label == 0 else "unknown")
            if (label == 0) != (at == "none"):
                raise ValueError(f"{csv_path}:{i}: label {label} contradicts attack_type {at!r}")
            out.append(Sample(root / row["path"], label, at, row["source"] or "unknown", row["group"] or row["source"]))
    if not out:
        raise ValueError(f"{csv_path}: no rows")
    return out


def read_protocol(list_path: str | Path, root: str | Path, live_label: int) -> list[Sample]:
    """Read a UniAttackData-style list of ``path label`` lines.

    Releases disagree on the label convention (live = 1 in the official readme, live = 0 in some list files), so
    ``live_label`` must be given; it is logged. Attack types are unknown (``unknown``); the group is the
    path's parent folder, the source the list file's name.
    """
    list_path, root = Path(list_path), Path(root)
    if live_label not in (0, 1):
        raise ValueError(f"live_label must be 0 or 1, got {live_label!r}")
    if not list_path.is_file():
        raise FileNotFoundError(f"protocol list not found: {list_path}")
    log.info("reading %s with the convention live = %d, attack = %d", list_path, live_label, 1 - live_label)
    out = []
    for i, line in enumerate(list_path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1"):
            raise ValueError(f"{list_path}:{i}: expected 'path label' with label 0 or 1, got {line!r}")
        label = 0 if int(parts[1]) == live_label else 1
        rel = Path(parts[0])
        out.append(Sample(root / rel, label, "none" if label == 0 else "unknown", list_path.stem,
                          str(rel.parent) if str(rel.parent) != "." else list_path.stem))
    return out


def _family(source: str) -> str:
    return source.split("-")[0]


def group_split(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0,
                collection_groups: Iterable[str] = DEFAULT_COLLECTION_GROUPS) -> tuple[list[Sample], list[Sample]]:
    """Hold out whole groups for validation, per source family (e.g. nuaa, replay, cvzb): in each family with
    two or more groups, round(val_fraction x groups) >= 1 of them go to validation. Collection groups are split
    per image instead (see module docstring). Deterministic for a seed."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = random.Random(seed)
    collection = set(collection_groups)
    families: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.group not in collection:
            families[_family(s.source)].add(s.group)
    val_groups: set[str] = set()
    for fam, groups in sorted(families.items()):
        groups = sorted(groups)
        if len(groups) >= 2:
            k = max(1, round(val_fraction * len(groups)))
            val_groups.update(rng.sample(groups, k))
    train, val = [], []
    for s in samples:
        if s.group in collection:
            # stable per-image assignment: hash of the file name with the seed
            h = random.Random(f"{seed}:{s.path.name}").random()
            (val if h < val_fraction else train).append(s)
        else:
            (val if s.group in val_groups else train).append(s)
    return train, val


def leave_one_source_out(samples: Sequence[Sample], source: str) -> tuple[list[Sample], list[Sample]]:
    """Validation = every sample of ``source`` (exact name, or a family such as ``cvzb``); train = the rest."""
    return hold_out_sources(samples, [source])


def hold_out_sources(samples: Sequence[Sample], sources: Sequence[str]) -> tuple[list[Sample], list[Sample]]:
    """Validation = every sample of each listed source (exact name, or a family such as ``cvzc``); train = the
    rest. Several sources at once make one fold that holds out people, rooms and cameras never seen in training."""
    if not sources:
        raise ValueError("hold_out_sources needs at least one source")
    wanted = set(sources)

    def held_out(source: str) -> bool:
        return source in wanted or _family(source) in wanted

    known = {s.source for s in samples}
    for src in sources:
        if not any(k == src or _family(k) == src for k in known):
            raise ValueError(f"no samples of source {src!r}; sources: {sorted(known)}")
    train, val = [], []
    for s in samples:
        (val if held_out(s.source) else train).append(s)
    return train, val


def balanced_weights(samples: Sequence[Sample], alpha: float = 0.5) -> np.ndarray:
    """Sampling weights that balance classes and soften source imbalance.

    Each (source, label) cell of n samples gets weight n^(1 - alpha) in total (alpha 1: all cells equal, 0: as
    is); then live and attack are rescaled to equal total weight. Returns float64 weights summing to 1.
    """
    cells = Counter((s.source, s.label) for s in samples)
    w = np.array([cells[(s.source, s.label)] ** (-alpha) for s in samples], dtype=np.float64)
    labels = np.array([s.label for s in samples])
    for c in (0, 1):
        if (labels == c).any():
            w[labels == c] /= w[labels == c].sum()
    return w / w.sum()


def sharpness_matched_weights(weights: np.ndarray, samples: Sequence[Sample], sharpness: np.ndarray,
                              bins: int = 8, floor: float = 0.1, cap: float = 5.0) -> tuple[np.ndarray, dict]:
    """Reweight ``weights`` so that, within each source, live and attack crops are drawn with the same sharpness
    distribution: sharpness stops telling the classes apart (issue 11's shortcut: in most webcam sets the attacks
    are the blurrier crops), without inverting it as a class-conditional blur would.

    Per source with both labels: ``bins`` quantile bins of log(1 + sharpness) over the source's crops; with p_c(b)
    the share of label c's crops in bin b, the target is the overlap q(b) ∝ min(p_live(b), p_attack(b)), and each
    crop's weight is multiplied by q(b) / p_c(b), clipped to [floor, cap] (a floor keeps crops in bins the other
    label never reaches drawable, at a reduced rate; a cap bounds how often one rare crop repeats). Each
    (source, label) cell keeps its total weight, so source and class balance are unchanged; single-label sources
    are left as they are. Returns the normalised weights and, per reweighted source, the weighted median sharpness
    of live / attack before and after and the effective sample size (Kish) before and after."""
    if bins < 2:
        raise ValueError(f"sharpness matching needs at least 2 bins, got {bins}")
    if not 0.0 <= floor <= 1.0 <= cap:
        raise ValueError(f"need 0 <= floor <= 1 <= cap, got floor {floor}, cap {cap}")
    w = np.asarray(weights, dtype=np.float64).copy()
    sharp = np.log1p(np.asarray(sharpness, dtype=np.float64))
    if w.shape != (len(samples),) or sharp.shape != (len(samples),):
        raise ValueError(f"weights {w.shape} and sharpness {sharp.shape} must both have one value per sample "
                         f"({len(samples)})")
    if not (np.isfinite(sharp).all() and (sharp >= 0).all()):
        raise ValueError("sharpness values must be finite and >= 0")
    labels = np.array([s.label for s in samples])
    sources = np.array([s.source for s in samples])

    def wmedian(idx: np.ndarray, ww: np.ndarray) -> float:
        order = idx[np.argsort(sharp[idx])]
        cum = np.cumsum(ww[order])
        return float(np.expm1(sharp[order[np.searchsorted(cum, cum[-1] / 2)]]))

    def ess(idx: np.ndarray, ww: np.ndarray) -> float:
        return float(ww[idx].sum() ** 2 / (ww[idx] ** 2).sum())

    report = {}
    for src in sorted(set(sources.tolist())):
        idx = np.flatnonzero(sources == src)
        by = {c: idx[labels[idx] == c] for c in (0, 1)}
        if len(by[0]) == 0 or len(by[1]) == 0:
            continue
        edges = np.quantile(sharp[idx], np.linspace(0.0, 1.0, bins + 1)[1:-1])
        b = {c: np.searchsorted(edges, sharp[by[c]], side="right") for c in (0, 1)}
        p = {c: np.bincount(b[c], minlength=bins) / len(by[c]) for c in (0, 1)}
        q = np.minimum(p[0], p[1])
        if q.sum() <= 0:
            log.warning("sharpness matching: %s's live and attack crops share no sharpness bin; left as is", src)
            continue
        q = q / q.sum()
        before = {"median_live": wmedian(by[0], w), "median_attack": wmedian(by[1], w),
                  "ess": ess(idx, w)}
        for c in (0, 1):
            total = w[by[c]].sum()
            w[by[c]] *= np.clip(q[b[c]] / p[c][b[c]], floor, cap)
            w[by[c]] *= total / w[by[c]].sum()
        report[src] = {"before": before, "after": {"median_live": wmedian(by[0], w),
                                                   "median_attack": wmedian(by[1], w), "ess": ess(idx, w)},
                       "overlap": float(np.minimum(p[0], p[1]).sum())}
    return w / w.sum(), report


def summarize(samples: Sequence[Sample]) -> str:
    c = Counter((s.source, s.label) for s in samples)
    srcs = sorted({s.source for s in samples})
    return ", ".join(f"{src} {c[(src, 0)]}/{c[(src, 1)]}" for src in srcs) + " (live/attack)"


def write_manifest(samples: Sequence[Sample], csv_path: str | Path) -> Path:
    """Write samples as a manifest CSV whose paths are relative to its own folder (readable by read_manifest)."""
    import os

    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    base = csv_path.parent.resolve()
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "attack_type", "source", "group"])
        for s in samples:
            w.writerow([os.path.relpath(Path(s.path).resolve(), base), s.label, s.attack_type, s.source, s.group])
    return csv_path
