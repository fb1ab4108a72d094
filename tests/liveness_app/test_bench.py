"""Smoke test of the benchmark on the tiny config (correctness of its report, never its timings)."""
import json

import pytest
import torch

from liveness_app import bench


def test_bench_reports_every_stage_backend_and_memory(tmp_path, capsys):
    out = tmp_path / "bench.json"
    backends = ["torch", "onnxruntime"] + ([] if torch.cuda.is_available() else ["cuda"])
    code = bench.main(["--model", "test-tiny", "--frames", "4", "--warmup", "2", "--repeats", "3",
                       "--min-seconds", "0", "--batches", "1,3", "--backends", ",".join(backends),
                       "--e2e-backend", "openvino", "--launch-runs", "2",  # fp32: no int8 build in a test
                       "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    res = json.loads(out.read_text())
    e2e = res["e2e"]
    assert "error" not in e2e, e2e
    assert e2e["size"] == [640, 480] and e2e["frames"] == 4 and e2e["warmup_frames"] == 2
    assert e2e["frames_scored"] == 1.0 and e2e["faces_per_frame"] == 1.0  # one real face, found and scored
    assert set(e2e["stages_ms"]) == set(bench.STAGES)
    for st in e2e["stages_ms"].values():
        assert st["n"] == 4 and 0 <= st["median"] <= st["p95"]
    assert e2e["stages_ms"]["score"]["median"] > 0 and e2e["stages_ms"]["detect"]["median"] > 0
    assert e2e["fps"] > 0 and e2e["backend"].endswith("-cpu")
    for name in ("torch", "onnxruntime"):
        row = res["backends"][name]
        assert set(row["batches"]) == {"1", "3"}
        assert row["max_abs_diff_vs_eager_fp32"] <= row["tolerance"]
        for b, r in row["batches"].items():
            assert r["crops_per_s"] == pytest.approx(1e3 * int(b) / r["median_ms"])
    assert res["backends"]["torch"]["speedup_vs_torch"]["1"] == pytest.approx(1.0)
    if "cuda" in backends:
        assert "no CUDA GPU" in res["backends"]["cuda"]["error"]
        assert "cuda" in table and "unavailable" in table
    assert res["peak_rss_mb"]["after_e2e"] > 100 and res["peak_rss_mb"]["end"] > 100  # MiB: torch alone is more
    for word in ("decode", "detect", "track", "crop", "score", "smooth", "frames/s", "crops/s", "peak RSS"):
        assert word in table
    # launch to first verdict: a cold start, then a second one on the cache it left, stage by stage
    launch = res["launch"]
    assert [r["run"] for r in launch] == ["cold", "start 2"]
    for r in launch:
        assert "error" not in r, r
        st = r["stages_s"]
        assert list(st) == ["imports", "model and backend", "source and detector", "first verdict"]
        assert 0 < st["imports"] <= st["model and backend"] <= st["first verdict"] == r["first_verdict_s"]
    assert "launch to first verdict" in table and "first verdict" in table
    # the targets, judged on this run's figures (the tiny model's, so which way each goes is not asserted)
    assert [r["target"].split(" <=")[0].split(" >=")[0] for r in res["targets"]] == [t[0] for t in bench.TARGETS]
    assert "targets" in table and "batch 1, fastest CPU backend <= 3 ms/crop" in table


def test_bench_rejects_a_missing_video(tmp_path, capsys):
    code = bench.main(["--model", "test-tiny", "--backends", "torch", "--video", str(tmp_path / "none.mp4"),
                       "--repeats", "1", "--min-seconds", "0", "--batches", "1", "--warmup", "0"])
    assert code == 0  # the model part still runs; the end-to-end row says why it did not
    assert f"video not found: {tmp_path / 'none.mp4'}" in capsys.readouterr().out


def test_stats_are_median_and_p95():
    s = bench.stats([float(v) for v in range(1, 101)])
    assert s["median"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05) and s["n"] == 100


def test_model_part_times_the_backends_in_interleaved_rounds(monkeypatch):
    """Every backend is built first, then timed round by round, so a slow spell of the machine is shared."""
    from models.checkpoint import load_model
    from models.deploy import runtime as rt

    order = []

    class Fake:
        def __init__(self, name):
            self.name, self.device, self.tolerance, self.precision, self.agreement = name, "cpu", 1.0, "fp32", None

        def __call__(self, x):
            order.append((self.name, x.shape[0]))
            return torch.zeros(x.shape[0]).numpy()

    monkeypatch.setattr(rt, "create_runtime", lambda ck, name, **kw: Fake(name))
    res = bench.bench_model(load_model("test-tiny"), ["a", "b"], [1, 2], warmup=1, repeats=6, min_seconds=0, rounds=3)
    timed = [o for o in order if o != ("a", 8) and o != ("b", 8)]  # drop the start-up check batch
    runs = [timed[0][0]] + [n for (n, _), (m, _) in zip(timed[1:], timed[:-1]) if n != m]
    assert runs == ["a", "b"] * 3  # a, b, a, b, a, b: three interleaved rounds
    for name in ("a", "b"):
        assert res[name]["batches"]["1"]["crops_per_s"] > 0 and res[name]["batches"]["2"]["ms_per_crop"] > 0


def _result(cold: float, second: list[float], b1: dict, b8: dict, fps: float, scored: float = 1.0) -> dict:
    launch = [{"run": "cold", "first_verdict_s": cold, "stages_s": {}}]
    launch += [{"run": f"start {k + 2}", "first_verdict_s": t, "stages_s": {}} for k, t in enumerate(second)]
    backends = {name: {"runtime": f"{name}-cpu", "device": "cpu",
                       "batches": {"1": {"ms_per_crop": b1[name]}, "8": {"crops_per_s": b8[name]}}} for name in b1}
    backends["cuda"] = {"runtime": "cuda", "device": "cuda",  # a GPU row never counts as the CPU figure
                        "batches": {"1": {"ms_per_crop": 0.5}, "8": {"crops_per_s": 9000.0}}}
    backends["openvino-bf16"] = {"error": "decision-agreement guard failed"}
    return {"launch": launch, "backends": backends, "e2e": {"fps": fps, "frames_scored": scored,
                                                             "backend": "openvino-int8-cpu"}}


def test_targets_say_met_or_by_how_much_missed():
    res = _result(4.9, [1.3, 1.2], {"torch": 14.0, "openvino-int8": 3.3}, {"torch": 110.0, "openvino-int8": 400.0},
                  130.0)
    rows = {r["target"]: r for r in bench.check_targets(res)}
    assert rows["second start, headless first verdict <= 2 s"]["measured"] == pytest.approx(1.25)
    assert rows["second start, headless first verdict <= 2 s"]["status"] == "met"
    assert rows["cold start, headless first verdict <= 6 s"]["status"] == "met"
    b1 = rows["batch 1, fastest CPU backend <= 3 ms/crop"]
    assert b1["measured"] == 3.3 and b1["note"] == "openvino-int8-cpu" and b1["status"] == "missed by 10 %"
    b8 = rows["batch 8, fastest CPU backend >= 500 crops/s"]
    assert b8["measured"] == 400.0 and b8["status"] == "missed by 20 %"
    assert rows["end to end, every frame scored >= 40 frames/s"]["status"] == "met"
    # slower than the bounds the other way round; frames left unscored do not count as frames/s
    res = _result(7.5, [2.5], {"torch": 2.0}, {"torch": 600.0}, 90.0, scored=0.9)
    rows = {r["target"]: r for r in bench.check_targets(res)}
    assert rows["cold start, headless first verdict <= 6 s"]["status"] == "missed by 25 %"
    assert rows["second start, headless first verdict <= 2 s"]["status"] == "missed by 25 %"
    assert rows["batch 1, fastest CPU backend <= 3 ms/crop"]["status"] == "met"
    assert rows["batch 8, fastest CPU backend >= 500 crops/s"]["status"] == "met"
    assert rows["end to end, every frame scored >= 40 frames/s"]["status"] == "not measured in this run"
    # nothing measured (--no-launch --no-e2e and no backend): every target says so
    assert {r["status"] for r in bench.check_targets({"backends": {}})} == {"not measured in this run"}
