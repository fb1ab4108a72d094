"""``main.py --check``: camera, assets, detector, model, backend and log folder, on the real components.

No camera exists on this machine: --check must say "no camera" as a warning and still exit 0 when the rest is
fine; a broken part must FAIL with its reason and exit 1.
"""
import subprocess
import sys
from pathlib import Path

import cv2

from liveness_app.config import AppConfig
from liveness_app.ops.health import Check, exit_code, format_checks, run_checks

ROOT = Path(__file__).resolve().parents[3]


def camera_present() -> bool:
    cap = cv2.VideoCapture(0)
    try:
        return cap.isOpened()
    finally:
        cap.release()


def test_check_on_this_machine_via_main_py(tiny_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--check", "--model", str(tiny_checkpoint),
                           "--backend", "torch", "--log-dir", str(tmp_path / "logs"), "--log-level", "ERROR"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = {ln.split()[1]: ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ")}
    assert lines == {"camera": "warn" if not camera_present() else "ok", "assets": "ok", "detector": "ok",
                     "model": "ok", "backend": "ok", "logs": "ok"}, proc.stdout
    if not camera_present():
        assert "no camera" in proc.stdout and "result: ok with warnings (camera)" in proc.stdout


def test_check_fails_on_missing_model_and_broken_detector(tmp_path):
    broken = tmp_path / "detector.tflite"
    broken.write_bytes(b"not a model")
    checks = {c.name: c for c in run_checks(AppConfig(model=str(tmp_path / "none.safetensors"),
                                                      detector_model=str(broken), log_dir=str(tmp_path / "l")))}
    assert checks["model"].state == "FAIL" and "none.safetensors" in checks["model"].detail
    assert checks["detector"].state == "FAIL"
    assert exit_code(list(checks.values())) == 1
    assert "result: FAIL (detector, model, backend)" in format_checks(list(checks.values()))


def test_check_of_a_file_source_and_an_unopenable_camera(face_clip, tiny_checkpoint, tmp_path):
    clip, _ = face_clip
    checks = run_checks(AppConfig(source=str(clip), model=str(tiny_checkpoint), backend="torch",
                                  log_dir=str(tmp_path)))
    assert checks[0] == Check("source", "ok", f"{clip}: first frame 480x360")

    class Refusing:  # a camera device that exists but cannot be opened (in use, no permission)
        def __init__(self, spec):
            pass

        def isOpened(self):  # noqa: N802
            return False

        def release(self):
            pass

    cam = run_checks(AppConfig(source=0, model=str(tiny_checkpoint), backend="torch", log_dir=str(tmp_path)),
                     capture_factory=Refusing)[0]
    assert cam.name == "camera" and cam.state == "warn" and "no camera at index 0" in cam.detail
    bad = run_checks(AppConfig(source=str(tmp_path / "gone.mp4"), model=str(tiny_checkpoint), backend="torch",
                               log_dir=str(tmp_path)))[0]
    assert bad.state == "FAIL" and "gone.mp4" in bad.detail


def test_check_builds_the_backend_the_way_the_app_does(tiny_checkpoint, tmp_path, monkeypatch):
    """--check must report the backend the app would run: same agreement crops, same deferred int8 build."""
    import models.deploy.runtime as runtime_mod  # create_scorer imports create_runtime from it when it needs torch
    from liveness_app.ops.health import check_model_and_backend

    seen = {}
    real = runtime_mod.create_runtime

    def spy(ckpt, backend, **options):
        seen.update(options, backend=backend)
        return real(ckpt, backend, **options)

    monkeypatch.setattr(runtime_mod, "create_runtime", spy)
    model, backend = check_model_and_backend(AppConfig(model=str(tiny_checkpoint), backend="torch",
                                                       log_dir=str(tmp_path)))
    assert model.state == "ok" and backend.state == "ok", backend
    assert seen["backend"] == "torch" and seen["defer_builds"] is True
    assert seen["agreement_crops"] is not None  # the shipped guard crops, as create_scorer gives the app
