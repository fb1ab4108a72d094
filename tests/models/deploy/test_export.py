"""Exports of the deployable scorer (dynamic batch 1..16) agree with torch eager; failures are clear and atomic."""
import importlib.abc
import importlib.machinery
import sys

import numpy as np
import pytest
import torch

import models
from models.deploy import export as ex
from models.deploy.runtime import ExportedRuntime, compare_with_eager


def with_active_moe(model: models.LaSoftMoECLIP) -> models.LaSoftMoECLIP:
    """MoE gates start at 0 (the branch adds nothing); open them so exports must carry the MoE path too."""
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            if block.moe is not None:
                block.moe.gate.fill_(0.7)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    model = with_active_moe(models.create_model("test-tiny"))
    return model.scorer().eval()


def eager(module, x):
    with torch.no_grad():
        return module(x).numpy()


def test_moe_branch_is_active_in_the_fixture(tiny):
    import copy
    closed = copy.deepcopy(tiny)
    for block in closed.visual.transformer.resblocks:
        if block.moe is not None:
            block.moe.gate.data.zero_()
    x = ex.example_input(tiny.image_size, 4)
    assert not np.allclose(eager(closed, x), eager(tiny, x), atol=1e-4)


def test_torch_export_matches_eager_at_batch_1_and_7_and_keeps_the_range(tiny, tmp_path):
    out = ex.export_torch(tiny, tmp_path / "scorer.pt2")
    diffs = compare_with_eager(ExportedRuntime("torch-export", out, tiny.image_size), tiny, batches=(1, 7, 16))
    assert max(diffs.values()) < 1e-6, diffs
    mod = torch.export.load(str(out)).module()
    with pytest.raises(Exception):  # the dynamic Dim is bounded at 16
        mod(ex.example_input(tiny.image_size, 17))


def test_bundled_config_is_exportable_with_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    module = with_active_moe(models.create_model("ViT-Ti-16-128")).scorer().eval()
    out = ex.export_torch(module, tmp_path / "scorer.bin")  # any name: the file is read through a buffer
    diffs = compare_with_eager(ExportedRuntime("torch-export", out, module.image_size), module)
    assert set(diffs) == {1, 7} and max(diffs.values()) < 1e-5, diffs


def test_onnx_export_matches_eager_at_batch_1_and_7(tiny, tmp_path):
    import onnx
    out = ex.export_onnx(tiny, tmp_path / "scorer.onnx")
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["p_attack"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    diffs = compare_with_eager(ExportedRuntime("onnx", out, tiny.image_size), tiny)
    assert max(diffs.values()) < 1e-5, diffs


def test_openvino_export_matches_eager(tiny, tmp_path):
    pytest.importorskip("openvino")
    out = ex.export_openvino(tiny, tmp_path / "ir" / "scorer.xml")
    assert out.is_file() and out.with_suffix(".bin").is_file()
    diffs = compare_with_eager(ExportedRuntime("openvino", out, tiny.image_size), tiny, batches=(1, 7, 16))
    assert max(diffs.values()) < 1e-5, diffs


def test_failed_export_leaves_nothing_behind(tiny, tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        ex.export_onnx(tiny, tmp_path / "scorer.onnx", exporter="bogus")
    assert list(tmp_path.iterdir()) == []


class _BrokenTensorRT(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import torch_tensorrt` raise a plain Exception, as the real wheel does without TensorRT's libs."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch_tensorrt":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise Exception("Unable to load libnvinfer.so.10")  # noqa: TRY002 - what torch_tensorrt raises


@pytest.fixture
def broken_tensorrt(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTensorRT()] + sys.meta_path)


def test_tensorrt_import_failure_is_a_clear_export_error(broken_tensorrt, tiny, tmp_path):
    with pytest.raises(ex.ExportError, match="torch-tensorrt is unavailable.*libnvinfer.*requirements-gpu"):
        ex.export_tensorrt(tiny, tmp_path / "scorer.ep")
    assert not (tmp_path / "scorer.ep").exists()


def test_cli_exports_checks_and_reports_failures(broken_tensorrt, tmp_path, capsys):
    ckpt = models.save_checkpoint(tmp_path / "m.safetensors", with_active_moe(models.create_model("test-tiny")))
    assert ex.main(["--model", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "batch 1:" in out and "batch 7:" in out
    diffs = [float(s.split(":")[1].strip().rstrip(",")) for s in out.split("eager|:")[1].split(", ")]
    assert max(diffs) < 1e-5
    assert ex.main(["--model", "test-tiny", "--format", "tensorrt", "--out", str(tmp_path / "m.ep")]) == 2
    assert "torch-tensorrt is unavailable" in capsys.readouterr().err
    assert ex.main(["--model", str(tmp_path / "missing.safetensors"), "--format", "onnx",
                    "--out", str(tmp_path / "x.onnx")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ex.main(["--model", "test-tiny", "--format", "tflite", "--out", str(tmp_path / "x")])
