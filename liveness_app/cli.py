"""Command line: flags -> AppConfig, and the headless driver of the run loop (liveness_app/session.py: source ->
Pipeline -> JSONL, audit log, summary).

``liveness`` (installed) and ``python main.py`` (a checkout) are the same command.
``python main.py --headless --source clip.mp4 --output verdicts.jsonl`` scores every frame of the source,
writes one JSONL line per frame, prints the run summary and exits 0. Bad input (missing file, bad value,
unreadable model) prints one line naming it on stderr and exits 2. ``--images PATH...`` scores photos one by one
(liveness_app/images.py). Without ``--headless`` the GUI starts (imported lazily, so the headless path never
imports Qt); on Linux without a display it says so in one line and exits 2 instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from .config import BACKENDS, DEMO_VIDEO, LOG_LEVELS, AppConfig, ConfigError, load_config
from .sources import IMAGE_EXTENSIONS, SourceError, open_source

log = logging.getLogger(__name__)
EXIT_OK, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 2, 1


class BadInput(Exception):
    """A user-facing problem with the input (path, value, model); its message is the one-line reason."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag defaults to None so the TOML file and AppConfig defaults show through."""
    p = argparse.ArgumentParser(description="Real-time face liveness (La-SoftMoE CLIP).")
    p.add_argument("--source", help="camera index, video file, image folder or stream URL (default: camera 0)")
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="score photos (files and folders) one by one, no window: one record per image to --output "
                        "(.jsonl, .csv or - for standard output, the default) and a summary")
    p.add_argument("--recursive", action="store_true", help="with --images: also the images of sub-folders")
    p.add_argument("--model", help="model checkpoint (.safetensors; default: the bundled model)")
    p.add_argument("--backend", choices=BACKENDS, help="inference backend (default: auto)")
    p.add_argument("--config", help="TOML settings file (same keys as these flags; flags override it)")
    p.add_argument("--max-faces", type=int, help="faces scored per frame; the largest win (default: 4)")
    p.add_argument("--loop", action="store_true", default=None, help="loop a video file / image folder")
    p.add_argument("--headless", action="store_true", default=None, help="run without a window")
    p.add_argument("--output", help="verdict JSONL file (headless; - for standard output, the summary then goes "
                                    "to stderr); with --images also .csv")
    p.add_argument("--audit-log", help="JSONL log of verdict changes per track")
    p.add_argument("--kiosk", action="store_true", default=None, help="fullscreen unattended mode")
    p.add_argument("--demo", action="store_true", default=None, help="use the bundled demo video")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="logging level (default: INFO)")
    p.add_argument("--summary-json", help="also write the run summary as JSON to this file (headless)")
    p.add_argument("--log-dir", help="folder for log files (default: the platform's user log folder)")
    p.add_argument("--check", action="store_true",
                   help="verify camera, assets, model, backend and detector, print what is wrong, and exit "
                        "(0: usable, a missing camera is only a warning; 1: something failed)")
    return p


def parse_config(argv: Sequence[str] | None = None) -> tuple[AppConfig, argparse.Namespace]:
    """Parse flags, read ``--config`` and merge (flags win). Raises BadInput with a one-line reason."""
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k not in ("config", "summary_json", "check", "images", "recursive") and v is not None}
    if args.recursive and not args.images:
        raise BadInput("--recursive applies to --images only")
    if args.images:
        clash = [f for f, v in (("--source", args.source), ("--demo", args.demo), ("--loop", args.loop),
                                ("--kiosk", args.kiosk), ("--check", args.check or None)) if v is not None]
        if clash:
            raise BadInput(f"--images scores photos one by one; it cannot be combined with {', '.join(clash)}")
    try:
        return load_config(args.config, **flags), args
    except ConfigError as e:
        raise BadInput(str(e)) from e


def run_headless(config: AppConfig, summary_json: str | None = None) -> int:
    """Score every frame of ``config.source_spec``; write JSONL/audit; print the summary. Returns the exit code."""
    from concurrent.futures import ThreadPoolExecutor

    from . import startup
    from .outputs import JsonlWriter, RunSummary
    from .pipeline import Pipeline

    startup.mark("imports")

    def open_early():
        # overlaps the model load: the source opens (a camera can take a second) and mediapipe, the
        # detector's heavy import, loads while the main thread loads the weights and builds the backend
        src = open_source(config.source_spec, loop=config.loop, folder_fps=config.folder_fps)
        from .detection import import_mediapipe
        import_mediapipe()
        return src

    with ThreadPoolExecutor(1, thread_name_prefix="start-up") as pool:
        early = pool.submit(open_early)
        try:
            from .scorer import create_scorer
            scorer = create_scorer(config.model, backend=config.backend)
        except Exception as e:  # missing file, CheckpointError (ValueError), a corrupt safetensors header ...
            hint = "" if config.model else " (pass --model PATH to a .safetensors checkpoint)"
            try:
                early.result().close()
            except Exception:  # noqa: BLE001 - the model error is the one to report
                pass
            raise BadInput(f"cannot load model: {e}{hint}".replace("\n", " ")) from e
        startup.mark("model and backend")
        try:
            source = early.result()
        except SourceError as e:
            raise BadInput(str(e)) from e
    try:
        pipeline = Pipeline(config, scorer)
    except (FileNotFoundError, ValueError) as e:
        source.close()
        raise BadInput(str(e)) from e
    startup.mark("source and detector")

    if not config.output:
        log.warning("no --output given: verdicts are not written, only the summary is printed")
    from .demo import DemoScorecard, is_demo_clip
    from .ops.sdnotify import Notifier, Watchdog
    from .session import Session, open_audit_log, open_feed

    scorecard = None
    if config.demo and is_demo_clip(config.source_spec, DEMO_VIDEO):
        try:
            scorecard = DemoScorecard.load()
        except ValueError as e:
            log.warning("%s: no per-segment scorecard", e)
    summary = RunSummary()
    notifier = Notifier()  # systemd Type=notify: READY, WATCHDOG per frame loop, STOPPING (no-op elsewhere)
    session = Session(config, pipeline, summary=summary, scorecard=scorecard, watchdog=Watchdog(notifier))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()  # finish the current frame, then write the summary

    # Ctrl+C finishes the current frame and still writes the summary (signals only work on the main thread)
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGINT, on_signal) if main_thread else None
    old_term = signal.signal(signal.SIGTERM, on_signal) if main_thread else None  # systemd stops with SIGTERM
    started = time.perf_counter()
    feed = open_feed(source, config)
    try:
        session.writer = JsonlWriter(config.output) if config.output else None
        session.audit = open_audit_log(config)
        notifier.ready(f"scoring {config.source_spec}")
        session.run(feed, stop, max_frames=config.max_frames)
    except OSError as e:
        raise BadInput(str(e)) from e
    finally:
        feed.stop()
        if main_thread:
            signal.signal(signal.SIGINT, old_handler)
            signal.signal(signal.SIGTERM, old_term)
        notifier.stopping()
        notifier.close()
        summary.wall_s = time.perf_counter() - started
        writer = session.writer
        session.close()
        source.close()
    if summary.frames == 0 and summary.no_signal == 0:
        raise BadInput(f"source {config.source_spec!r} produced no frames")
    out = sys.stderr if config.output == "-" else sys.stdout  # stdout carries the records then
    print(summary.format_table(), file=out)
    if writer is not None:
        print(f"  verdicts          {writer.path} ({writer.lines} lines)", file=out)
    if scorecard is not None:
        print(scorecard.format_table(), file=out)
    if summary_json:
        d = summary.to_dict()
        if scorecard is not None:
            d["demo_scorecard"] = scorecard.to_dict()
        Path(summary_json).write_text(json.dumps(d, indent=2))
    return EXIT_OK


def run_images(config: AppConfig, paths: Sequence[str], recursive: bool = False,
               summary_json: str | None = None) -> int:
    """``--images``: score every image on its own, write its record, print the summary (see liveness_app/images)."""
    from .images import Progress, RecordWriter, collect_images, isatty, score_images

    images, missing = collect_images(paths, recursive)
    if not images:
        if len(missing) == len(paths):
            raise BadInput(f"image not found: {', '.join(map(str, missing))}")
        hint = "" if recursive else " (add --recursive to look in sub-folders)"
        raise BadInput(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, paths))}{hint}")
    detector = _make_detector(config)
    try:
        writer = RecordWriter(config.output)
    except OSError as e:
        detector.close()
        raise BadInput(str(e)) from e
    try:
        # no bar when the records themselves go to the terminal: the two would overwrite each other
        bar = Progress(len(images), enabled=not (writer.target == "-" and isatty(sys.stdout)))
        summary = score_images(detector, images, writer, bar, missing)
    finally:
        writer.close()
        detector.close()
    out = sys.stderr if writer.target == "-" else sys.stdout
    print(summary.format_table(), file=out)
    if writer.target != "-":
        print(f"  records           {writer.target} ({writer.records} images, {writer.format})", file=out)
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary.to_dict(), indent=2))
    if summary.readable == 0:
        print(f"error: none of the {summary.images} images could be read", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _make_detector(config: AppConfig):
    from .api import LivenessDetector

    try:
        return LivenessDetector.from_config(config)
    except Exception as e:  # missing file, CheckpointError (ValueError), a corrupt safetensors header ...
        hint = "" if config.model else " (pass --model PATH to a .safetensors checkpoint)"
        raise BadInput(f"cannot load model: {e}{hint}".replace("\n", " ")) from e


def display_problem(environ: "dict[str, str] | None" = None, platform: str | None = None) -> str | None:
    """Why a window cannot open here (Linux without a display server), or None when it can (or may).

    Qt picks xcb (X11) or wayland from DISPLAY / WAYLAND_DISPLAY; without either it aborts the process with
    advice about xcb libraries. Other QT_QPA_PLATFORM values (offscreen, eglfs, linuxfb, vnc) need no server.
    """
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    has_x, has_wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if qpa and qpa not in ("xcb", "wayland", "wayland-egl"):
        return None
    if (qpa == "xcb" and has_x) or (qpa.startswith("wayland") and has_wayland) or (not qpa and (has_x or has_wayland)):
        return None
    need = {"xcb": "DISPLAY is unset", "wayland": "WAYLAND_DISPLAY is unset"}.get(
        qpa.split("-")[0], "DISPLAY and WAYLAND_DISPLAY are unset")
    return (f"no display to open the window on ({need}): run without a window with --headless --source SRC, or "
            "score photos with --images PATH (or start a virtual display: xvfb-run -a followed by this command)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``main.py``: returns the process exit code (0 ok, 2 bad input, 1 runtime failure)."""
    try:
        config, args = parse_config(argv)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    gui = not (config.headless or args.check or args.images)
    problem = display_problem() if gui else None
    if problem:  # before Qt is imported: Qt itself would abort the process (exit 134)
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .ops.logs import setup_logging
    from .quiet import prepare_process

    prepare_process()  # before mediapipe is imported (see liveness_app/quiet.py)
    log_file = setup_logging(config.log_level, config.log_dir)  # console + rotating file in the user log folder
    log.debug("logging to %s", log_file)
    if args.images:
        try:
            return run_images(config, args.images, args.recursive, args.summary_json)
        except BadInput as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Exception as e:  # a failure while scoring (not the input): traceback in the log, one line last
            log.exception("image scoring failed")
            print(f"error: image scoring failed: {e}", file=sys.stderr)
            return EXIT_RUNTIME
    if args.check:
        from .ops.health import exit_code, format_checks, run_checks

        checks = run_checks(config)
        print(format_checks(checks))
        return exit_code(checks)
    if not config.headless:
        from .ui.app import run_gui  # lazy: only the GUI imports Qt
        return int(run_gui(config) or 0)
    try:
        return run_headless(config, args.summary_json)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # a failure during the run (not the input): traceback in the log, one line last
        log.exception("headless run failed")
        print(f"error: headless run failed: {e}", file=sys.stderr)
        return EXIT_RUNTIME


def console_main() -> None:
    """The ``liveness`` command (pyproject.toml [project.scripts]): the same CLI as ``python main.py``."""
    sys.exit(main())


if __name__ == "__main__":  # python -m liveness_app.cli ... (the same as python main.py ...)
    console_main()
