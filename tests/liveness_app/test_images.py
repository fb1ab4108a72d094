"""``--images``: real portraits scored one by one with the bundled model, records per image, CSV, stdout, summary."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from liveness_app.cli import main
from media import background, face_image

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--backend", "torch"]  # the bundled model on torch: no OpenVINO export per test


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """hopper.jpg, a copy in sub/ (for --recursive), blank.png (no face), broken.jpg (not an image), notes.txt."""
    folder = tmp_path_factory.mktemp("photos")
    portrait = background(480, 440, seed=2).copy()
    portrait[20:420, 40:440] = face_image("grace_hopper")
    cv2.imwrite(str(folder / "hopper.jpg"), portrait)
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "hopper_small.png"), cv2.resize(portrait, (240, 220)))
    cv2.imwrite(str(folder / "blank.png"), background(320, 240, seed=5))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, ignored in folders")
    return folder


def read_jsonl(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_a_folder_gives_one_record_per_image_and_a_summary(photos, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(["--images", str(photos), "--output", str(out)] + BASE) == 0
    recs = {Path(r["path"]).name: r for r in read_jsonl(out)}
    assert set(recs) == {"hopper.jpg", "blank.png", "broken.jpg"}  # sorted folder listing, not sub/, not .txt
    hopper = recs["hopper.jpg"]
    assert (hopper["width"], hopper["height"]) == (480, 440) and "reason" not in hopper
    assert len(hopper["faces"]) == 1
    face = hopper["faces"][0]
    assert set(face) == {"box", "p_attack", "verdict", "detector_confidence", "quality"}
    assert face["verdict"] == ("attack" if face["p_attack"] >= 0.67 else "live")  # the bundled model's threshold
    assert recs["blank.png"]["faces"] == [] and recs["blank.png"]["reason"] == "no face found"
    assert recs["broken.jpg"]["faces"] == [] and "cannot decode" in recs["broken.jpg"]["reason"]
    stdout = capsys.readouterr().out
    assert "images            3 (2 read, 1 unreadable)" in stdout
    assert "faces             1 (live" in stdout and "no face found     1 of 3 images" in stdout
    assert f"records           {out} (3 images, jsonl)" in stdout


def test_every_image_is_scored_on_its_own(photos, tmp_path):
    """The same photo three times gives three identical records: no track, no smoothing carried between images
    (a folder as --source is one video; --images is not)."""
    paths = [str(photos / "hopper.jpg")] * 3
    out = tmp_path / "same.jsonl"
    assert main(["--images", *paths, "--output", str(out)] + BASE) == 0
    recs = read_jsonl(out)
    assert len(recs) == 3 and recs[0]["faces"] == recs[1]["faces"] == recs[2]["faces"]
    assert "track" not in recs[0]["faces"][0] and "smoothed" not in recs[0]["faces"][0]


def test_recursive_csv_and_stdout(photos, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["--images", str(photos), "--recursive", "--output", str(out)] + BASE) == 0
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["blank.png", "broken.jpg", "hopper.jpg", "hopper_small.png"]
    by = {Path(r["path"]).name: r for r in rows}
    assert by["hopper.jpg"]["verdict"] in ("live", "attack") and by["hopper.jpg"]["face"] == "0"
    assert by["blank.png"]["reason"] == "no face found" and by["blank.png"]["verdict"] == ""
    capsys.readouterr()
    assert main(["--images", str(photos / "hopper.jpg"), "--output", "-"] + BASE) == 0
    cap = capsys.readouterr()
    recs = [json.loads(x) for x in cap.out.splitlines()]  # standard output holds only the records
    assert len(recs) == 1 and recs[0]["path"].endswith("hopper.jpg")
    assert "image summary" in cap.err and "image summary" not in cap.out


def test_nothing_readable_exits_2_and_bad_paths_are_one_line(photos, tmp_path, capsys):
    out = tmp_path / "bad.jsonl"
    assert main(["--images", str(photos / "broken.jpg"), str(tmp_path / "gone.png"), "--output", str(out)]
                + BASE) == 2
    err = capsys.readouterr().err
    assert "error: none of the 2 images could be read" in err
    reasons = [r["reason"] for r in read_jsonl(out)]
    assert any("image not found" in r for r in reasons) and any("cannot decode" in r for r in reasons)
    (tmp_path / "empty").mkdir()
    for args, words in ((["--images", str(tmp_path / "empty")], ["no images", "empty", "--recursive"]),
                        (["--images", str(tmp_path / "nowhere")], ["image not found", "nowhere"]),
                        (["--recursive", "--source", "x.mp4"], ["--recursive", "--images"]),
                        (["--images", str(photos), "--source", "x.mp4"], ["cannot be combined", "--source"]),
                        (["--images", str(photos), "--demo", "--loop"], ["--demo, --loop"])):
        assert main(args + BASE) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines


def test_progress_bar_only_on_a_terminal():
    from liveness_app.images import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        p = Progress(5, stream)
        for i in range(1, 6):
            p.update(i, f"img{i}.jpg")
        p.finish()
    assert "5/5" in tty.getvalue() and "[" + "#" * 30 + "]" in tty.getvalue()
    assert log.getvalue() == ""  # piped / redirected: no carriage-return noise
    assert Progress(1, tty).enabled is False  # a single image needs no bar
    assert Progress(5, tty, enabled=False).enabled is False


def test_main_py_images_prints_records_and_summary_from_another_folder(photos, tmp_path):
    """A fresh clone's ``python main.py --images FOLDER`` run from elsewhere: records on stdout, summary on stderr,
    none of the native log lines mediapipe prints by default."""
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--images", str(photos), *BASE],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(recs) == 3 and sum(len(r["faces"]) for r in recs) == 1
    assert "image summary" in proc.stderr
    for noise in ("INFO: [", "W0000", "Logging before InitGoogle", "XNNPACK"):
        assert noise not in proc.stderr, proc.stderr
