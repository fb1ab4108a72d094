import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# backends cache exported models (models/deploy/runtime.py): never touch the user's cache folder from tests
import atexit, shutil, tempfile  # noqa: E401,E402
os.environ["LIVENESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="liveness-test-cache-")
atexit.register(shutil.rmtree, os.environ["LIVENESS_CACHE_DIR"], True)
# ... nor its log folder (liveness_app/ops/logs.py)
os.environ["LIVENESS_LOG_DIR"] = tempfile.mkdtemp(prefix="liveness-test-logs-")
atexit.register(shutil.rmtree, os.environ["LIVENESS_LOG_DIR"], True)
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
    trigger a collection (a subprocess log reader in tests/test_ui_process.py did), and destroying Qt objects off
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


def pytest_collection_modifyitems(config, items):
    """Run the real-process GUI tests first: late in a full run, with the threads and native libraries earlier
    tests leave behind (OpenVINO, mediapipe, Qt), the pytest process itself crashed while they ran (CI)."""
    items.sort(key=lambda item: 0 if item.path.name == "test_ui_process.py" else 1)
