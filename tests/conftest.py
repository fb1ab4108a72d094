import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
import atexit, shutil, tempfile  # noqa: E401,E402

# Everything a run writes outside pytest's own temp folders goes under one folder of the system temp dir,
# removed when the run ends: the backends' export cache (models/deploy/runtime.py), the log folder
# (liveness_app/ops/logs.py) and a home folder. HOME and the XDG folders point there, for this process and every
# process a test starts, so that no library (matplotlib's font cache, OpenVINO's or ONNX Runtime's telemetry
# ids, Qt, pip) writes into the user's home. A run that was killed cannot remove its folder: the next run
# removes the folders of runs whose process is gone.
_RUN_PREFIX = "liveness-tests-"


def _sweep_dead_runs() -> None:
    for folder in Path(tempfile.gettempdir()).glob(_RUN_PREFIX + "*"):
        try:
            os.kill(int((folder / "pid").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):  # not ours to judge (no pid yet, another user's): leave it
            pass


_sweep_dead_runs()
RUN_DIR = Path(tempfile.mkdtemp(prefix=_RUN_PREFIX))
(RUN_DIR / "pid").write_text(str(os.getpid()))
atexit.register(shutil.rmtree, RUN_DIR, True)
_home = RUN_DIR / "home"
os.environ.update({
    "LIVENESS_CACHE_DIR": str(RUN_DIR / "cache"), "LIVENESS_LOG_DIR": str(RUN_DIR / "logs"), "HOME": str(_home),
    "XDG_CACHE_HOME": str(_home / ".cache"), "XDG_CONFIG_HOME": str(_home / ".config"),
    "XDG_DATA_HOME": str(_home / ".local" / "share"), "XDG_STATE_HOME": str(_home / ".local" / "state"),
    "TORCHINDUCTOR_CACHE_DIR": str(RUN_DIR / "torchinductor")})  # torch.export makes $TMPDIR/torchinductor_$USER
os.environ.setdefault("LIVENESS_BACKGROUND_BUILDS", "0")  # no detached int8 builds (test_runtime starts one)
for _name in ("cache", "logs", "home"):
    (RUN_DIR / _name).mkdir()
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MANIFEST = SHARED / "data" / "faces" / "manifest.csv"


@pytest.fixture
def shared_manifest() -> Path:
    if not MANIFEST.is_file():
        pytest.skip("../shared/data is not present")
    return MANIFEST


# --- real-time pipeline fixtures (shared: the project root on sys.path, a tiny checkpoint, a face clip) ---
import sys  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import liveness_app, models` whichever way pytest is started
# the tests folder mirrors the packages (tests/models, tests/models/training, tests/models/deploy,
# tests/liveness_app, .../ops, .../ui); their shared helpers (media.py) live here, at its top
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(1, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised "test-tiny" La-SoftMoE CLIP checkpoint (32 px input), written once per session."""
    import models

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return models.save_checkpoint(path, models.create_model("test-tiny"))


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory: pytest.TempPathFactory):
    """A 24-frame 480x360 mp4v clip of a real portrait moving and growing; returns (path, placements)."""
    from media import make_face_video

    path = tmp_path_factory.mktemp("media") / "face.mp4"
    placements = make_face_video(path, frames=24, fps=12.0)
    return path, placements


@pytest.fixture(autouse=True)
def _collect_qt_garbage_on_the_main_thread():
    """Finalise a test's Qt wrappers on the main thread, right after it.

    Left to the cyclic GC, a window or worker of an earlier test can be finalised on whatever thread happens to
    trigger a collection (a subprocess log reader in tests/liveness_app/ui/test_ui_process.py did), and destroying Qt objects off
    their thread crashes the interpreter (a segfault of the whole run, seen in CI).
    """
    yield
    if "PySide6.QtWidgets" in sys.modules:
        import gc

        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.processEvents()
        gc.collect()
        if app is not None:
            app.processEvents()
