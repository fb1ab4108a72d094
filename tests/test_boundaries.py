"""The layout's import boundaries (docs/architecture.md "Layout"): the model library needs no OpenCV, Qt or
mediapipe; the application's pure stages need no Qt; the documented `python -m models.*` commands still run."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = textwrap.dedent("""
    import sys

    class Blocked:
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocked(BLOCKED))
""")


def run_blocked(blocked: set[str], code: str) -> subprocess.CompletedProcess:
    script = BLOCKER.replace("BLOCKED", repr(sorted(blocked))) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_blocker_blocks():
    proc = run_blocked({"cv2"}, "import cv2")
    assert proc.returncode != 0 and "cv2 is blocked" in proc.stderr


def test_the_model_library_imports_without_opencv_qt_or_mediapipe():
    proc = run_blocked({"cv2", "PySide6", "mediapipe"}, """
        import numpy as np
        import models
        from models import checkpoint, clip, config, preprocess, pretrained, soft_moe, stem, tensors, tokenizer
        ck = models.load_model("test-tiny")
        x = models.preprocess(np.zeros((2, 32, 32, 3), np.uint8), ck.preprocessing)  # at size: no resize, no cv2
        assert x.shape == (2, 3, 32, 32)
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_app_pure_stages_and_headless_path_import_without_qt():
    proc = run_blocked({"PySide6"}, """
        from liveness_app import (api, cli, config, crop, images, outputs, pipeline, scorer, session, smoothing,
                                  sources, tracking, types)
        from liveness_app.ops import assets, health, logs, sdnotify
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("alias, prog", [("models.train", "python -m models.train"),
                                         ("models.evaluate", "python -m models.evaluate"),
                                         ("models.info", "python -m models.info"),
                                         ("models.export", "python -m models.export")])
def test_the_documented_module_commands_still_run(alias, prog):
    proc = subprocess.run([sys.executable, "-m", alias, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {prog}")
