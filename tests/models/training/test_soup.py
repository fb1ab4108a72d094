"""Weight soups: the weighted mean of fine-tunes of one initialisation, written as an ordinary checkpoint."""
from __future__ import annotations

import pytest
import torch

import models
from models.checkpoint import CheckpointError, load_checkpoint, read_metadata
from models.config import get_config
from models.training.soup import average, main, make_soup


def _fine_tune(base, seed: int):
    """A copy of ``base`` with every float tensor moved by seeded noise (a stand-in for a short fine-tune)."""
    model = models.create_model(base.config).eval()
    model.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory):
    torch.manual_seed(0)
    base = models.create_model("test-tiny").eval()
    folder = tmp_path_factory.mktemp("soup")
    paths = []
    for i, thr in enumerate((0.4, 0.6, 0.8)):
        paths.append(models.save_checkpoint(folder / f"ft{i}.safetensors", _fine_tune(base, i), threshold=thr,
                                            data_card={"sources": ["a"], "epoch": 4, "val_metrics": {}}))
    return paths


def test_uniform_soup_is_the_element_wise_mean(ingredients, tmp_path):
    out = make_soup(ingredients, tmp_path / "soup.safetensors")
    soup = load_checkpoint(out)  # strict, checksummed load: an ordinary checkpoint
    states = [load_checkpoint(p).model.state_dict() for p in ingredients]
    for name, t in soup.model.state_dict().items():
        if t.is_floating_point():
            torch.testing.assert_close(t, sum(s[name] for s in states) / 3, rtol=0, atol=1e-6)
    assert soup.threshold == pytest.approx(0.6)
    card = soup.data_card
    assert "val_metrics" not in card and "epoch" not in card and card["sources"] == ["a"]
    assert [s["weights_sha256"] for s in card["soup"]] == [read_metadata(p)["weights_sha256"] for p in ingredients]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # it runs, and it is a different model from each ingredient
        p_soup = soup.model(x)
        assert all(not torch.allclose(p_soup, load_checkpoint(p).model(x)) for p in ingredients)


def test_weights_and_threshold(ingredients, tmp_path):
    out = make_soup(ingredients[:2], tmp_path / "w.safetensors", weights=[3, 1], threshold=0.7)
    soup = load_checkpoint(out)
    a, b = (load_checkpoint(p).model.state_dict() for p in ingredients[:2])
    name = next(k for k, v in a.items() if v.is_floating_point())
    torch.testing.assert_close(soup.model.state_dict()[name], 0.75 * a[name] + 0.25 * b[name], rtol=0, atol=1e-6)
    assert soup.threshold == 0.7
    assert [s["weight"] for s in soup.data_card["soup"]] == [0.75, 0.25]


def test_a_soup_of_one_is_that_checkpoint(ingredients, tmp_path):
    out = make_soup(ingredients[:1], tmp_path / "one.safetensors")
    assert read_metadata(out)["weights_sha256"] == read_metadata(ingredients[0])["weights_sha256"]


def test_different_architectures_are_refused(ingredients, tmp_path):
    d = get_config("test-tiny").to_dict()
    d["name"] = "tiny-wider"
    d["vision"]["width"] *= 2
    other = models.save_checkpoint(tmp_path / "other.safetensors", models.create_model(d))
    with pytest.raises(CheckpointError, match="differs"):
        make_soup([ingredients[0], other], tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_bad_weights_are_refused(ingredients):
    cks = [load_checkpoint(p) for p in ingredients[:2]]
    with pytest.raises(ValueError, match="weights"):
        average(cks, [1])
    with pytest.raises(ValueError, match="positive"):
        average(cks, [0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        average(cks, [2, -1])


def test_cli_reports_errors_without_a_traceback(ingredients, tmp_path, capsys):
    assert main([str(ingredients[0]), str(ingredients[1]), "--out", str(tmp_path / "c.safetensors")]) == 0
    assert (tmp_path / "c.safetensors").is_file()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "d.safetensors")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(ingredients[0]), "--weights", "1", "2", "--out", str(tmp_path / "e.safetensors")])
    assert e.value.code == 2
