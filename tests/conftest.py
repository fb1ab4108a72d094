import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MANIFEST = SHARED / "data" / "faces" / "manifest.csv"


@pytest.fixture
def shared_manifest() -> Path:
    if not MANIFEST.is_file():
        pytest.skip("../shared/data is not present")
    return MANIFEST
