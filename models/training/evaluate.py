"""Score labelled face crops with a checkpoint and report ISO/IEC 30107-3 metrics (docs/architecture.md "Metrics").

    python -m models.evaluate --model assets/model.safetensors --manifest ../shared/data/faces/manifest.csv \\
        --report eval.json --plots eval_plots --scores-csv scores.csv
    python -m models.evaluate --model M --protocol P1/test.txt --root UniAttackData --live-label 1 --report r.json

Every row is scored with the chosen backend (``models.deploy.runtime``: auto | tensorrt | cuda | cpu | torch ...), the
checkpoint's stored threshold (chosen at the validation EER when it was trained) is applied unchanged unless
``--threshold`` overrides it, and APCER / BPCER / ACER, EER, AUC and BPCER @ APCER = 1 % / 5 % are reported
pooled, per source and per attack type: a printed table, a JSON report, optionally PNG plots (ROC, DET, score
histograms) and a CSV of per-row scores (path,score,label,attack_type,source,group).

Crops are read with OpenCV (BGR -> RGB) in a thread pool and turned into the model's input by
``models.preprocess`` with the checkpoint's stored size, mean and std: the one preprocessing the app and the
trainer use too.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import metrics as M
from ..atomic import atomic_path, write_text_atomic
from ..preprocess import preprocess, resize_crop

log = logging.getLogger("models.evaluate")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) or a config name (fresh weights)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, help="manifest CSV: path,label,attack_type,source,group (label 1 = "
                     "attack; paths relative to the CSV's folder)")
    src.add_argument("--protocol", type=Path, help="UniAttackData-style list of 'path label' lines (with --root "
                     "and --live-label)")
    p.add_argument("--root", type=Path, help="folder the --protocol paths are relative to")
    p.add_argument("--live-label", type=int, choices=(0, 1), help="which label means live in the --protocol list")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--plots", type=Path, help="write ROC, DET and score-histogram PNGs into this folder")
    p.add_argument("--scores-csv", type=Path, help="write per-row scores (path,score,label,...) here")
    p.add_argument("--backend", default="auto", help="auto | tensorrt | cuda | cpu | torch (or openvino, "
                   "onnxruntime); default auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="image-decoding threads")
    p.add_argument("--threads", type=int, default=0, help="CPU inference threads (0: the engine's default; 1 is "
                   "much faster when other jobs keep the cores busy)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N rows (smoke tests)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the checkpoint's stored one)")
    p.add_argument("--skip-unreadable", action="store_true", help="leave out (and count) rows whose image cannot "
                   "be read, instead of stopping")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.protocol is not None and (args.root is None or args.live_label is None):
        p.error("--protocol needs --root DIR and --live-label 0|1 (list files disagree on which label is live)")
    if args.protocol is None and (args.root is not None or args.live_label is not None):
        p.error("--root and --live-label go with --protocol")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        p.error(f"--threshold must be in [0, 1] (a probability of attack), got {args.threshold}")
    if args.batch_size < 1 or args.workers < 1 or args.limit < 0 or args.threads < 0:
        p.error("--batch-size and --workers must be >= 1, --limit and --threads >= 0")
    return args


# --- scoring ----------------------------------------------------------------------------------------------
def open_runtime(checkpoint, backend: str, threads: int = 0):
    """``models.deploy.runtime.create_runtime(checkpoint, backend)`` (with its fallbacks and start-up check): a callable
    b 3 S S float32 -> P(attack) b with ``name`` and ``notice``. ``threads`` > 0 sets the CPU engines' thread
    count (and torch's)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from ..deploy.runtime import create_runtime

    return create_runtime(checkpoint, backend, threads=threads or None)


def _read(path: Path, size: int) -> np.ndarray | None:
    """The RGB image at ``path`` resized to ``size`` (``resize_crop``, in the decoding thread), None when it
    cannot be read."""
    import cv2  # OpenCV core only: imread / cvtColor (no GUI)

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return resize_crop(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size)


def iter_batches(paths: Sequence[Path], size: int, batch_size: int, workers: int) -> Iterator[tuple[int, list]]:
    """Yield (start index, list of size x size x 3 uint8 crops or None for unreadable files) per batch, decoding
    the next batch in the thread pool while the caller scores this one (at most two batches in memory)."""
    with ThreadPoolExecutor(workers) as ex:
        def submit(i: int):
            return [ex.submit(_read, p, size) for p in paths[i:i + batch_size]]
        pending = submit(0) if paths else []
        for start in range(0, len(paths), batch_size):
            current = pending
            nxt = start + batch_size
            pending = submit(nxt) if nxt < len(paths) else []
            yield start, [f.result() for f in current]


def score_samples(samples: Sequence, score_fn: Callable[[np.ndarray], np.ndarray], preprocessing, *,
                  batch_size: int = 64, workers: int = 4, skip_unreadable: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``samples`` (objects with ``.path``): (float32 scores of the readable rows, their indices).

    An unreadable image raises ``ValueError`` naming it, unless ``skip_unreadable`` (then it is logged and left
    out of the indices).
    """
    size = preprocessing.size
    scores: list[np.ndarray] = []
    kept: list[int] = []
    paths = [s.path for s in samples]
    done, t0, last_log = 0, time.perf_counter(), time.perf_counter()
    for start, crops in iter_batches(paths, size, batch_size, workers):
        idx = []
        for j, c in enumerate(crops):
            if c is None:
                msg = f"unreadable or missing image: {paths[start + j]} (row {start + j + 1} of the input)"
                if not skip_unreadable:
                    raise ValueError(msg + "; fix the path or pass --skip-unreadable")
                log.warning(msg)
            else:
                idx.append(j)
        if idx:
            x = preprocess([crops[j] for j in idx], preprocessing)  # b 3 S S
            p = np.asarray(score_fn(x), dtype=np.float32).reshape(-1)
            if p.shape[0] != len(idx):
                raise RuntimeError(f"backend returned {p.shape[0]} scores for a batch of {len(idx)}")
            scores.append(p)
            kept.extend(start + j for j in idx)
        done += len(crops)
        if time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log.info("scored %d / %d (%.0f crops/s)", done, len(paths), done / (last_log - t0))
    out = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    return out, np.asarray(kept, dtype=np.int64)


# --- output -----------------------------------------------------------------------------------------------
def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def format_table(rep: dict[str, Any]) -> str:
    """A fixed-width table: pooled, then one row per source and per attack type (rates in %)."""
    head = (f"{'subset':<36} {'n_live':>7} {'n_attack':>8} {'APCER%':>7} {'BPCER%':>7} {'ACER%':>7} {'AUC':>7} "
            f"{'EER%':>6} {'BPCER%@APCER1%':>15} {'@5%':>6}")
    lines = [head, "-" * len(head)]

    def row(name: str, m: dict) -> str:
        return (f"{name[:36]:<36} {m['n_live']:>7} {m['n_attack']:>8} {_fmt(m['apcer']):>7} {_fmt(m['bpcer']):>7} "
                f"{_fmt(m['acer']):>7} {_fmt(m['auc'], False):>7} {_fmt(m['eer']):>6} "
                f"{_fmt(m['bpcer_at_apcer_1pct']):>15} {_fmt(m['bpcer_at_apcer_5pct']):>6}")
    lines.append(row("pooled", rep["pooled"]))
    for name, m in rep["per_source"].items():
        lines.append(row(f"source {name}", m))
    for name, m in rep["per_attack_type"].items():
        lines.append(row(f"type {name} (vs all live)", m))
    p = rep["pooled"]
    if p.get("apcer_max") is not None:
        lines.append(f"worst attack type: {p['apcer_max_type']} (APCER {_fmt(p['apcer_max'])} %, ACER with it "
                     f"{_fmt(p['acer_worst'])} %)")
    return "\n".join(lines)


def write_scores_csv(path: Path, samples: Sequence, scores: np.ndarray, base: Path | None) -> None:
    """path,score,label,attack_type,source,group per scored row; paths relative to ``base`` where possible (the
    manifest's folder, so the CSV joins with the manifest). Scores with 9 significant digits: float32 exact."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "label", "attack_type", "source", "group"])
        for s, p in zip(samples, scores):
            rel = s.path
            if base is not None:
                try:
                    rel = Path(os.path.relpath(s.path, base))
                except ValueError:  # another drive (Windows)
                    rel = s.path
            w.writerow([rel.as_posix(), f"{float(p):.9g}", s.label, s.attack_type, s.source, s.group])


def write_plots(folder: Path, labels: np.ndarray, scores: np.ndarray, threshold: float, sources: Sequence[str],
                attack_types: Sequence[str]) -> list[Path]:
    """ROC, DET and score-histogram PNGs (pooled, per source, per attack type); returns the files written."""
    import matplotlib
    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    src, at = np.asarray(sources, dtype=object), np.asarray(attack_types, dtype=object)
    both = 0 < labels.sum() < labels.size
    written: list[Path] = []
    subsets: list[tuple[str, str, np.ndarray]] = []  # (panel, name, mask) with both classes
    if both:
        subsets.append(("source", "pooled", np.ones(labels.size, bool)))
    for name in sorted(set(src.tolist())):
        m = src == name
        if 0 < labels[m].sum() < m.sum():
            subsets.append(("source", str(name), m))
    for name in sorted({a for a, y in zip(at.tolist(), labels.tolist()) if y == 1}):
        m = (labels == 0) | (at == name)
        if 0 < labels[m].sum() < m.sum():
            subsets.append(("attack type (vs all live)", str(name), m))
    panels = ["source", "attack type (vs all live)"]

    if subsets:
        # ROC: one panel per source, one per attack type; the dot marks the operating threshold
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
        for ax, panel in zip(axes, panels):
            for kind, name, m in subsets:
                if kind != panel and name != "pooled":
                    continue
                fpr, tpr, _ = M.roc_curve(labels[m], scores[m])
                op = M.apcer_bpcer(labels[m], scores[m], threshold)
                line, = ax.plot(fpr, tpr, lw=2.2 if name == "pooled" else 1.2,
                                label=f"{name} (AUC {M.auc(labels[m], scores[m]):.3f})")
                ax.plot(op["bpcer"], 1 - op["apcer"], "o", color=line.get_color())
            ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
            ax.set(xlabel="BPCER (bona fide flagged)", ylabel="1 - APCER (attacks caught)", xlim=(0, 1),
                   ylim=(0, 1.01), title=f"ROC per {panel}")
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(alpha=0.3)
        fig.suptitle(f"ROC (dots: threshold {threshold:.4g})")
        fig.tight_layout()
        written.append(_save(fig, folder / "roc.png"))

        # DET on normal-deviate axes
        ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
        for ax, panel in zip(axes, panels):
            for kind, name, m in subsets:
                if kind != panel and name != "pooled":
                    continue
                bp, ap, _ = M.det_curve(labels[m], scores[m])
                e, _ = M.eer(labels[m], scores[m])
                op = M.apcer_bpcer(labels[m], scores[m], threshold)
                line, = ax.plot(M.probit(bp), M.probit(ap), lw=2.2 if name == "pooled" else 1.2,
                                label=f"{name} (EER {100 * e:.2f} %)")
                ax.plot(M.probit(op["bpcer"]), M.probit(op["apcer"]), "o", color=line.get_color())
            lim = M.probit([5e-4, 0.98])
            ax.plot(lim, lim, ":", color="grey", lw=0.8)
            ax.set_xticks(M.probit(ticks), [f"{100 * t:g}" for t in ticks])
            ax.set_yticks(M.probit(ticks), [f"{100 * t:g}" for t in ticks])
            ax.set(xlim=lim, ylim=lim, xlabel="BPCER (%)", ylabel="APCER (%)", title=f"DET per {panel}")
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(alpha=0.3)
        fig.suptitle(f"DET (dots: threshold {threshold:.4g})")
        fig.tight_layout()
        written.append(_save(fig, folder / "det.png"))

    # score histograms per class, pooled
    bins = np.linspace(0, 1, 41) if scores.size == 0 or (scores.min() >= 0 and scores.max() <= 1) else 40
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for y, name, colour in ((0, "bona fide", "tab:green"), (1, "attack", "tab:red")):
        if (labels == y).any():
            ax.hist(scores[labels == y], bins=bins, alpha=0.55, color=colour, label=f"{name} (n={(labels == y).sum()})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    ax.set(xlabel="score = P(attack)", ylabel="crops", title="Score histogram (pooled)")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, folder / "hist.png"))

    # ... and per source (small multiples)
    names = sorted(set(src.tolist()))
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        m = src == name
        for y, colour in ((0, "tab:green"), (1, "tab:red")):
            sel = m & (labels == y)
            if sel.any():
                ax.hist(scores[sel], bins=bins, alpha=0.55, color=colour, label=f"{'attack' if y else 'live'} "
                        f"({sel.sum()})")
        ax.axvline(threshold, color="black", ls="--", lw=1)
        ax.set_title(str(name), fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Score histograms per source (dashed: threshold)")
    fig.tight_layout()
    written.append(_save(fig, folder / "hist_per_source.png"))
    return written


def _json_safe(obj: Any) -> Any:
    """NaN / inf (which strict JSON cannot hold) -> None, recursively; used on the checkpoint's data card."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- main -------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from . import data as fdata
    from ..checkpoint import load_model

    try:
        if args.manifest is not None:
            samples = fdata.read_manifest(args.manifest)
            base: Path | None = args.manifest.parent
            data_info: dict[str, Any] = {"manifest": str(args.manifest)}
        else:
            samples = fdata.read_protocol(args.protocol, args.root, args.live_label)
            base = args.root
            data_info = {"protocol": str(args.protocol), "root": str(args.root), "live_label": args.live_label}
        if not samples:
            raise ValueError("the input lists no samples")
        n_rows = len(samples)
        if args.limit:
            samples = samples[:args.limit]
        ckpt = load_model(args.model)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    if args.threshold is not None:
        threshold, origin = float(args.threshold), "--threshold"
    elif ckpt.path is not None:
        threshold, origin = float(ckpt.threshold), "checkpoint (chosen at the validation EER when trained)"
    else:
        threshold, origin = float(ckpt.threshold), "default 0.5 (a config name: fresh weights, no checkpoint)"
    log.info("model %s (%s), threshold %.6g from %s", args.model, ckpt.config.name, threshold, origin)

    try:
        runtime = open_runtime(ckpt, args.backend, args.threads)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if runtime.notice:
        log.info("backend: %s", runtime.notice)
    t0 = time.perf_counter()
    try:
        scores, kept = score_samples(samples, runtime, ckpt.preprocessing, batch_size=args.batch_size,
                                     workers=args.workers, skip_unreadable=args.skip_unreadable)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    scored = [samples[i] for i in kept]
    if not scored:
        print("error: no readable images to score", file=sys.stderr)
        return 1
    labels = np.array([s.label for s in scored], dtype=np.int64)
    sources = [s.source for s in scored]
    attack_types = [s.attack_type for s in scored]
    rep = M.report(labels, scores, threshold, sources=sources, attack_types=attack_types)

    plots: list[Path] = []
    if args.plots:
        plots = write_plots(args.plots, labels, scores.astype(np.float64), threshold, sources, attack_types)
    if args.scores_csv:
        write_scores_csv(args.scores_csv, scored, scores, base)

    result = {
        "model": str(args.model),
        "config": ckpt.config.name,
        "backend": runtime.name,
        "backend_notice": runtime.notice,
        "threshold": threshold,
        "threshold_origin": origin,
        "checkpoint_threshold": float(ckpt.threshold),
        "data": dict(data_info, rows_in_input=n_rows, limit=args.limit or None, scored=len(scored),
                     unreadable=len(samples) - len(scored)),
        "metrics": rep,
        "timing": {"seconds": round(seconds, 3), "crops_per_s": round(len(scored) / max(seconds, 1e-9), 1),
                   "batch_size": args.batch_size},
        "scores_csv": str(args.scores_csv) if args.scores_csv else None,
        "plots": [str(p) for p in plots],
        "checkpoint_data_card": _json_safe(ckpt.data_card),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.report:
        write_text_atomic(args.report, json.dumps(result, indent=2, allow_nan=False))

    print(f"model {args.model} ({ckpt.config.name}), backend {runtime.name}, threshold {threshold:.6g} ({origin})")
    print(f"{len(scored)} crops scored in {seconds:.1f} s"
          + (f", {len(samples) - len(scored)} unreadable left out" if len(scored) < len(samples) else ""))
    print(format_table(rep))
    if args.report:
        print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
