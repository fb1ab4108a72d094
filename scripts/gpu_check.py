"""One-shot GPU check of the ``cuda`` (and, where it imports, ``tensorrt``) backend on the paper model.

    python scripts/gpu_check.py                      # ViT-B-16 La-SoftMoE, batches 1/16/64, JSON to $OUT
    python scripts/gpu_check.py --no-compile         # skip the torch.compile variant (saves ~1-2 min)
    python scripts/gpu_check.py --config test-tiny --allow-cpu   # plumbing smoke test without a GPU

For each variant (fp16 eager, fp16 + CUDA graphs, bf16 + CUDA graphs, fp16 + torch.compile + CUDA graphs,
TensorRT FP16 when torch-tensorrt imports) it reports batch-1 latency (median / p95 ms, host array in, host
probabilities out), crops/s at each batch, max |P - P_cpu_fp32| against torch eager fp32 on the CPU, and the
achieved FLOP rate as a fraction of the GPU's dense bf16 peak (FLOPs per crop from models.training.info.image_flops:
2 x multiply-adds). Results go to stdout and to JSON (``--json``, default $OUT/gpu_check.json when $OUT is
set), written after every variant so a time-out keeps what was measured. Fresh weights (MoE gates opened so
the branch contributes): speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from models.deploy import runtime as rt  # noqa: E402
from models.deploy.export import example_input  # noqa: E402
from models.training.info import image_flops  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets (SXM parts).
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                    "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "B200": 2250.0}


def bf16_peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, val in sorted(BF16_PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return val
    return None


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # returns host numpy: includes the device sync and both copies
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(runtime, batches, ref_x, ref_p, flops_per_crop, peak, warmup, repeats) -> dict:
    row = {"runtime": runtime.name, "device": runtime.device,
           "max_abs_diff_vs_cpu_fp32": float(np.abs(runtime(ref_x) - ref_p).max()), "tolerance": runtime.tolerance}
    row["agrees"] = row["max_abs_diff_vs_cpu_fp32"] <= runtime.tolerance
    size = runtime.input_size
    for b in batches:
        x = example_input(size, b, seed=b).numpy()
        t = np.asarray(timed(lambda: runtime(x), warmup, repeats))
        med = float(np.median(t))
        r = {"median_ms": med, "p95_ms": float(np.percentile(t, 95)), "crops_per_s": 1e3 * b / med}
        r["tflops"] = r["crops_per_s"] * flops_per_crop / 1e12
        if peak:
            r["fraction_of_bf16_peak"] = r["tflops"] / peak
        row[f"batch_{b}"] = r
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ViT-B-16", help="model config (default: the paper's ViT-B-16)")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile + CUDA graphs variant")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this GPU, if not in the table")
    ap.add_argument("--allow-cpu", action="store_true", help="no GPU: run the plumbing with torch eager on the CPU")
    ap.add_argument("--json", help="output JSON (default: $OUT/gpu_check.json when $OUT is set)")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    json_path = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)
    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.allow_cpu:
        print("gpu_check: no CUDA GPU (torch.cuda.is_available() is False); --allow-cpu for a plumbing run",
              file=sys.stderr)
        return 2

    torch.manual_seed(0)
    model = models.create_model(args.config).eval()
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            if block.moe is not None:
                block.moe.gate.fill_(0.5)
    module = model.scorer().eval()
    cfg = model.config
    flops = image_flops(cfg)["total"]
    gpu = torch.cuda.get_device_name(0) if has_cuda else "none"
    peak = bf16_peak(gpu, args.peak_tflops) if has_cuda else args.peak_tflops
    ref_x = example_input(cfg.vision.image_size, 8, seed=42)
    t0 = time.perf_counter()
    with torch.inference_mode():
        ref_p = module(ref_x).numpy()  # CPU fp32 eager: the reference
    res = {"config": cfg.name, "gpu": gpu, "torch": torch.__version__,
           "cuda": torch.version.cuda, "flops_per_crop": flops, "bf16_peak_tflops": peak,
           "cpu_fp32_ref_seconds": round(time.perf_counter() - t0, 2), "variants": {}}
    max_batch = max(batches)

    def save() -> None:
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(res, indent=1))

    variants = []
    if has_cuda:
        variants += [("fp16 eager", lambda: rt.CudaRuntime(module, max_batch, torch.half, cuda_graphs=False)),
                     ("fp16 cuda-graphs", lambda: rt.CudaRuntime(module, max_batch, torch.half)),
                     ("bf16 cuda-graphs", lambda: rt.CudaRuntime(module, max_batch, torch.bfloat16))]
        if not args.no_compile:
            variants.append(("fp16 compile+graphs",
                             lambda: rt.CudaRuntime(module, max_batch, torch.half, compile=True)))
        variants.append(("tensorrt fp16", lambda: rt.TensorRTRuntime(module, rt.cache_root(),
                                                                     max_batch=min(max_batch, 64))))
    else:
        variants.append(("torch cpu fp32 (plumbing)", lambda: rt.TorchRuntime(module, max_batch)))
    for label, make in variants:
        t0 = time.perf_counter()
        try:
            runtime = make()
            build_s = time.perf_counter() - t0
            row = measure(runtime, batches, ref_x.numpy(), ref_p, flops, peak, args.warmup, args.repeats)
            row["build_s"] = round(build_s, 1)
            if has_cuda:
                row["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
                torch.cuda.reset_peak_memory_stats()
        except Exception as e:  # noqa: BLE001 - record and go on: one failing variant must not hide the rest
            row = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        res["variants"][label] = row
        runtime = None
        if has_cuda:
            torch.cuda.empty_cache()
        save()
        if "error" in row:
            print(f"{label:<24} error: {row['error']}")
            continue
        cells = "  ".join(f"b{b}: {row[f'batch_{b}']['crops_per_s']:.0f}/s" for b in batches)
        b1 = row["batch_1"] if "batch_1" in row else row[f"batch_{batches[0]}"]
        frac = row[f"batch_{max_batch}"].get("fraction_of_bf16_peak")
        print(f"{label:<24} b1 {b1['median_ms']:.2f} ms (p95 {b1['p95_ms']:.2f})  {cells}  "
              f"max|dP| {row['max_abs_diff_vs_cpu_fp32']:.1e} (tol {row['tolerance']:.0e})"
              + (f"  {100 * frac:.1f} % of bf16 peak at b{max_batch}" if frac is not None else ""))
    print(f"{cfg.name}: {flops / 1e9:.2f} GFLOPs per crop; GPU {gpu}; bf16 peak {peak} TFLOP/s"
          + (f"; JSON: {json_path}" if json_path else ""))
    ok = any("error" not in r and r["agrees"] for r in res["variants"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
