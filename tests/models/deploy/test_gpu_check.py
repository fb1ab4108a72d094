"""scripts/gpu_check.py stays importable and runs its plumbing on the CPU (its GPU figures need a lent GPU)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_imports_and_runs_its_plumbing_on_the_cpu(tmp_path, capsys):
    gc = load_gpu_check()
    assert gc.bf16_peak("NVIDIA H200", None) == 989.0
    out = tmp_path / "g.json"
    code = gc.main(["--config", "test-tiny", "--allow-cpu", "--batches", "1,2", "--warmup", "1", "--repeats", "2",
                    "--no-launch", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    row = res["variants"]["torch cpu fp32 (plumbing)"]
    assert row["agrees"] and row["precision"] == "fp32" and row["batch_2"]["crops_per_s"] > 0
    assert "b1" in capsys.readouterr().out
