"""Application log files: the platform's standard log folder, rotated by size, plus the console.

``setup_logging(config)`` sends records to stderr and to ``<log dir>/liveness.log`` through a
``RotatingFileHandler`` (5 MiB x 5 backups). The folder is ``config.log_dir`` when set, else
``$LIVENESS_LOG_DIR``, else ``platformdirs.user_log_dir("liveness-app")`` (Linux:
``~/.local/state/liveness-app/log``; macOS: ``~/Library/Logs/liveness-app``; Windows:
``%LOCALAPPDATA%\\liveness-app\\Logs``). The console handler is added only when the root logger has no
other handler (as ``logging.basicConfig`` does). A folder that cannot be written is reported once on the console and
the app carries on with console logging only. Calling it again replaces the handlers it installed before.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

APP_NAME = "liveness-app"
LOG_FILE = "liveness.log"
MAX_BYTES, BACKUPS = 5 * 2 ** 20, 5
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OURS = "_liveness_handler"


def log_dir(configured: str | None = None) -> Path:
    """The folder for log files: ``configured``, else $LIVENESS_LOG_DIR, else the platform's user log folder."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("LIVENESS_LOG_DIR"):
        return Path(os.environ["LIVENESS_LOG_DIR"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def setup_logging(level: str = "INFO", folder: str | None = None, *, console: bool = True) -> Path | None:
    """Install console + rotating file handlers on the root logger; returns the log file (None if unwritable)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    fmt = logging.Formatter(FORMAT)
    if console and not root.handlers:  # as logging.basicConfig: an embedding host's handlers stay in charge
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(fmt)
        setattr(ch, _OURS, True)
        root.addHandler(ch)
    path = log_dir(folder) / LOG_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError as e:
        logging.getLogger(__name__).warning("cannot write log files to %s (%s); logging to the console only",
                                            path.parent, e.strerror or e)
        return None
    fh.setFormatter(fmt)
    setattr(fh, _OURS, True)
    root.addHandler(fh)
    return path
