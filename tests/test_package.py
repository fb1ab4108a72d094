"""The package as a user installs it: a wheel built offline from this checkout, installed into a fresh venv, used
from a folder outside the checkout (``liveness --check``, ``liveness --images``, the README's API example).

The venv reuses this environment's packages (torch, mediapipe, ...) through a .pth file, so nothing is
downloaded; the checkout itself is not on its path, so assets and code must come from the installed wheel.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import pytest

from media import background, face_image

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                 "runs", "cache", "out")


def copy_checkout(dest: Path) -> Path:
    """The files of the checkout that git would commit (tracked and new, not ignored) copied to ``dest``."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=IGNORED)
        return dest
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def readme_api_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python example under '## Python API'"
    return match.group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("pkg")
    src = copy_checkout(work / "src")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(work / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheels = list((work / "dist").glob("liveness_app-*.whl"))
    assert len(wheels) == 1
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_parent_env.pth").write_text("\n".join(sorted(here)) + "\n")
    inst = subprocess.run([str(vpy), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    elsewhere = work / "elsewhere"  # a folder with no checkout in or above it
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    yield {"venv": venv, "python": vpy, "liveness": venv / "bin" / "liveness", "cwd": elsewhere, "env": env,
           "wheel": wheels[0]}
    # ~150 MB (checkout copy, wheel, venv): removed even when a test failed, which would keep pytest's basetemp
    shutil.rmtree(work, ignore_errors=True)


def test_the_wheel_carries_code_assets_and_the_command(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for required in ("liveness_app/cli.py", "liveness_app/ui/main_window.py", "models/clip.py",
                     "models/model_configs/test-tiny.json", "liveness_app/bundled/liveness_default.safetensors",
                     "liveness_app/bundled/face_detection_short_range.tflite", "liveness_app/bundled/SHA256SUMS",
                     "liveness_app/bundled/bpe_simple_vocab_16e6.txt.gz", "liveness_app/bundled/demo.mp4"):
        assert required in names, required
    assert not any(n.startswith("tests/") for n in names)
    code = ("import liveness_app, models, json\n"
            "from liveness_app.ops.assets import ASSETS_DIR, check_assets\n"
            "from models.tokenizer import VOCAB_PATH\n"
            "print(json.dumps({'pkg': liveness_app.__file__, 'models': models.__file__, 'assets': str(ASSETS_DIR),"
            " 'vocab': str(VOCAB_PATH), 'ok': all(s.ok for s in check_assets())}))")
    proc = subprocess.run([str(installed["python"]), "-c", code], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = json.loads(proc.stdout)
    venv = str(installed["venv"])
    assert all(where[k].startswith(venv) for k in ("pkg", "models", "assets", "vocab")), where
    assert where["ok"]  # the installed assets match their recorded SHA-256


def test_liveness_check_and_images_from_another_folder(installed, tmp_path):
    env, cwd = installed["env"], installed["cwd"]
    check = subprocess.run([str(installed["liveness"]), "--check", "--backend", "torch"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr[-2000:]
    photos = tmp_path / "photos"
    photos.mkdir()
    portrait = background(480, 440, seed=2).copy()
    portrait[20:420, 40:440] = face_image("grace_hopper")
    cv2.imwrite(str(photos / "hopper.jpg"), portrait)
    cv2.imwrite(str(photos / "empty.png"), background(320, 240, seed=4))
    proc = subprocess.run([str(installed["liveness"]), "--images", str(photos), "--backend", "torch"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = {Path(r["path"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(recs["hopper.jpg"]["faces"]) == 1 and recs["empty.png"]["reason"] == "no face found"
    assert "image summary" in proc.stderr and "images            2 (2 read, 0 unreadable)" in proc.stderr
    usage = subprocess.run([str(installed["liveness"]), "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: liveness")


def test_the_readme_api_example_runs_on_the_installed_package(installed):
    portrait = background(480, 440, seed=2).copy()
    portrait[20:420, 40:440] = face_image("grace_hopper")
    cv2.imwrite(str(installed["cwd"] / "photo.jpg"), portrait)
    proc = subprocess.run([str(installed["python"]), "-c", readme_api_example()], cwd=installed["cwd"],
                          env=installed["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip().splitlines()
    assert out and out[0].split()[0] in ("live", "attack"), out
