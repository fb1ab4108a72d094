"""scripts/peer_bench.py: the replica's networks are the published MiniFASNet sizes, its crop rule, and one short
interleaved run against the app's pipeline (its timings are not asserted)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("peer_bench", ROOT / "scripts" / "peer_bench.py")
peer = importlib.util.module_from_spec(_spec)
sys.modules["peer_bench"] = peer
_spec.loader.exec_module(peer)


def _macs(net: torch.nn.Module) -> int:
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        assert net(torch.rand(1, 3, 80, 80) * 255).shape == (1, 3)
    for h in handles:
        h.remove()
    return total


def test_replica_networks_have_the_published_size_and_cost():
    # Silent-Face publishes 0.435 M parameters and 0.081 GFLOPs (2 x MACs) at 80 x 80 for MiniFASNetV2
    v2, v1se = peer.build("MiniFASNetV2"), peer.build("MiniFASNetV1SE")
    assert sum(p.numel() for p in v2.parameters()) == pytest.approx(0.435e6, rel=0.005)
    assert 2 * _macs(v2) == pytest.approx(0.081e9, rel=0.02)
    assert 2 * _macs(v1se) == pytest.approx(0.081e9, rel=0.02)
    # squeeze-and-excitation only in V1SE, at the end of each of its three residual stages
    n_se = lambda net: sum(isinstance(m, torch.nn.Sigmoid) for m in net.modules())  # noqa: E731
    assert n_se(v2) == 0 and n_se(v1se) == 3


def test_crop_rule_scales_about_the_centre_and_stays_inside_the_frame():
    assert peer.crop_box((480, 640), (300, 200, 40, 40), 2.7) == (266, 166, 374, 274)  # 108 px about the centre
    x0, y0, x1, y1 = peer.crop_box((480, 640), (10, 10, 100, 100), 2.7)  # near the corner: shifted inside
    assert (x0, y0) == (0, 0) and x1 - x0 == 270 and y1 - y0 == 270
    x0, y0, x1, y1 = peer.crop_box((480, 640), (200, 100, 300, 300), 4.0)  # too big: scale cut to fit
    assert y0 == 0 and y1 == 479 and x1 <= 639


def test_interleaved_run_reports_both_pipelines_and_their_ratio(tmp_path, capsys):
    out = tmp_path / "peer.json"
    assert peer.main(["--model", "test-tiny", "--backend", "torch", "--frames", "3", "--warmup", "3",
                      "--rounds", "2", "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["rounds"]) == 2 and all(r["frames"] == 3 for r in res["rounds"])
    assert all(r["ours_scored"] == 1.0 and r["peer_scored"] == 1.0 for r in res["rounds"])  # the real face found
    assert res["ratio"] == pytest.approx(res["ours_fps"] / res["peer_fps"]) and res["peer_fps"] > 0
    for r in res["rounds"]:
        assert set(r["peer_stages_ms"]) == {"decode", "detect", "score"} and r["peer_stages_ms"]["score"] > 0
        assert r["ours_stages_ms"]["score"] > 0 and r["ours_stages_ms"]["detect"] > 0
    out = capsys.readouterr().out
    assert "replica" in out and "detect" in out


def test_missing_video_is_a_clear_error(tmp_path, capsys):
    assert peer.main(["--video", str(tmp_path / "none.mp4"), "--frames", "1"]) == 2
    assert "video not found" in capsys.readouterr().err
