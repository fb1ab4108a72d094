"""python -m models.evaluate on real face crops (a portrait and transformed copies) with a tiny checkpoint."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import matplotlib.cbook as cbook
import numpy as np
import pytest
import torch

import models
from models.training import augment, evaluate
from models.training import metrics as M

ROOT = Path(__file__).resolve().parents[3]


def _portrait() -> np.ndarray:
    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # 600 x 512 RGB


def _crop(img: np.ndarray, x: int, y: int, side: int, size: int = 160) -> np.ndarray:
    return cv2.resize(img[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 crops in three sources: 'cam' (live + print), 'web' (live only), 'gen' (gan, attack only); a 160 px
    manifest like shared/data's and a 32 px copy (the tiny model's input size, so no resize is involved)."""
    root = tmp_path_factory.mktemp("faces")
    img = _portrait()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):  # live webcam-like crops: the face at slightly different places and sizes
        rows.append((_crop(img, 40 + 8 * i, 30 + 5 * i, 420 - 10 * i), 0, "none", "cam", "cam-1"))
    for i in range(4):  # print attacks: print colour reproduction + a little defocus
        c = augment.colour_distortion(_crop(img, 50 + 6 * i, 40, 400), rng, kind="print")
        rows.append((augment.gaussian_blur(c, rng, (1.0, 1.5)), 1, "print", "cam", "cam-1"))
    for i in range(3):  # live web photos: flipped, brighter
        c = _crop(img, 30 + 10 * i, 20, 440)[:, ::-1]
        rows.append((np.clip(c.astype(int) + 20 * i, 0, 255).astype(np.uint8), 0, "none", "web", f"web-{i}"))
    for i in range(3):  # synthetic faces: self-blended
        rows.append((augment.self_blend(_crop(img, 45, 35 + 5 * i, 410), rng), 1, "gan", "gen", "gen"))
    out = {}
    for size in (160, 32):
        d = root / f"px{size}"
        (d / "img").mkdir(parents=True)
        with open(d / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "attack_type", "source", "group"])
            for k, (c, label, at, src, grp) in enumerate(rows):
                c = c if size == 160 else cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
                rel = f"img/{src}_{k:02d}.{'jpg' if size == 160 else 'png'}"  # png: lossless, exact comparison
                assert cv2.imwrite(str(d / rel), cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2BGR))
                w.writerow([rel, label, at, src, grp])
        out[size] = d / "manifest.csv"
    torch.manual_seed(0)
    out["ckpt"] = models.save_checkpoint(root / "t.safetensors", models.create_model("test-tiny"), threshold=0.5)
    return out


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """main(--threads N) sets torch's global thread count: restore it for the rest of the session."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _read_scores(path: Path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # scores were written with 9 significant digits: parsed as float32 they are exactly what was scored
    scores = np.array([np.float32(r["score"]) for r in rows], dtype=np.float32)
    return rows, scores


def _approx_equal(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _approx_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and a == pytest.approx(b, abs=1e-9), path
    else:
        assert a == b, path


def test_cli_subprocess_report_plots_and_scores(dataset, tmp_path):
    report, plots, scores_csv = tmp_path / "r.json", tmp_path / "plots", tmp_path / "scores.csv"
    env = dict(os.environ, LIVENESS_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "models.training.evaluate", "--model", str(dataset["ckpt"]),
                           "--manifest", str(dataset[160]), "--report", str(report), "--plots", str(plots),
                           "--scores-csv", str(scores_csv), "--backend", "torch", "--threads", "1",
                           "--batch-size", "5", "--workers", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for row in ("pooled", "source cam", "source web", "source gen", "type print", "type gan"):
        assert row in out, out
    rep = json.loads(report.read_text())
    assert rep["threshold"] == 0.5 and rep["threshold_origin"].startswith("checkpoint")
    assert rep["config"] == "test-tiny" and rep["backend"] == "torch-cpu"
    assert rep["data"]["scored"] == 16 and rep["data"]["unreadable"] == 0
    # every PNG is a real image
    names = {Path(p).name for p in rep["plots"]}
    assert names == {"roc.png", "det.png", "hist.png", "hist_per_source.png"}
    for n in names:
        im = cv2.imread(str(plots / n))
        assert im is not None and im.shape[0] > 200 and im.shape[1] > 200 and im.std() > 5, n
    # the JSON metrics are models.training.metrics.report of the scores CSV, and the CSV joins with the manifest
    rows, scores = _read_scores(scores_csv)
    with open(dataset[160], newline="") as f:
        man = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [m["path"] for m in man]
    assert [int(r["label"]) for r in rows] == [int(m["label"]) for m in man]
    assert np.all((scores >= 0) & (scores <= 1))
    labels = np.array([int(r["label"]) for r in rows])
    want = M.report(labels, scores, 0.5, sources=[r["source"] for r in rows],
                    attack_types=[r["attack_type"] for r in rows])
    _approx_equal(rep["metrics"], want)
    # single-class sources report what is defined and null the rest
    web, gen = rep["metrics"]["per_source"]["web"], rep["metrics"]["per_source"]["gen"]
    assert web["bpcer"] is not None and web["apcer"] is None and web["auc"] is None and web["n_attack"] == 0
    assert gen["apcer"] is not None and gen["bpcer"] is None and gen["eer"] is None and gen["n_live"] == 0
    # and the counts are right: 9 live, 7 attacks
    assert (rep["metrics"]["pooled"]["n_live"], rep["metrics"]["pooled"]["n_attack"]) == (9, 7)
    # the APCER in the JSON is the share of attacks below the threshold in the CSV
    assert rep["metrics"]["pooled"]["apcer"] == pytest.approx(np.mean(scores[labels == 1] < 0.5))


def test_scores_equal_direct_model_output(dataset, tmp_path, monkeypatch):
    """At the model's own input size (no resize) the CLI's scores are the scorer's output on
    models.preprocess of the RGB crops: channel order, normalisation and row order are right."""
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    sc = tmp_path / "s.csv"
    assert evaluate.main(["--model", str(dataset["ckpt"]), "--manifest", str(dataset[32]), "--scores-csv", str(sc),
                          "--backend", "torch", "--batch-size", "3", "--threads", "1"]) == 0
    rows, scores = _read_scores(sc)
    ck = models.load_checkpoint(dataset["ckpt"])
    crops = [cv2.cvtColor(cv2.imread(str(dataset[32].parent / r["path"])), cv2.COLOR_BGR2RGB) for r in rows]
    with torch.inference_mode():
        want = ck.model.scorer()(torch.from_numpy(models.preprocess(crops, ck.preprocessing))).numpy()
    np.testing.assert_allclose(scores, want, atol=1e-5)
    # a channel swap would change them: the check above can fail
    with torch.inference_mode():
        swapped = ck.model.scorer()(torch.from_numpy(models.preprocess([c[:, :, ::-1].copy() for c in crops],
                                                                         ck.preprocessing))).numpy()
    assert np.abs(swapped - want).max() > 1e-4


def test_threshold_override_and_limit(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    r = tmp_path / "r.json"
    assert evaluate.main(["--model", str(dataset["ckpt"]), "--manifest", str(dataset[32]), "--report", str(r),
                          "--backend", "torch", "--threshold", "0.3", "--limit", "12", "--threads", "1"]) == 0
    rep = json.loads(r.read_text())
    assert rep["threshold"] == 0.3 and rep["threshold_origin"] == "--threshold"
    assert rep["checkpoint_threshold"] == 0.5 and rep["metrics"]["threshold"] == 0.3
    assert rep["data"]["scored"] == 12 and rep["data"]["rows_in_input"] == 16 and rep["data"]["limit"] == 12
    assert set(rep["metrics"]["per_source"]) == {"cam", "web"}  # the first 12 rows hold no 'gen' crop
    assert "threshold 0.3 (--threshold)" in capsys.readouterr().out


def test_protocol_list_input(dataset, tmp_path, monkeypatch):
    """A UniAttackData-style list with the live = 1 convention: labels come out as attack = 1."""
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    root = dataset[32].parent
    with open(dataset[32], newline="") as f:
        man = list(csv.DictReader(f))
    lst = tmp_path / "p1_test.txt"
    lst.write_text("".join(f"{m['path']} {1 - int(m['label'])}\n" for m in man))
    r, sc = tmp_path / "r.json", tmp_path / "s.csv"
    assert evaluate.main(["--model", str(dataset["ckpt"]), "--protocol", str(lst), "--root", str(root),
                          "--live-label", "1", "--report", str(r), "--scores-csv", str(sc), "--backend", "torch",
                          "--threads", "1"]) == 0
    rep = json.loads(r.read_text())
    assert (rep["metrics"]["pooled"]["n_live"], rep["metrics"]["pooled"]["n_attack"]) == (9, 7)
    assert rep["data"]["live_label"] == 1 and list(rep["metrics"]["per_source"]) == ["p1_test"]
    rows, _ = _read_scores(sc)
    assert [int(x["label"]) for x in rows] == [int(m["label"]) for m in man]
    assert [x["path"] for x in rows] == [m["path"] for m in man]
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(dataset["ckpt"]), "--protocol", str(lst)])  # no --root / --live-label


def test_unreadable_images_are_named(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    man = tmp_path / "manifest.csv"
    src = dataset[32].read_text().splitlines()
    man.write_text("\n".join(src + ["img/missing.png,1,print,cam,cam-1"]) + "\n")
    for p in (dataset[32].parent / "img").iterdir():
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / p.name).write_bytes(p.read_bytes())
    args = ["--model", str(dataset["ckpt"]), "--manifest", str(man), "--backend", "torch", "--threads", "1"]
    assert evaluate.main(args) == 1
    assert "missing.png" in capsys.readouterr().err
    r = tmp_path / "r.json"
    assert evaluate.main(args + ["--skip-unreadable", "--report", str(r)]) == 0
    rep = json.loads(r.read_text())
    assert rep["data"]["unreadable"] == 1 and rep["data"]["scored"] == 16
    assert evaluate.main(["--model", str(tmp_path / "nope.safetensors"), "--manifest", str(man)]) == 1
    assert "nope.safetensors" in capsys.readouterr().err
