"""Soak test: the headless pipeline on a looped video for N frames, logging fps, RSS and threads every K frames.

``python scripts/soak.py --frames 20000 --model ckpt.safetensors --log docs/soak.log``

Runs the same objects the headless CLI runs (``open_source(loop=True)`` -> ``Pipeline`` -> ``JsonlWriter`` +
``AuditLog`` + ``RunSummary``, all writing to a temporary folder with size rotation) and prints one line per
``--every`` frames: frames, fps over that window, CPU milliseconds per frame (process CPU time: unlike wall fps
it does not drop when other programs take the CPU), resident memory (VmRSS from /proc/self/status; psutil is not
a dependency), live threads. At the end it prints a verdict: memory growth after warm-up (largest RSS after
warm-up against the RSS at warm-up, in %), slowdown (median CPU ms per frame of the last third of the windows
against the first third after warm-up; the wall-fps trend is printed too but depends on the machine's load),
and threads at the end against after warm-up. Exit code 0 when growth <= ``--max-growth`` %, CPU time per
frame did not grow by more than ``--max-slowdown`` % and no thread was leaked, else 1.

``--duration S`` runs for S seconds instead of a frame count. ``--gui`` runs the desktop window itself (the
real ``MainWindow``, worker QThread, reader thread, detector and scorer, on a looped video) for ``--duration``
seconds, logs a row every ``--every-s`` seconds (frames shown and scored per second, RSS, threads), then closes
the window as a user would and also fails when the worker did not stop cleanly. Use a display, e.g.
``xvfb-run -a python scripts/soak.py --gui --duration 900``, or ``QT_QPA_PLATFORM=offscreen``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    """Resident set size of this process in MiB, read from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # kB -> MiB
    raise RuntimeError("VmRSS not found in /proc/self/status (the soak needs Linux /proc)")


def os_threads() -> int:
    """Threads of this process, native ones included (Threads: in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def soak(frames: int, every: int, source: str, model: str | None, backend: str, warmup: int,
         out=sys.stdout, max_faces: int = 4, duration_s: float | None = None) -> dict:
    """Run the headless pipeline for ``frames`` frames (or ``duration_s`` seconds when given); return the
    per-window rows and the verdict as a dict."""
    from liveness_app.config import AppConfig
    from liveness_app.outputs import AuditLog, JsonlWriter, RunSummary
    from liveness_app.pipeline import Pipeline
    from liveness_app.scorer import create_scorer
    from liveness_app.sources import open_source

    scorer = create_scorer(model, backend=backend)
    config = AppConfig(source=source, loop=True, max_faces=max_faces)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, \
            open_source(source, loop=True) as src, Pipeline(config, scorer) as pipeline, \
            JsonlWriter(Path(tmp) / "verdicts.jsonl", max_bytes=8 * 2 ** 20, backups=2) as writer, \
            AuditLog(Path(tmp) / "audit.jsonl", max_bytes=2 * 2 ** 20, backups=2) as audit:
        summary = RunSummary()
        length = f"{duration_s:.0f} s" if duration_s else f"{frames} frames"
        print(f"soak: {length} of {source} (looped), model {model or 'bundled'}, backend "
              f"{scorer.backend_name}, max_faces {max_faces}", file=out)
        print(f"{'frames':>8} {'fps':>7} {'cpu_ms/f':>8} {'rss_mib':>9} {'threads':>7} {'tracks':>6} "
              f"{'smoothers':>9}", file=out)
        t_window, cpu_window = time.perf_counter(), time.process_time()
        end = time.monotonic() + duration_s if duration_s else None
        done = 0
        while (done < frames) if end is None else (time.monotonic() < end or done < warmup + 2 * every):
            frame = src.read()
            if frame is None:
                raise RuntimeError(f"{source} stopped delivering frames at {done} (it should loop)")
            result = pipeline.process(frame.image, frame.t, frame.index)
            summary.add(result)
            writer.write(result)
            audit.record(result, pipeline.last_crops)
            for tid in pipeline.ended_tracks:
                audit.forget(tid)
            done += 1
            if done % every == 0:
                now, cpu = time.perf_counter(), time.process_time()
                gc.collect()  # RSS of live objects, not of garbage that a collection would free
                row = {"frames": done, "fps": round(every / (now - t_window), 2),
                       "cpu_ms": round(1e3 * (cpu - cpu_window) / every, 2), "rss_mib": round(rss_mib(), 1),
                       "threads": threading.active_count(), "tracks": len(pipeline.tracker.tracks),
                       "smoothers": len(pipeline.smoothers)}
                rows.append(row)
                print(f"{row['frames']:>8} {row['fps']:>7.2f} {row['cpu_ms']:>8.2f} {row['rss_mib']:>9.1f} {row['threads']:>7} "
                      f"{row['tracks']:>6} {row['smoothers']:>9}", file=out, flush=True)
                t_window, cpu_window = time.perf_counter(), time.process_time()
        verdicts = summary.to_dict()["verdicts"]
    verdict = judge(rows, warmup)
    verdict["verdict_counts"] = verdicts
    return {"rows": rows, "verdict": verdict}


def soak_gui(duration_s: float, every_s: float, source: str, model: str | None, backend: str, warmup_s: float,
             out=sys.stdout) -> dict:
    """Run the desktop window on a looped video for ``duration_s`` seconds, then close it; rows every ``every_s``."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from liveness_app.config import AppConfig
    from liveness_app.ui.main_window import MainWindow
    from liveness_app.ui.settings import SettingsStore

    app = QApplication.instance() or QApplication(sys.argv[:1])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="soak-gui-") as tmp:
        config = AppConfig(source=source, loop=True, model=model, backend=backend)
        window = MainWindow(config, settings=SettingsStore(Path(tmp) / "settings.ini"))
        window.snapshot_dir = window.record_dir = Path(tmp)
        scored = [0]
        window.controller.result_ready.connect(lambda _r: scored.__setitem__(0, scored[0] + 1))
        window.resize(1200, 760)
        window.show()
        print(f"soak --gui: {duration_s:.0f} s of {source} (looped), model {model or 'bundled'}, backend {backend}, "
              f"platform {app.platformName()}", file=out)
        print(f"{'elapsed_s':>9} {'shown/s':>7} {'scored/s':>8} {'cpu_ms/s':>8} {'rss_mib':>9} {'threads':>7} "
              f"{'os_thr':>6} {'backend':>16}", file=out, flush=True)
        t0 = time.monotonic()
        last = {"t": t0, "cpu": time.process_time(), "shown": 0, "scored": 0}

        def sample() -> None:
            now, cpu = time.monotonic(), time.process_time()
            dt = now - last["t"]
            gc.collect()
            row = {"elapsed_s": round(now - t0, 1), "shown_fps": round((window.frames_shown - last["shown"]) / dt, 2),
                   "scored_fps": round((scored[0] - last["scored"]) / dt, 2),
                   "cpu_ms": round(1e3 * (cpu - last["cpu"]) / dt, 1), "rss_mib": round(rss_mib(), 1),
                   "threads": threading.active_count(), "os_threads": os_threads(),
                   "backend": window.status_backend.text().replace("backend: ", "")[:16]}
            rows.append(row)
            last.update(t=now, cpu=cpu, shown=window.frames_shown, scored=scored[0])
            print(f"{row['elapsed_s']:>9.1f} {row['shown_fps']:>7.2f} {row['scored_fps']:>8.2f} {row['cpu_ms']:>8.1f} "
                  f"{row['rss_mib']:>9.1f} {row['threads']:>7} {row['os_threads']:>6} {row['backend']:>16}", file=out,
                  flush=True)
            if now - t0 >= duration_s:
                timer.stop()
                t_close = time.monotonic()
                window.close()  # what a user's close does: stop the worker, wait for it
                rows.append({"close_s": round(time.monotonic() - t_close, 3), "shutdown_ok": window.shutdown_ok})
                app.quit()

        timer = QTimer()
        timer.timeout.connect(sample)
        timer.start(int(every_s * 1000))
        app.exec()
    closing = rows.pop()
    after = [r for r in rows if r["elapsed_s"] >= warmup_s]
    if len(after) < 2:
        raise ValueError(f"need at least two rows after the warm-up of {warmup_s} s, got {len(after)}")
    base = after[0]
    verdict = {"warmup_s": base["elapsed_s"], "rss_at_warmup_mib": base["rss_mib"],
               "rss_max_after_warmup_mib": max(r["rss_mib"] for r in after), "rss_end_mib": after[-1]["rss_mib"],
               "memory_growth_pct": round(100.0 * (max(r["rss_mib"] for r in after) - base["rss_mib"])
                                          / base["rss_mib"], 2),
               "threads_after_warmup": base["threads"], "threads_end": after[-1]["threads"],
               "min_scored_fps": min(r["scored_fps"] for r in after), **closing}
    return {"rows": rows, "verdict": verdict}


def judge(rows: list[dict], warmup: int) -> dict:
    """Memory growth after warm-up (%), fps trend (%), thread change; from the per-window rows."""
    after = [r for r in rows if r["frames"] >= warmup]
    if len(after) < 2:
        raise ValueError(f"need at least two windows after the warm-up of {warmup} frames, got {len(after)}")
    base = after[0]
    growth = 100.0 * (max(r["rss_mib"] for r in after) - base["rss_mib"]) / base["rss_mib"]
    third = max(1, len(after) // 3)
    first = sum(r["fps"] for r in after[:third]) / third
    last = sum(r["fps"] for r in after[-third:]) / third
    cpu_first = statistics.median(r["cpu_ms"] for r in after[:third])
    cpu_last = statistics.median(r["cpu_ms"] for r in after[-third:])
    return {"warmup_frames": base["frames"], "rss_at_warmup_mib": base["rss_mib"],
            "rss_max_after_warmup_mib": max(r["rss_mib"] for r in after), "rss_end_mib": after[-1]["rss_mib"],
            "memory_growth_pct": round(growth, 2), "fps_first_third": round(first, 2),
            "fps_last_third": round(last, 2), "fps_change_pct": round(100.0 * (last - first) / first, 2),
            "cpu_ms_first_third": cpu_first, "cpu_ms_last_third": cpu_last,
            "cpu_change_pct": round(100.0 * (cpu_last - cpu_first) / cpu_first, 2) if cpu_first > 0 else 0.0,
            "threads_after_warmup": base["threads"], "threads_end": after[-1]["threads"],
            "max_tracks": max(r["tracks"] for r in rows), "max_smoothers": max(r["smoothers"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--every", type=int, default=1000, help="log a row every this many frames")
    p.add_argument("--warmup", type=int, default=2000, help="frames before the memory baseline")
    p.add_argument("--source", default=str(ROOT / "assets" / "demo.mp4"), help="video to loop (640x480 demo)")
    p.add_argument("--model", default=None, help="checkpoint or config name (default: the bundled model)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--max-growth", type=float, default=5.0, help="allowed memory growth after warm-up, %%")
    p.add_argument("--max-slowdown", type=float, default=10.0, help="allowed growth of CPU ms per frame, %%")
    p.add_argument("--json", help="also write rows and verdict as JSON here")
    p.add_argument("--duration", type=float, help="run this many seconds (instead of --frames)")
    p.add_argument("--gui", action="store_true", help="soak the desktop window for --duration seconds")
    p.add_argument("--every-s", type=float, default=30.0, help="--gui: log a row every this many seconds")
    p.add_argument("--warmup-s", type=float, default=60.0, help="--gui: seconds before the memory baseline")
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.WARNING)
    if args.gui:
        if not args.duration or args.duration < args.warmup_s + 2 * args.every_s:
            p.error("--gui needs a --duration covering --warmup-s and two --every-s windows")
        report = soak_gui(args.duration, args.every_s, args.source, args.model, args.backend, args.warmup_s)
        v = report["verdict"]
        leaked = v["threads_end"] - v["threads_after_warmup"]
        ok = v["memory_growth_pct"] <= args.max_growth and leaked <= 0 and v["shutdown_ok"] and \
            v["min_scored_fps"] > 0
        print(f"verdict: memory growth after warm-up {v['memory_growth_pct']:+.2f} % "
              f"({v['rss_at_warmup_mib']:.1f} -> max {v['rss_max_after_warmup_mib']:.1f} MiB, end "
              f"{v['rss_end_mib']:.1f}); threads {v['threads_after_warmup']} -> {v['threads_end']}; lowest scored "
              f"rate {v['min_scored_fps']:.2f}/s; window closed in {v['close_s']:.2f} s, worker stopped "
              f"{'cleanly' if v['shutdown_ok'] else 'LATE'}; {'PASS' if ok else 'FAIL'}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        # as the app does (liveness_app/ui/app.py): a worker still busy must not meet Qt's teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if ok else 1)
    if not args.duration and (args.frames < 2 * args.every or args.warmup >= args.frames):
        p.error("--frames must cover at least two --every windows after --warmup")
    report = soak(args.frames, args.every, args.source, args.model, args.backend, args.warmup,
                  max_faces=args.max_faces, duration_s=args.duration)
    v = report["verdict"]
    leaked = v["threads_end"] - v["threads_after_warmup"]
    ok = v["memory_growth_pct"] <= args.max_growth and v["cpu_change_pct"] <= args.max_slowdown and leaked <= 0
    print(f"verdict: memory growth after warm-up {v['memory_growth_pct']:+.2f} % "
          f"({v['rss_at_warmup_mib']:.1f} -> max {v['rss_max_after_warmup_mib']:.1f} MiB, end "
          f"{v['rss_end_mib']:.1f}); CPU per frame {v['cpu_ms_first_third']:.2f} -> {v['cpu_ms_last_third']:.2f} ms "
          f"({v['cpu_change_pct']:+.2f} %); wall fps {v['fps_first_third']:.2f} -> {v['fps_last_third']:.2f} "
          f"({v['fps_change_pct']:+.2f} %, load-dependent); threads {v['threads_after_warmup']} -> {v['threads_end']}; "
          f"max tracks {v['max_tracks']}, max smoothers {v['max_smoothers']}; "
          f"{'PASS' if ok else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
