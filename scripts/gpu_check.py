"""One-shot GPU check of the ``cuda`` (and, where it imports, ``tensorrt``) backend on the paper model.

    python scripts/gpu_check.py                      # ViT-B-16 La-SoftMoE, batches 1/16/64, JSON to $OUT
    python scripts/gpu_check.py --no-compile         # skip the torch.compile variant (saves ~1-2 min)
    python scripts/gpu_check.py --model assets/liveness_default.safetensors --batches 1,8,16   # the bundled model
    python scripts/gpu_check.py --config test-tiny --allow-cpu   # plumbing smoke test without a GPU

For each variant (fp16 eager, fp16 + CUDA graphs, bf16 + CUDA graphs, fp16 + torch.compile + CUDA graphs,
TensorRT FP16 when torch-tensorrt imports; TensorRT INT8 is listed but not built, see below) it reports
batch-1 latency (median / p95 ms, host array in, host probabilities out), crops/s at each batch, max
|P - P_cpu_fp32| against torch eager fp32 on the CPU, the decision-agreement guard that the app applies to
every reduced-precision runtime (models/deploy/runtime.py: same live / attack decision as CPU eager fp32 on >= 99.5 %
of the shipped agreement crops, |dP| <= 0.02; the threshold is the checkpoint's, or for fresh weights the
median eager score on those crops, so that many sit near it), and the achieved FLOP rate as a fraction of the
GPU's dense bf16 peak (FLOPs per crop from models.training.info.image_flops: 2 x multiply-adds). The scorer is built
with its routing outputs, as the app exports it. Last, unless ``--no-launch``, launch to first verdict of the
headless app on this machine (a cold start, then a second start; liveness_app.bench.launch_to_first_verdict).
Results go to stdout and to JSON (``--json``, default $OUT/gpu_check.json when $OUT is set), written after
every variant so a time-out keeps what was measured. Fresh weights (MoE gates opened so the branch
contributes) unless ``--model``: speed does not depend on the values.

TensorRT INT8 needs an explicitly quantised graph (NVIDIA ModelOpt Q/DQ nodes calibrated on the agreement
crops); that path is not written, so the variant reports "not implemented" instead of a number.
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


def measure(runtime, batches, ref_x, ref_p, flops_per_crop, peak, warmup, repeats, guard=None) -> dict:
    row = {"runtime": runtime.name, "device": runtime.device, "precision": runtime.precision,
           "max_abs_diff_vs_cpu_fp32": float(np.abs(runtime(ref_x) - ref_p).max()), "tolerance": runtime.tolerance}
    if guard is not None and runtime.reduced_precision:  # the app's start-up check of reduced precision
        x, p_ref, thr = guard
        a = rt.Agreement(runtime(x), p_ref, thr)
        row["agreement"] = a.as_dict()
        row["agrees"] = a.passed
    else:
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
    ap.add_argument("--model", help="a checkpoint instead of --config (e.g. assets/liveness_default.safetensors)")
    ap.add_argument("--no-launch", action="store_true", help="skip launch to first verdict")
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
    threshold = None
    if args.model:
        ckpt = models.load_checkpoint(args.model)
        model, threshold = ckpt.model.eval(), float(ckpt.threshold)
    else:
        model = models.create_model(args.config).eval()
        with torch.no_grad():
            for block in model.visual.transformer.resblocks:
                if block.moe is not None:
                    block.moe.gate.fill_(0.5)
    module = model.scorer(routing=model.has_moe).eval()  # as the app exports it: P and the routing
    cfg = model.config
    flops = image_flops(cfg)["total"]
    gpu = torch.cuda.get_device_name(0) if has_cuda else "none"
    peak = bf16_peak(gpu, args.peak_tflops) if has_cuda else args.peak_tflops
    ref_x = example_input(cfg.vision.image_size, 8, seed=42)
    t0 = time.perf_counter()
    with torch.inference_mode():
        ref_p = rt._export.p_attack(module(ref_x)).numpy()  # CPU fp32 eager: the reference
    guard = None
    if rt.DEFAULT_AGREEMENT_CROPS.is_file():
        pre = models.Preprocessing.from_config(cfg)
        gx = rt.agreement_batch(rt.load_agreement_crops(), pre)
        gp = rt.eager_reference(module, gx)
        guard = (gx, gp, threshold if threshold is not None else float(np.median(gp)))
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
        variants.append(("tensorrt int8", None))
    else:
        variants.append(("torch cpu fp32 (plumbing)", lambda: rt.TorchRuntime(module, max_batch)))
    for label, make in variants:
        t0 = time.perf_counter()
        try:
            if make is None:
                raise NotImplementedError("TensorRT INT8 needs a ModelOpt-quantised graph; not written (see --help)")
            runtime = make()
            build_s = time.perf_counter() - t0
            row = measure(runtime, batches, ref_x.numpy(), ref_p, flops, peak, args.warmup, args.repeats, guard)
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
        ag = row.get("agreement")
        check = (f"guard {100 * ag['same_decision']:.1f} % same decision, max|dP| {ag['max_abs_dp']:.1e}"
                 f" ({'pass' if ag['passed'] else 'FAIL'})" if ag else
                 f"max|dP| {row['max_abs_diff_vs_cpu_fp32']:.1e} (tol {row['tolerance']:.0e})")
        print(f"{label:<24} b1 {b1['median_ms']:.2f} ms (p95 {b1['p95_ms']:.2f})  {cells}  {check}"
              + (f"  {100 * frac:.1f} % of bf16 peak at b{max_batch}" if frac is not None else ""))
    if not args.no_launch:
        import tempfile

        from liveness_app.bench import launch_to_first_verdict
        from liveness_app.config import DEMO_VIDEO
        with tempfile.TemporaryDirectory() as tmp:
            launch = launch_to_first_verdict(args.model or "", "auto", Path(DEMO_VIDEO), Path(tmp) / "cache", 2)
        res["launch_to_first_verdict"] = launch
        save()
        for r in launch:
            print(f"launch to first verdict, {r['run']}: "
                  + (f"{r['first_verdict_s']:.2f} s ({r['stages_s']})" if "error" not in r else r["error"]))
    print(f"{cfg.name}: {flops / 1e9:.2f} GFLOPs per crop; GPU {gpu}; bf16 peak {peak} TFLOP/s"
          + (f"; JSON: {json_path}" if json_path else ""))
    ok = any("error" not in r and r["agrees"] for r in res["variants"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
