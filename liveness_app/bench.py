"""Benchmark: per-stage latency, end-to-end frames per second, crops per second per backend, peak memory.

    python -m liveness_app.bench                        # bundled model (else fresh ViT-Ti-16-128), all backends
    python -m liveness_app.bench --json bench.json      # also write the results as JSON
    python -m liveness_app.bench --model ViT-B-16 --backends torch,openvino --batches 1,8

Three parts, the timed ones after warm-up, reported as median / p95:
0. Launch to first verdict: the headless CLI (``python -m liveness_app.cli --headless --max-frames 1``) started
   as a fresh process, first with an empty cache folder (cold: exports built) and then again with the same
   one (second start), its stages read from ``$LIVENESS_STARTUP_TRACE`` (liveness_app/startup.py): imports,
   model and backend, source and detector, first verdict, in seconds since the process started.
1. End-to-end, headless, on a video (default: a generated 640x480 clip of one real face, else the bundled
   demo): decode -> detect -> track -> crop -> score -> smooth -> write one JSONL line, every frame scored,
   on the backend the app would pick (``--e2e-backend``, default auto), in a child process whose peak RSS is
   the headless app's footprint (pipeline, detector, one backend) and whose threads cannot disturb part 2.
2. The model alone: ms per crop and crops per second at each batch size for each available backend
   (OpenVINO int8 / bf16 / fp32, ONNX Runtime, torch; cuda / tensorrt on a GPU), its start-up check
   (max |dP| on a random batch; for reduced precision the decision-agreement guard on the shipped crops), and
   each backend's speed-up over torch eager measured in the same run; the backends are timed in interleaved rounds,
   so a drift of the machine's speed lands on all of them alike.
Last, each target of issues 15 and 11 (``TARGETS``) with this run's figure: met, or missed by how much.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("decode", "detect", "track", "crop", "score", "smooth", "write")
DEFAULT_CONFIG = "ViT-Ti-16-128"  # the bundled model's geometry, used while the bundled file is absent


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux reports ru_maxrss in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2 ** 20


def stats(values_ms: list[float]) -> dict[str, float]:
    """median / p95 / mean of a list of milliseconds (empty list -> zeros)."""
    if not values_ms:
        return {"median": 0.0, "p95": 0.0, "mean": 0.0, "n": 0}
    a = np.asarray(values_ms, dtype=np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean()),
            "n": int(a.size)}


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int, min_seconds: float = 0.0,
               max_seconds: float = 20.0) -> list[float]:
    """Milliseconds per call of ``fn`` after ``warmup`` calls; at least ``repeats`` calls and ``min_seconds``,
    but stop after ``max_seconds`` once 5 calls are timed (a slow backend on a busy machine)."""
    t_start = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - t_start > max_seconds / 2:
            break
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    t_cap = time.perf_counter() + max_seconds
    while (len(times) < repeats or time.perf_counter() < t_end) and not (len(times) >= 5 and
                                                                         time.perf_counter() > t_cap):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def default_video(folder: Path, frames: int) -> Path:
    """A 640x480 clip of one real face (tests/media.py) in ``folder``, else the bundled demo video."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from media import make_face_video
    except ImportError:
        from .config import DEMO_VIDEO as demo  # the installed package's copy, else the checkout's

        if not demo.is_file():
            raise FileNotFoundError("no video: pass --video PATH (tests/media.py and assets/demo.mp4 are absent)")
        return demo
    finally:
        sys.path.pop(0)
    path = folder / "bench_face_640x480.mp4"
    make_face_video(path, frames=frames, size=(640, 480), fps=30.0, face_side=(170, 230))
    return path


def bench_end_to_end(model: Any, backend: str, video: Path, warmup: int, max_frames: int | None) -> dict:
    """Build the scorer the app would (its start-up time is reported apart), then ``time_pipeline``."""
    from .scorer import create_scorer

    t0 = time.perf_counter()
    # the steady state of the app: an int8 model not cached yet is built now, not left to the background
    scorer = create_scorer(model, backend=backend, defer_builds=False)
    startup_s = time.perf_counter() - t0
    out = time_pipeline(scorer, video, warmup, max_frames)
    out["startup_s"] = round(startup_s, 2)
    return out


def time_pipeline(scorer: Any, video: Path, warmup: int, max_frames: int | None) -> dict:
    """The headless loop (decode -> pipeline -> one JSONL line) over ``video`` with a built ``scorer``; per-stage
    ms and frames/s over the frames after ``warmup`` (scripts/peer_bench.py times it in rounds)."""
    from .config import AppConfig
    from .outputs import JsonlWriter
    from .pipeline import Pipeline
    from .sources import open_source

    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    frames = scored = faces = 0
    wall = 0.0
    with tempfile.TemporaryDirectory() as tmp, open_source(str(video)) as src, \
            Pipeline(AppConfig(), scorer) as pipe, JsonlWriter(Path(tmp) / "verdicts.jsonl") as writer:
        width = height = 0
        i = 0
        while max_frames is None or i < max_frames:
            ta = time.perf_counter()
            frame = src.read()
            tb = time.perf_counter()
            if frame is None:
                break
            result = pipe.process(frame.image, frame.t, frame.index)
            tc = time.perf_counter()
            writer.write(result)
            td = time.perf_counter()
            height, width = frame.image.shape[:2]
            if i >= warmup:
                frames += 1
                wall += td - ta
                per_stage["decode"].append((tb - ta) * 1e3)
                for s in ("detect", "track", "crop", "score", "smooth"):
                    per_stage[s].append(result.timings_ms.get(s, 0.0))
                per_stage["write"].append((td - tc) * 1e3)
                faces += len(result.tracks)
                scored += int(bool(result.tracks) and all(t.raw_score is not None for t in result.tracks))
            i += 1
    if frames == 0:
        raise ValueError(f"{video}: fewer than {warmup + 1} frames; nothing measured after warm-up")
    return {"video": str(video), "size": [width, height], "frames": frames, "warmup_frames": warmup,
            "backend": scorer.backend_name, "notice": scorer.notice,
            "stages_ms": {s: stats(v) for s, v in per_stage.items()},
            "frame_ms": stats([sum(per_stage[s][k] for s in STAGES) for k in range(frames)]),
            "fps": frames / wall, "frames_scored": scored / frames, "faces_per_frame": faces / frames}


def launch_to_first_verdict(model: str, backend: str, video: Path, cache_dir: Path, runs: int = 2,
                            timeout: float = 600.0) -> list[dict]:
    """Start the headless CLI ``runs`` times on ``video`` (one frame) with cache folder ``cache_dir``; the first
    run sees the folder as given (empty: a cold start), later ones what the earlier runs left. Each entry has
    the stage marks (seconds since that process started) and the process's wall time; a detached int8 build that
    a cold start leaves behind (models/deploy/runtime.py) is waited for before the next start, as a user's second start
    a while later would find it done (``build_wait_s``)."""
    import subprocess

    out = []
    for k in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.jsonl"
            env = dict(os.environ, LIVENESS_CACHE_DIR=str(cache_dir), LIVENESS_STARTUP_TRACE=str(trace))
            cmd = [sys.executable, "-m", "liveness_app.cli", "--headless", "--source", str(video), "--max-frames",
                   "1", "--output", str(Path(tmp) / "v.jsonl"), "--backend", backend, "--log-level", "WARNING"]
            if model:
                cmd += ["--model", model]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - t0
            marks = {}
            if trace.is_file():
                for line in trace.read_text().splitlines():
                    rec = json.loads(line)
                    marks[rec["stage"]] = rec["t"]
            t1 = time.perf_counter()
            while list(Path(cache_dir).glob("int8-job-*")) and time.perf_counter() - t1 < timeout:
                time.sleep(0.5)
            row = {"run": "cold" if k == 0 else f"start {k + 1}", "stages_s": marks, "wall_s": round(wall, 2),
                   "first_verdict_s": marks.get("first verdict"), "returncode": proc.returncode,
                   "build_wait_s": round(time.perf_counter() - t1, 1)}
            if proc.returncode != 0 or "first verdict" not in marks:
                row["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out.append(row)
    return out


def _e2e_child(model_path: str, backend: str, video: str, warmup: int, max_frames: int) -> dict:
    from .scorer import load_weights
    out = bench_end_to_end(load_weights(model_path), backend, Path(video), warmup, max_frames)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _e2e_in_child(ckpt: Any, backend: str, video: Path, warmup: int, max_frames: int) -> dict:
    """``bench_end_to_end`` in a fresh (spawned) process: its peak RSS is the headless app's alone, and its
    engines' worker threads (OpenVINO, mediapipe) cannot slow the model timings of this process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import models
    with tempfile.TemporaryDirectory() as tmp:
        path = ckpt.path if ckpt.path else models.save_checkpoint(Path(tmp) / "bench.safetensors", ckpt.model,
                                                                   threshold=ckpt.threshold)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_e2e_child, str(path), backend, str(video), warmup, max_frames).result()


def bench_model(ckpt: Any, backends: list[str], batches: list[int], warmup: int, repeats: int,
                min_seconds: float, rounds: int = 5) -> dict:
    """Crops per second at each batch for each backend (no fallback), with agreement vs torch eager fp32.

    Every backend is built first; then the timed calls run in ``rounds`` interleaved rounds (each round times
    every backend at every batch in turn, ``repeats`` and ``min_seconds`` split between the rounds), so a drift
    of the machine's speed during the run (measured here: 15 % between runs minutes apart) lands on all
    backends alike instead of on whichever ran during it; the medians are over all rounds' calls."""
    import torch

    from models.deploy.export import example_input
    from models.deploy.runtime import DEFAULT_AGREEMENT_CROPS, create_runtime, load_agreement_crops

    from .scorer import AGREEMENT_CROPS
    module = ckpt.model.scorer().eval()
    size = ckpt.preprocessing.size
    crops_path = AGREEMENT_CROPS if AGREEMENT_CROPS.is_file() else DEFAULT_AGREEMENT_CROPS
    crops = load_agreement_crops(crops_path) if crops_path.is_file() else None
    out: dict[str, Any] = {}
    runtimes: dict[str, Any] = {}
    x_check = example_input(size, 8, seed=99)
    with torch.inference_mode():
        ref = module(x_check).numpy()  # eager fp32, the reference of every backend's start-up figure
    for name in backends:
        t0 = time.perf_counter()
        try:
            runtime = create_runtime(ckpt, name, fallback=False, agreement_crops=crops)
        except Exception as e:  # noqa: BLE001 - an unavailable backend is a row of the table, not a crash
            out[name] = {"error": str(e).splitlines()[0]}
            log.info("backend %s unavailable: %s", name, e)
            continue
        row: dict[str, Any] = {"runtime": runtime.name, "device": runtime.device,
                               "startup_s": round(time.perf_counter() - t0, 2), "batches": {}}
        row["max_abs_diff_vs_eager_fp32"] = float(np.abs(runtime(x_check) - ref).max())
        row["tolerance"] = runtime.tolerance
        row["precision"] = runtime.precision
        if runtime.agreement is not None:  # the decision-agreement guard's figures (reduced precision)
            row["agreement"] = runtime.agreement.as_dict()
        out[name], runtimes[name] = row, runtime
    inputs = {b: example_input(size, b, seed=b).numpy() for b in batches}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in runtimes for b in batches}
    rounds = max(1, rounds)
    for r in range(rounds):
        for name, runtime in runtimes.items():
            for b in batches:
                x = inputs[b]
                times[name, b] += time_calls(lambda: runtime(x), warmup if r == 0 else 2, -(-repeats // rounds),
                                             min_seconds / rounds, max_seconds=20.0 / rounds)
    for (name, b), t in times.items():
        st = stats(t)
        out[name]["batches"][str(b)] = {"median_ms": st["median"], "p95_ms": st["p95"],
                                        "ms_per_crop": st["median"] / b, "crops_per_s": 1e3 * b / st["median"]}
    runtimes.clear()
    ref_row = out.get("torch", {}).get("batches")
    if ref_row:
        for name, row in out.items():
            if "batches" in row:
                row["speedup_vs_torch"] = {b: ref_row[b]["median_ms"] / r["median_ms"]
                                           for b, r in row["batches"].items() if b in ref_row}
    return out


def machine_info() -> dict:
    import torch
    info = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                               info["cpu"])
    except OSError:
        pass
    from models.deploy.export import disable_onnxruntime_telemetry, disable_openvino_telemetry

    disable_openvino_telemetry()  # importing openvino for its version would write ~/intel otherwise
    disable_onnxruntime_telemetry()  # ... and onnxruntime ~/.cache/Microsoft and $TMPDIR/.ses
    for mod in ("openvino", "onnxruntime", "cv2", "mediapipe"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed
            pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["load_avg_1min"] = os.getloadavg()[0]
    return info


# issue 15's start-up and per-crop targets and issue 11's real-time floor: (name, bound, "<=" or ">=", unit)
TARGETS = (("second start, headless first verdict", 2.0, "<=", "s"),
           ("cold start, headless first verdict", 6.0, "<=", "s"),
           ("batch 1, fastest CPU backend", 3.0, "<=", "ms/crop"),
           ("batch 8, fastest CPU backend", 500.0, ">=", "crops/s"),
           ("end to end, every frame scored", 40.0, ">=", "frames/s"))


def check_targets(res: dict) -> list[dict]:
    """Each of TARGETS against this run's figures: ``met``, ``missed by N %`` (of the target) or ``not measured in
    this run`` (a part skipped or failed). The CPU figures are the best over the CPU backends that were built (a reduced-precision one
    only exists here after passing its decision-agreement guard), named in ``measured``."""
    launch = [r for r in res.get("launch") or [] if "error" not in r]
    later = sorted(r["first_verdict_s"] for r in launch if r["run"] != "cold")
    cold = [r["first_verdict_s"] for r in launch if r["run"] == "cold"]
    cpu = {row["runtime"]: row["batches"] for row in res.get("backends", {}).values()
           if "batches" in row and row.get("device", "cpu") == "cpu"}

    def best(batch: str, key: str, pick) -> tuple[float, str] | None:
        cand = [(b[batch][key], name) for name, b in cpu.items() if batch in b]
        return pick(cand) if cand else None

    b1, b8 = best("1", "ms_per_crop", min), best("8", "crops_per_s", max)
    e2e = res.get("e2e") or {}
    measured: dict[str, tuple[float, str] | None] = {
        TARGETS[0][0]: (float(np.median(later)), f"median of {len(later)}") if later else None,
        TARGETS[1][0]: (cold[0], "") if cold else None,
        TARGETS[2][0]: b1, TARGETS[3][0]: b8,
        TARGETS[4][0]: (e2e["fps"], e2e["backend"]) if "fps" in e2e and e2e.get("frames_scored") == 1.0 else None}
    rows = []
    for name, bound, op, unit in TARGETS:
        m = measured[name]
        row = {"target": f"{name} {op} {bound:g} {unit}", "bound": bound, "op": op, "unit": unit}
        if m is None:
            row.update(measured=None, status="not measured in this run")
        else:
            value, note = m
            short = (value - bound) / bound if op == "<=" else (bound - value) / bound
            row.update(measured=value, note=note,
                       status="met" if short <= 0 else f"missed by {100 * short:.0f} %")
        rows.append(row)
    return rows


def format_table(res: dict) -> str:
    """The human-readable report printed on stdout."""
    lines = [f"model: {res['model']}  ({res['model_note']})" if res.get("model_note") else f"model: {res['model']}",
             "machine: " + ", ".join(f"{k} {v}" for k, v in res["machine"].items())]
    launch = res.get("launch")
    if launch:
        lines += ["", "launch to first verdict (headless CLI, one frame; seconds since the process started):"]
        for row in launch:
            if "error" in row:
                lines.append(f"  {row['run']:<8} failed: {row['error']}")
                continue
            st = row["stages_s"]
            prev, parts = 0.0, []
            for stage, t in st.items():
                parts.append(f"{stage} +{t - prev:.2f}")
                prev = t
            lines.append(f"  {row['run']:<8} first verdict {row['first_verdict_s']:.2f} s  ({', '.join(parts)}; "
                         f"process wall {row['wall_s']:.1f} s)")
    e2e = res.get("e2e")
    if e2e and "error" not in e2e:
        w, h = e2e["size"]
        lines += ["", f"end-to-end, headless: {e2e['frames']} frames of {w}x{h} after {e2e['warmup_frames']} "
                      f"warm-up, backend {e2e['backend']}",
                  f"{'stage':<8} {'median ms':>10} {'p95 ms':>8}"]
        for s, st in e2e["stages_ms"].items():
            lines.append(f"{s:<8} {st['median']:>10.2f} {st['p95']:>8.2f}")
        fm = e2e["frame_ms"]
        lines += [f"{'frame':<8} {fm['median']:>10.2f} {fm['p95']:>8.2f}",
                  f"frames/s {e2e['fps']:.1f}   frames with every face scored {100 * e2e['frames_scored']:.0f} %"
                  f"   faces/frame {e2e['faces_per_frame']:.2f}   start-up {e2e['startup_s']:.1f} s"]
    elif e2e:
        lines += ["", f"end-to-end: not run ({e2e['error']})"]
    lines.append(f"peak RSS of the headless app process (pipeline, detector, one backend): "
                 f"{res['peak_rss_mb']['after_e2e']:.0f} MiB" if res["peak_rss_mb"].get("after_e2e") else "")
    lines += ["", "model alone (normalised batch in, probabilities out; backends timed in interleaved rounds):"]
    batches = res["batches"]
    head = f"{'backend':<18} {'start s':>7} {'max|dP|':>8} {'guard':>14} " + " ".join(
        f"{'b' + str(b) + ' ms/crop':>11} {'crops/s':>8}" for b in batches) + "  speed-up vs torch"
    lines.append(head)
    for name, row in res["backends"].items():
        if "error" in row:
            lines.append(f"{name:<18} unavailable: {row['error']}")
            continue
        cells = " ".join(f"{row['batches'][str(b)]['ms_per_crop']:>11.2f} {row['batches'][str(b)]['crops_per_s']:>8.0f}"
                         for b in batches)
        sp = row.get("speedup_vs_torch", {})
        sp_txt = " ".join(f"b{b} x{v:.2f}" for b, v in sp.items())
        ag = row.get("agreement")
        guard = f"{100 * ag['same_decision']:.1f}% {ag['max_abs_dp']:.0e}" if ag else f"tol {row['tolerance']:.0e}"
        lines.append(f"{row['runtime']:<18} {row['startup_s']:>7.1f} {row['max_abs_diff_vs_eager_fp32']:>8.1e} "
                     f"{guard:>14} {cells}  {sp_txt}")
    lines.append("guard: reduced precision = same decision as eager fp32 on the agreement crops and their max |dP| "
                 "(needs >= 99.5 % and <= 0.02); fp32 = the tolerance on a random batch")
    lines.append(f"peak RSS of the bench process (every backend of part 2 loaded): {res['peak_rss_mb']['end']:.0f} MiB")
    lines += ["", "targets (a machine whose speed drifts: compare runs only on an idle machine):"]
    for row in res.get("targets") or check_targets(res):
        got = "-" if row["measured"] is None else f"{row['measured']:.2f} {row['unit']}" + (
            f" ({row['note']})" if row.get("note") else "")
        lines.append(f"  {row['target']:<52} {got:<36} {row['status']}")
    return "\n".join(ln for ln in lines if ln is not None)


def available_backends() -> list[str]:
    """torch, then the installed CPU engines, then cuda / tensorrt where a GPU is present."""
    import importlib.util

    import torch
    names = ["torch"] + [m for m in ("onnxruntime", "openvino") if importlib.util.find_spec(m) is not None]
    if "openvino" in names:
        names += ["openvino-bf16"] + (["openvino-int8"] if importlib.util.find_spec("nncf") is not None else [])
    if torch.cuda.is_available():
        names += ["cuda", "tensorrt"]
    return names


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed ``args``; returns the results dict (also what --json writes)."""
    from .scorer import DEFAULT_MODEL, load_weights

    model = args.model
    note = ""
    if model is None:
        if DEFAULT_MODEL.is_file():
            model = str(DEFAULT_MODEL)
        else:
            model, note = DEFAULT_CONFIG, "bundled model absent: fresh weights of its config, same speed"
    elif not Path(model).is_file():
        note = "config name: fresh weights"
    res: dict[str, Any] = {"model": model, "model_note": note, "machine": machine_info(),
                           "batches": args.batches, "peak_rss_mb": {}}
    ckpt = load_weights(model)
    if not args.no_launch:
        with tempfile.TemporaryDirectory() as tmp:
            video = Path(args.video) if args.video else default_video(Path(tmp), 30)
            res["launch"] = launch_to_first_verdict(str(model), args.e2e_backend, video, Path(tmp) / "cache",
                                                    args.launch_runs)
    if not args.no_e2e:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                video = Path(args.video) if args.video else default_video(Path(tmp), args.frames + args.warmup)
                if not video.is_file():
                    raise FileNotFoundError(f"video not found: {video}")
                res["e2e"] = _e2e_in_child(ckpt, args.e2e_backend, video, args.warmup, args.frames + args.warmup)
            except (ImportError, FileNotFoundError, ValueError) as e:
                res["e2e"] = {"error": str(e)}
        res["peak_rss_mb"]["after_e2e"] = res.get("e2e", {}).get("peak_rss_mb")
    backends = args.backends or available_backends()
    res["backends"] = bench_model(ckpt, backends, args.batches, args.warmup, args.repeats, args.min_seconds)
    res["peak_rss_mb"]["end"] = peak_rss_mb()
    res["targets"] = check_targets(res)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liveness_app.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint or config name (default: the bundled model, else "
                                    f"fresh {DEFAULT_CONFIG})")
    ap.add_argument("--backends", type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
                    help="comma list of torch, onnxruntime, openvino, openvino-bf16, openvino-int8, cuda, tensorrt "
                         "(default: all available)")
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8, 16])
    ap.add_argument("--video", help="video for the end-to-end part (default: a generated 640x480 face clip)")
    ap.add_argument("--frames", type=int, default=300, help="frames measured end to end after warm-up")
    ap.add_argument("--e2e-backend", default="auto", help="backend of the end-to-end part (default: auto)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part")
    ap.add_argument("--no-launch", action="store_true", help="skip launch to first verdict")
    ap.add_argument("--launch-runs", type=int, default=3, help="headless starts to time: a cold one, then "
                    "starts with the cache it left (default 3: with auto the first start leaves int8 to a background "
                    "build, which also records the warm start once its guard passes, so the second and third are "
                    "torch-free warm starts, unless the second begins before that build has finished)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up calls / frames before timing")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per backend and batch (at least)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time each backend and batch at least this long")
    ap.add_argument("--json", help="write the results as JSON to this file")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if any(b < 1 for b in args.batches) or args.frames < 1 or args.warmup < 0 or args.repeats < 1 \
            or args.launch_runs < 1:
        ap.error("--batches, --frames, --repeats and --launch-runs must be >= 1, --warmup >= 0")
    try:
        res = run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
