"""Launch-to-first-verdict trace: ``mark(stage)`` records when each start-up stage ended.

Times are seconds since the process started (Linux: from /proc, so the interpreter's own start and the imports
before ``main`` count too; elsewhere since this module was imported). ``summary()`` is one log line, e.g.
``start-up: imports 2.61, model 0.52, backend 0.31, detector 0.42, first frame 0.05; first verdict 3.91 s after
launch``. With ``$LIVENESS_STARTUP_TRACE`` set to a file, every mark is appended there as a JSON line
(``{"stage": ..., "t": ...}``), which is how ``python -m liveness_app.bench`` measures launch to first verdict
in a child process without parsing logs.
"""
from __future__ import annotations

import json
import os
import threading
import time

_lock = threading.Lock()
_marks: list[tuple[str, float]] = []


def _process_age() -> float | None:
    """Seconds since this process started, from /proc (Linux), else None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5): starttime, in clock ticks since boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


_age = _process_age()
_T0 = time.perf_counter() - (_age if _age is not None else 0.0)  # perf_counter value at process start


def since_launch() -> float:
    return time.perf_counter() - _T0


def mark(stage: str, *, once: bool = False) -> float | None:
    """Record that ``stage`` just ended; returns the seconds since launch. ``once``: not if ``stage`` was
    marked before in this process (then None)."""
    t = since_launch()
    with _lock:
        if once and any(s == stage for s, _ in _marks):
            return None
        _marks.append((stage, t))
    path = os.environ.get("LIVENESS_STARTUP_TRACE")
    if path:
        try:
            with open(path, "a") as f:
                f.write(json.dumps({"stage": stage, "t": round(t, 4), "pid": os.getpid()}) + "\n")
        except OSError:
            pass
    return t


def mark_once(stage: str) -> bool:
    """``mark(stage)`` unless ``stage`` was marked before in this process; True when it marked. Launch is once
    per process: a GUI that restarts its pipeline (another model, source or backend) starts no new trace."""
    return mark(stage, once=True) is not None


def marks() -> list[tuple[str, float]]:
    with _lock:
        return list(_marks)


def summary() -> str:
    """The stages as durations, and the last mark's time since launch."""
    ms = marks()
    if not ms:
        return "start-up: no marks"
    parts, prev = [], 0.0
    for stage, t in ms:
        parts.append(f"{stage} {t - prev:.2f}")
        prev = t
    return f"start-up: {', '.join(parts)}; {ms[-1][0]} {ms[-1][1]:.2f} s after launch"
