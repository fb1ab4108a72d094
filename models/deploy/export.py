"""Export the deployable scorer (normalised b 3 S S float32 -> P(attack) b) with a dynamic batch 1..16.

Formats (``python -m models.export --model CKPT_OR_NAME --format FORMAT --out PATH``):

    torch-export  ``torch.export`` ExportedProgram (.pt2): proves the module is convertible; it is what
                  torch-tensorrt's dynamo frontend consumes.
    onnx          ONNX (opset 17) via torch's TorchScript-based exporter (``dynamo=False``): no extra
                  dependency, and its graph ran faster in both ONNX Runtime and OpenVINO than the dynamo
                  exporter's on this model (docs/performance.md).
    openvino      OpenVINO IR (.xml + .bin beside it), converted from the ONNX export, weights kept fp32.
    openvino-int8 OpenVINO IR post-training quantised to int8 with NNCF (``pip install nncf``), the
                  convolutional stem kept fp32 (it is the part reduced precision hurts, docs/performance.md);
                  calibrated on the shipped agreement crops (assets/agreement_crops.jpg, every other crop).
    tensorrt      torch-tensorrt dynamo compile, FP16, engine cache; needs an NVIDIA GPU and TensorRT's
                  libraries, imported lazily so every other format works without them.

A scorer built with ``routing=True`` (``LivenessScorer``) is exported with three outputs, ``p_attack``,
``expert_shares`` (b L n) and ``token_experts`` (b L P n), all with the dynamic batch; otherwise with one.

Every writer is atomic (a temporary name, then ``os.replace``), so a crash never leaves a half-written file
under the real name. ``models/`` stays free of Qt, mediapipe and OpenCV.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..checkpoint import Checkpoint, load_model
from ..clip import LivenessScorer
from ..soft_moe import unrolled_experts
# the batch range and the OpenVINO / ONNX Runtime process settings live in the torch-free engine (a warm start
# runs a cached model without this module)
from .engine import (MAX_BATCH, MIN_BATCH, disable_onnxruntime_telemetry, disable_openvino_telemetry,  # noqa: F401
                     keep_signal_stack)

log = logging.getLogger(__name__)

OPT_BATCH = 8  # TensorRT optimises kernels for this batch inside the range
ONNX_OPSET = 17
FORMATS = ("torch-export", "onnx", "openvino", "openvino-int8", "tensorrt")
# the stem's ops keep fp32 in reduced-precision exports: in bf16 alone it moves P(attack) of the bundled model
# by up to 0.13 on the agreement crops, while any single transformer block in bf16 moves it by < 1e-3
INT8_IGNORED_PATTERNS = (".*/visual/stem/.*",)


class ExportError(RuntimeError):
    """An export that cannot be made here (missing runtime, unsupported option); the message says what to do."""


def p_attack(out) -> torch.Tensor:
    """P(attack) from a scorer's output: the tensor itself, or the first of a routing scorer's triple."""
    return out[0] if isinstance(out, (tuple, list)) else out


def output_names(module: LivenessScorer) -> list[str]:
    return list(LivenessScorer.ROUTING_OUTPUTS) if getattr(module, "routing", False) else ["p_attack"]


def scorer_module(model: "str | Path | Checkpoint", routing: bool = False) -> tuple[LivenessScorer, Checkpoint]:
    """The deployable ``LivenessScorer`` (eval, fp32, CPU) of a checkpoint path, config name or Checkpoint.

    ``routing=True`` gives the module that also returns the routing statistics (MoE models only)."""
    ckpt = model if isinstance(model, Checkpoint) else load_model(model)
    module = ckpt.model.scorer(routing=routing and ckpt.model.has_moe).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module, ckpt


def example_input(size: int, batch: int = 2, device: "str | torch.device" = "cpu",
                  seed: int = 0) -> torch.Tensor:
    """A reproducible normalised input batch b 3 S S (standard normal: the range of normalised pixels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g).to(device)


def export_program(module: LivenessScorer, max_batch: int = MAX_BATCH) -> torch.export.ExportedProgram:
    """``torch.export`` the scorer with a dynamic batch Dim (1..max_batch) on the module's device.

    The example batch is 2, not 1: torch.export specialises a size-1 dimension to the constant 1.
    """
    if not 2 <= max_batch <= 4096:
        raise ValueError(f"max_batch must be in 2..4096, got {max_batch}")
    p = next(module.parameters())
    x = example_input(module.image_size, 2, p.device).to(p.dtype)
    batch = torch.export.Dim("batch", min=MIN_BATCH, max=max_batch)
    with torch.no_grad():
        return torch.export.export(module, (x,), dynamic_shapes=({0: batch},))


def export_torch(module: LivenessScorer, out: "str | Path", max_batch: int = MAX_BATCH) -> Path:
    """Write the ExportedProgram to ``out`` (.pt2, load with ``torch.export.load(out).module()``)."""
    out = Path(out)
    ep = export_program(module, max_batch)
    # a file object: torch.export.save warns on names not ending .pt2 (the temporary name's suffix is .pt2 too)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        torch.export.save(ep, f)
    return out


def export_onnx(module: LivenessScorer, out: "str | Path", opset: int = ONNX_OPSET,
                exporter: str = "legacy") -> Path:
    """Write ONNX with input ``images`` (batch x 3 x S x S, batch dynamic) and output ``p_attack`` (batch).

    ``exporter="legacy"`` (default) is torch's TorchScript-based exporter; ``"dynamo"`` is the torch.export
    based one, which needs the optional ``onnxscript`` package. MoE experts are exported one matmul per expert
    (``soft_moe.unrolled_experts``: the same function, in a form int8 quantisation can quantise).
    """
    out = Path(out)
    x = example_input(module.image_size, 2)
    with atomic_path(out) as tmp, unrolled_experts(module):
        if exporter == "legacy":
            import warnings
            with warnings.catch_warnings(), torch.no_grad():
                # the legacy exporter's deprecation notice and the tracer's note on unpacking q, k, v (whose
                # count, 3, is fixed) say nothing about this model
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                names = output_names(module)
                torch.onnx.export(module, (x,), str(tmp), input_names=["images"], output_names=names,
                                  dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                                  opset_version=opset, dynamo=False)
        elif exporter == "dynamo":
            try:
                import onnxscript  # noqa: F401
            except ImportError as e:
                raise ExportError("the dynamo ONNX exporter needs `pip install onnxscript`; or use the default "
                                  "exporter='legacy'") from e
            prog = torch.onnx.export(export_program(module), dynamo=True, input_names=["images"],
                                     output_names=output_names(module), opset_version=max(opset, 18))
            prog.save(str(tmp))
        else:
            raise ValueError(f"exporter must be 'legacy' or 'dynamo', got {exporter!r}")
        import onnx
        onnx.checker.check_model(str(tmp))
    return out


def export_openvino(module: LivenessScorer, out: "str | Path", max_batch: int = MAX_BATCH) -> Path:
    """Write OpenVINO IR ``out`` (.xml) and its weights (.bin beside it), batch 1..max_batch, fp32 weights.

    Converted from the ONNX export: as fast at inference as converting the ExportedProgram directly (5.1 vs
    5.0 ms per crop, docs/performance.md) and about 3x quicker to build, which is the app's first start.
    ``compress_to_fp16=False`` keeps the weights bit-identical to the checkpoint's.
    """
    disable_openvino_telemetry()
    try:
        import openvino as ov
    except ImportError as e:
        raise ExportError("OpenVINO is not installed: `pip install openvino`") from e
    out = Path(out).with_suffix(".xml")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        ov_model = ov.convert_model(str(export_onnx(module, tmpdir / "model.onnx")))
        s = module.image_size
        ov_model.reshape({0: ov.PartialShape([ov.Dimension(MIN_BATCH, max_batch), 3, s, s])})
        return _save_ir(ov_model, out)  # while the ONNX file it was read from still exists
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _save_ir(model, out: Path) -> Path:
    """Write an OpenVINO model as ``out`` (.xml + .bin, fp32 weights) atomically: saved into a temporary sibling
    folder, the .bin renamed in first, so a reader that finds the .xml finds its weights too."""
    import openvino as ov
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        ov.save_model(model, str(tmpdir / out.name), compress_to_fp16=False)
        os.replace(tmpdir / out.with_suffix(".bin").name, out.with_suffix(".bin"))
        os.replace(tmpdir / out.name, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def quantize_openvino_int8(fp32_xml: "str | Path", out: "str | Path", calibration: np.ndarray,
                           subset_size: int = 100) -> Path:
    """Post-training int8 quantisation (NNCF, transformer preset with SmoothQuant) of an fp32 IR.

    ``calibration``: normalised float32 crops b 3 S S (the shipped agreement crops, every other one: the
    product never needs the training data). The stem (``INT8_IGNORED_PATTERNS``) stays fp32. Writes ``out``
    (.xml + .bin) atomically; ExportError when NNCF is not installed.
    """
    disable_openvino_telemetry()
    try:
        import nncf
    except ImportError as e:
        raise ExportError("int8 quantisation needs NNCF: `pip install nncf`") from e
    import openvino as ov
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or calibration.shape[0] == 0:
        raise ValueError(f"calibration must be a non-empty b x 3 x S x S batch, got {calibration.shape}")
    logging.getLogger("nncf").setLevel(logging.WARNING)  # one INFO line per skipped node otherwise
    model = ov.Core().read_model(str(fp32_xml))
    data = nncf.Dataset([calibration[i:i + 1] for i in range(calibration.shape[0])])
    with keep_signal_stack():  # NNCF runs the model on this thread to calibrate
        quantized = nncf.quantize(model, data, subset_size=min(subset_size, calibration.shape[0]),
                                  model_type=nncf.ModelType.TRANSFORMER,
                                  ignored_scope=nncf.IgnoredScope(patterns=list(INT8_IGNORED_PATTERNS),
                                                                  validate=False))
    out = Path(out).with_suffix(".xml")
    out.parent.mkdir(parents=True, exist_ok=True)
    return _save_ir(quantized, out)


def import_torch_tensorrt():
    """Import torch_tensorrt lazily; ExportError with the reason when it (or TensorRT) is unavailable.

    torch-tensorrt raises a plain ``Exception`` (not ImportError) when TensorRT's libraries are missing.
    """
    try:
        import torch_tensorrt
    except Exception as e:  # noqa: BLE001 - see docstring
        raise ExportError(f"torch-tensorrt is unavailable ({type(e).__name__}: {e}); it needs an NVIDIA GPU, "
                          "`pip install -r requirements-gpu.txt` and TensorRT's libraries") from e
    if not torch.cuda.is_available():
        raise ExportError("TensorRT needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)")
    return torch_tensorrt


def compile_tensorrt(module: LivenessScorer, engine_cache_dir: "str | Path", max_batch: int = MAX_BATCH):
    """Compile the scorer with torch-tensorrt's dynamo path: FP16 kernels, batch 1..max_batch, engine cache.

    Returns the compiled GraphModule (on cuda:0). Built engines go to ``engine_cache_dir`` and are reused on a
    rebuild with the same graph, shapes and settings.
    """
    trt = import_torch_tensorrt()
    module = module.to("cuda").eval()
    s = module.image_size
    engine_cache_dir = Path(engine_cache_dir)
    engine_cache_dir.mkdir(parents=True, exist_ok=True)
    ep = export_program(module, max_batch)
    spec = trt.Input(min_shape=(MIN_BATCH, 3, s, s), opt_shape=(min(OPT_BATCH, max_batch), 3, s, s),
                     max_shape=(max_batch, 3, s, s), dtype=torch.float32)
    return trt.dynamo.compile(
        ep, arg_inputs=[spec], enabled_precisions={torch.half}, min_block_size=1,
        cache_built_engines=True, reuse_cached_engines=True, engine_cache_dir=str(engine_cache_dir),
        timing_cache_path=str(engine_cache_dir / "timing_cache.bin"))


def export_tensorrt(module: LivenessScorer, out: "str | Path", engine_cache_dir: "str | Path | None" = None,
                    max_batch: int = MAX_BATCH) -> Path:
    """Compile with TensorRT (see ``compile_tensorrt``) and save the ExportedProgram holding the engine.

    Load it with ``torch_tensorrt.load(out).module()`` on a machine with the same GPU model, TensorRT and torch.
    """
    trt = import_torch_tensorrt()
    out = Path(out)
    engine_cache_dir = Path(engine_cache_dir) if engine_cache_dir else out.parent / "trt_engine_cache"
    trt_gm = compile_tensorrt(module, engine_cache_dir, max_batch)
    s = module.image_size
    spec = trt.Input(min_shape=(MIN_BATCH, 3, s, s), opt_shape=(min(OPT_BATCH, max_batch), 3, s, s),
                     max_shape=(max_batch, 3, s, s), dtype=torch.float32)
    with atomic_path(out) as tmp:
        trt.save(trt_gm, str(tmp), output_format="exported_program", arg_inputs=[spec])
    return out


def export(model: "str | Path | Checkpoint", fmt: str, out: "str | Path", max_batch: int = MAX_BATCH,
           onnx_exporter: str = "legacy", routing: bool = False, calibration: "np.ndarray | None" = None) -> Path:
    """Export ``model`` (checkpoint path, config name or Checkpoint) to ``out`` in format ``fmt``.

    ``routing=True`` exports the three-output scorer (MoE models). ``openvino-int8`` needs ``calibration``
    (normalised crops b 3 S S), e.g. ``models.deploy.runtime.agreement_batch``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    module, _ = scorer_module(model, routing=routing)
    if fmt == "torch-export":
        return export_torch(module, out, max_batch)
    if fmt == "onnx":
        if max_batch != MAX_BATCH:
            log.info("ONNX batch axis is unbounded; --max-batch does not apply")
        return export_onnx(module, out, exporter=onnx_exporter)
    if fmt == "openvino":
        return export_openvino(module, out, max_batch)
    if fmt == "openvino-int8":
        if calibration is None:
            raise ValueError("openvino-int8 needs calibration crops (--calibration IMAGE: a crop mosaic such as "
                             "assets/agreement_crops.jpg)")
        out = Path(out).with_suffix(".xml")
        fp32 = export_openvino(module, out.with_name(out.stem + ".fp32.xml"), max_batch)
        try:
            return quantize_openvino_int8(fp32, out, calibration)
        finally:
            fp32.unlink(missing_ok=True)
            fp32.with_suffix(".bin").unlink(missing_ok=True)
    return export_tensorrt(module, out, max_batch=max_batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint .safetensors or a config name (fresh weights)")
    ap.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    ap.add_argument("--out", required=True, type=Path, help="output file")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH, help="largest batch of the dynamic range")
    ap.add_argument("--onnx-exporter", choices=("legacy", "dynamo"), default="legacy")
    ap.add_argument("--no-check", action="store_true", help="skip the comparison with eager at batch 1 and 7")
    ap.add_argument("--routing", action="store_true", help="also output expert_shares and token_experts (MoE)")
    ap.add_argument("--calibration", type=Path, help="openvino-int8: crop mosaic to calibrate on "
                    "(default assets/agreement_crops.jpg)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        module, ckpt = scorer_module(args.model)  # once: a config name gives fresh random weights per load
        calibration = None
        if args.fmt == "openvino-int8":
            from .runtime import DEFAULT_AGREEMENT_CROPS, agreement_batch, load_agreement_crops
            crops = load_agreement_crops(args.calibration or DEFAULT_AGREEMENT_CROPS)
            calibration = agreement_batch(crops, ckpt.preprocessing)[::2]
        out = export(ckpt, args.fmt, args.out, args.max_batch, args.onnx_exporter, args.routing, calibration)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.fmt}) in {time.perf_counter() - t0:.1f} s")
    if not args.no_check:
        from .runtime import ExportedRuntime, compare_with_eager  # runtime imports this module
        run = ExportedRuntime(args.fmt, out, module.image_size, args.max_batch, routing=args.routing)
        diffs = compare_with_eager(run, module)
        print("max |P_export - P_eager|: " + ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
