"""Keep a run's console to our own lines and the home folder to our own documented folders.

- ``native_stderr_filtered()``: mediapipe's LiteRT / XNNPACK / absl code prints ``INFO: [environment.cc:36] ...``
  and ``W0000 ... not aligned`` lines straight to file descriptor 2 when a detector is created, on its first
  frame and when it is closed; no environment variable of theirs turns these off (GLOG_minloglevel,
  TF_CPP_MIN_LOG_LEVEL and ABSL_MIN_LOG_LEVEL were tried). The block redirects fd 2 to a temporary file and
  afterwards writes back every line that is not such native log noise (another thread's warning, a Python
  traceback); the dropped lines go to our log at DEBUG.
- ``prepare_process()``: run once at the start of the command line: matplotlib, which mediapipe imports,
  keeps its font cache in our cache folder instead of ``~/.config/matplotlib`` / ``~/.cache/matplotlib``
  (unless MPLCONFIGDIR is set), and OpenVINO's and ONNX Runtime's usage telemetry is switched off
  (models/deploy/export.py).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

# absl / glog ("W0000 00:00:1796173786.567206 3636 file.cc:1433] ..."), LiteRT / TFLite ("INFO: ...") and absl's
# "WARNING: Logging before InitGoogle() is written to STDERR"
NATIVE_NOISE = re.compile(r"^(?:INFO: |WARNING: Logging before InitGoogle|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ )")
_fd_lock = threading.RLock()


@contextmanager
def native_stderr_filtered() -> Iterator[list[str]]:
    """Drop native log noise written to fd 2 inside the block; other output is passed on afterwards.

    Yields a list that holds the dropped lines once the block has ended.
    """
    dropped: list[str] = []
    with _fd_lock:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):  # no stderr, or a closed one
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a detached service): nothing to protect
            yield dropped
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield dropped
            finally:
                try:
                    sys.stderr.flush()
                except (AttributeError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                passed = []
                for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True):
                    if NATIVE_NOISE.match(line):
                        dropped.append(line.rstrip())
                        log.debug("native: %s", line.rstrip())
                    else:
                        passed.append(line)
                if passed:
                    os.write(2, "".join(passed).encode("utf-8"))


def prepare_process() -> None:
    """Environment for a run that writes only to our folders (idempotent; call before mediapipe is imported)."""
    if "MPLCONFIGDIR" not in os.environ and "matplotlib" not in sys.modules:
        from models.deploy.engine import cache_root

        os.environ["MPLCONFIGDIR"] = str(cache_root() / "matplotlib")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # "generated new fontManager" on a fresh cache
    from models.deploy.engine import disable_onnxruntime_telemetry, disable_openvino_telemetry

    disable_openvino_telemetry()  # before anything imports openvino (see models/deploy/engine.py)
    disable_onnxruntime_telemetry()  # ... and ONNX Runtime's, before it is imported
