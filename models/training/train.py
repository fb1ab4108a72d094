"""Train La-SoftMoE CLIP (any config) on labelled face crops.

    python -m models.train --config ViT-Ti-16-128 --out runs/ti128 --epochs 12
    python -m models.train --config ViT-B-16 --clip ViT-B-16.pt --lr 1e-6 --lr-new 1e-4 --out runs/b16
    torchrun --nproc_per_node 4 -m models.train --config ViT-B-16 --clip ViT-B-16.pt --out runs/b16   # DDP
    python -m models.train --resume runs/ti128          # continue where the run stopped

Each epoch writes ``OUT/last.safetensors`` (+ ``OUT/train_state.pt``: optimiser, schedule, RNG, counters; tensors
only, loaded with ``weights_only=True``), validates, and keeps ``OUT/best.safetensors`` with the validation EER
threshold stored in it. ``OUT/train.log`` and ``OUT/history.jsonl`` record the run.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as fdata
from .augment import EvalTransform, TrainAugment
from .auxiliary import DomainHead, SpectrumHead, TokenTap
from ..atomic import atomic_path
from ..checkpoint import load_checkpoint, save_checkpoint
from ..clip import LaSoftMoECLIP, create_model
from ..config import get_config
from ..preprocess import Preprocessing, preprocess, resize_crop, sharpness
from ..pretrained import load_pretrained_clip

log = logging.getLogger("models.train")
ROOT = Path(__file__).resolve().parents[2]  # the checkout
DEFAULT_MANIFEST = ROOT.parent / "shared" / "data" / "faces" / "manifest.csv"
DEFAULT_STEM_WEIGHTS = ROOT.parent / "shared" / "pretrained" / "mobilenet_v2_1.0_224.safetensors"
DATA_TERMS = ("Research and non-commercial data (NUAA, Idiap Replay-Attack, UTKFace, Yonsei, LFW swaps, GAN "
              "portraits, webcam and PyImageSearch-clone captures; rsface CC BY 4.0, Roboflow Universe "
              "project-iorgd): weights are for evaluation and demonstration, not production decisions.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="ViT-Ti-16-128", help="config name (models/model_configs) or JSON file")
    p.add_argument("--clip", type=Path, help="initialise from official CLIP weights (OpenAI / open_clip / HF)")
    p.add_argument("--init", type=Path, help="initialise from one of our checkpoints (fine-tuning)")
    p.add_argument("--resume", type=Path, help="resume the run in this output folder")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--split", default="group", help="'group' (group-held-out), 'loso:SOURCE' (leave one source out), "
                   "'holdout:SRC1,SRC2,...' (several whole sources or families held out together) or 'all' (the "
                   "shipped model: train on every crop; the group split's validation crops are then trained on too, "
                   "so they only monitor the run: take the epoch and threshold from a held-out run of the same "
                   "recipe, see --keep-epochs)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=Path("runs/train"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=0, help="0: one pass over the training split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="pretrained / base parameters (default 5e-4 from "
                   "scratch, 1e-6 from CLIP as in the paper)")
    p.add_argument("--lr-new", type=float, default=None, help="new parameters: MoE branches (default 1e-3 from "
                   "scratch, 1e-4 from CLIP)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05, help="warm-up as a fraction of all steps")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--balance-alpha", type=float, default=0.5, help="source/class balancing strength (0..1)")
    p.add_argument("--p-moire", type=float, default=0.15)
    p.add_argument("--p-colour", type=float, default=0.15)
    p.add_argument("--p-self-blend", type=float, default=0.1)
    p.add_argument("--p-camera", type=float, default=0.0, help="white balance + gamma of another camera")
    p.add_argument("--p-noise", type=float, default=0.0, help="sensor read / shot noise")
    p.add_argument("--p-border-mix", type=float, default=0.0,
                   help="surroundings of the face taken from a same-label crop of another source")
    p.add_argument("--p-swap-blend", type=float, default=0.0,
                   help="blended swap: another person's live face pasted in (Poisson or alpha blend), as attack")
    p.add_argument("--p-motion-blur", type=float, default=0.0,
                   help="linear motion blur on either class (a moving live face smears too)")
    p.add_argument("--p-detail", type=float, default=0.0,
                   help="detail shift: soften (resample through a lower resolution) or sharpen a crop, "
                   "either class alike or class-conditionally (--detail-bias), against the sharpness shortcut")
    p.add_argument("--detail-bias", type=float, default=0.5,
                   help="probability that a detail shift softens a live crop and sharpens an attack (0.5: either "
                   "way for both classes; 0.75 was measured to invert the sharpness cue, docs/ablation.md)")
    p.add_argument("--sharpness-match", type=int, default=0, metavar="BINS",
                   help="draw live and attack crops of each source with the same sharpness distribution (variance "
                   "of the Laplacian at 128 px, BINS quantile bins per source; 0: off), so blur stops telling the "
                   "classes apart without being inverted (docs/ablation.md)")
    p.add_argument("--stem-weights", type=Path, default=None,
                   help="MobileNetV2 release weights for a mobilenetv2 stem (default: shared/pretrained copy if "
                   "present; 'none' trains the stem from scratch)")
    p.add_argument("--lr-stem", type=float, default=2e-4, help="learning rate of the pretrained stem features")
    p.add_argument("--group-dro", type=float, default=0.0, metavar="ETA",
                   help="worst-group weighting over (source, label) groups: each sample's loss is weighted by "
                        "exp(ETA x its group's running loss), so no capture set is fitted at another's expense "
                        "(0: off)")
    p.add_argument("--moe-gate", type=float, default=None,
                   help="open every MoE branch gate at this value before training (zero-gated fresh experts get "
                        "no gradient and never specialise)")
    p.add_argument("--moe-router-scale", type=float, default=None,
                   help="start every router's logit scale here (1.0 on cosine logits dispatches near-uniformly)")
    p.add_argument("--aux-spectrum", type=float, default=0.0, metavar="W",
                   help="weight of Silent-Face's Fourier-spectrum target on the patch tokens (0: off; training only)")
    p.add_argument("--domain-adv", type=float, default=0.0, metavar="W",
                   help="class-conditional domain-adversarial training on the capture-set label: the largest weight of the "
                        "reversed gradient into the tower (DANN's lambda, ramped up from 0; 0: off)")
    p.add_argument("--fresh-experts", action="store_true",
                   help="initialise experts independently instead of upcycling identical copies of the MLP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the group split (default: --seed); fix it to train another seed on the same split")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (default on CUDA; on CPUs with bf16)")
    p.add_argument("--limit", type=int, default=0, help="use only N manifest rows (smoke tests)")
    p.add_argument("--cache", type=Path, default=ROOT / "cache", help="decoded-image cache folder")
    p.add_argument("--fp16-weights", action="store_true", help="store checkpoints in float16 (half the size)")
    p.add_argument("--keep-epochs", action="store_true",
                   help="also keep every epoch's weights (OUT/epoch_N.safetensors), so an epoch chosen on a held-out "
                   "run of the same recipe can be taken from this one")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


# --- data ------------------------------------------------------------------------------------------------
def load_images(samples: list[fdata.Sample], size: int, cache: Path | None) -> np.ndarray:
    """Decode every crop once to an N x size x size x 3 uint8 RGB array (cached on disk by content list)."""
    import cv2

    key = hashlib.sha256(("\n".join(str(s.path) for s in samples) + f"|{size}").encode()).hexdigest()[:16]
    path = cache / f"crops_{size}_{key}.npy" if cache else None
    if path is not None and path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == len(samples):
            return np.ascontiguousarray(arr)

    def read(s: fdata.Sample) -> np.ndarray:
        img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"unreadable image: {s.path}")
        return resize_crop(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size)

    with ThreadPoolExecutor(4) as ex:
        arr = np.stack(list(ex.map(read, samples)))
    if path is not None:
        with atomic_path(path) as tmp:
            np.save(tmp, arr)
    return arr


class CropDataset(torch.utils.data.Dataset):
    """Crops -> normalised tensors (``models.preprocess`` after the transform, as the app and evaluation). With ``sources``, each item also hands the transform a *partner*: a crop of
    the same label from another source (for border mixing), drawn with Python's ``random`` (re-seeded per
    DataLoader worker by torch)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, preprocessing: Preprocessing,
                 sources: "list[str] | None" = None, groups: "np.ndarray | None" = None):
        self.images, self.labels, self.transform = images, labels, transform
        self.groups = groups  # with groups, items are (x, label, group)
        self.preprocessing = preprocessing
        self.sources = np.asarray(sources) if sources is not None else None
        self.by_label = {c: np.flatnonzero(np.asarray(labels) == c) for c in (0, 1)}

    def __len__(self) -> int:
        return len(self.images)

    def _partner(self, i: int) -> "np.ndarray | None":
        pool = self.by_label[int(self.labels[i])]
        for _ in range(4):  # a few tries at another source; a one-source pool gives up
            j = int(pool[random.randrange(len(pool))])
            if self.sources[j] != self.sources[i]:
                return self.images[j]
        return None

    def __getitem__(self, i: int):
        if self.sources is not None:
            img, label = self.transform(self.images[i], int(self.labels[i]), partner=self._partner(i))
        else:
            img, label = self.transform(self.images[i], int(self.labels[i]))
        x = torch.from_numpy(preprocess(img, self.preprocessing)[0])  # 3 S S
        return (x, label) if self.groups is None else (x, label, int(self.groups[i]))


class GroupDRO:
    """Soft worst-group objective (after Sagawa et al., ICLR 2020, online form): keeps a running mean loss per
    group and weights each sample by ``exp(eta * (its group's running loss - the largest))``, normalised over
    the batch. Groups that the model fits worst (a capture set whose live frames look like attacks) pull
    hardest; eta = 0 is the plain mean."""

    def __init__(self, num_groups: int, eta: float, momentum: float = 0.9):
        self.eta, self.momentum = eta, momentum
        self.running = torch.full((num_groups,), float("nan"))

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        g = groups.cpu()
        with torch.no_grad():
            l = losses.detach().float().cpu()
            for k in g.unique().tolist():
                m = float(l[g == k].mean())
                r = self.running[k]
                self.running[k] = m if torch.isnan(r) else self.momentum * r + (1 - self.momentum) * m
            run = torch.nan_to_num(self.running, nan=float(l.mean()))
            w = torch.exp(self.eta * (run[g] - run.max()))
            w = (w / w.sum()).to(losses.device)
        return (w * losses).sum()

    def state_dict(self) -> dict:
        return {"running": self.running.clone()}

    def load_state_dict(self, st: dict) -> None:
        self.running = st["running"].clone()


class _EvalWrap:
    def __init__(self, size: int):
        self.t = EvalTransform(size)

    def __call__(self, img, label):
        return self.t(img), label


# --- schedule --------------------------------------------------------------------------------------------
def lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def make_optimizer(model: LaSoftMoECLIP, lr: float, lr_new: float, wd: float,
                   lr_stem: float | None = None) -> torch.optim.Optimizer:
    base, new = model.param_groups()
    stem_ids = {id(p) for p in model.stem_parameters()} if lr_stem is not None else set()
    stem = [p for p in base if id(p) in stem_ids]
    base = [p for p in base if id(p) not in stem_ids]
    groups = []
    for params, rate in ((base, lr), (new, lr_new), (stem, lr_stem)):
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups += [{"params": decay, "lr": rate, "weight_decay": wd},
                   {"params": no_decay, "lr": rate, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.98), eps=1e-6)


@torch.no_grad()
def fresh_experts(model: LaSoftMoECLIP, seed: int) -> None:
    """Give every expert of every MoE branch its own random initialisation (gates stay at zero).

    Upcycling copies one MLP into every expert: identical experts get identical gradients up to the combine
    weights, which start uniform, so from scratch they stay near-identical. Independent experts can diverge.
    """
    g = torch.Generator().manual_seed(seed + 7)
    for block in model.visual.transformer.resblocks:
        if block.moe is None:
            continue
        e = block.moe.experts
        d, h = e.c_fc_weight.shape[2], e.c_fc_weight.shape[1]
        e.c_fc_weight.copy_(torch.randn(e.c_fc_weight.shape, generator=g) * (2 * d) ** -0.5)
        e.c_proj_weight.copy_(torch.randn(e.c_proj_weight.shape, generator=g) * h ** -0.5 * 0.5)
        e.c_fc_bias.zero_()
        e.c_proj_bias.zero_()


@torch.no_grad()
def open_moe(model: LaSoftMoECLIP, gate: float | None, router_scale: float | None) -> None:
    """Set every MoE branch's gate and router logit scale (None leaves it as loaded)."""
    for block in model.visual.transformer.resblocks:
        if block.moe is None:
            continue
        if gate is not None:
            block.moe.gate.fill_(gate)
        if router_scale is not None:
            block.moe.scale.fill_(router_scale)


# --- validation ------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: LaSoftMoECLIP, loader, autocast) -> np.ndarray:
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(model.logit_scale.device)
        # fp32 on the CPU: bf16 logits (8-bit mantissa) tie scores and make the AUC coarse
        with autocast() if x.device.type != "cpu" else contextlib.nullcontext():
            out.append(model.predict_proba(x).float().cpu())
    model.train()
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def validate(model, loader, val: list[fdata.Sample], autocast) -> dict:
    from .metrics import eer, report

    scores = predict(model, loader, autocast)
    labels = np.array([s.label for s in val])
    if len(set(labels)) == 2:
        _, thr = eer(labels, scores)
    else:
        thr = 0.5
    rep = report(labels, scores, thr, sources=[s.source for s in val], attack_types=[s.attack_type for s in val])
    return {"threshold": float(thr), "report": rep, "scores": scores}


def selection_value(rep: dict) -> float:
    """Lower is better: mean over sources of the per-source error (ACER, or the one defined rate)."""
    errs = []
    for m in rep["per_source"].values():
        vals = [m.get(k) for k in ("apcer", "bpcer") if m.get(k) is not None]
        if vals:
            errs.append(sum(vals) / len(vals))
    return float(np.mean(errs)) if errs else float("inf")


# --- main ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    resuming = args.resume is not None
    if resuming:
        state_json = args.resume / "args.json"
        if not state_json.is_file():
            print(f"error: nothing to resume in {args.resume} (no args.json)", file=sys.stderr)
            return 2
        resume_args = json.loads(state_json.read_text())
        out, threads = args.resume, args.threads
        args = parse_args(resume_args["argv"])
        args.out, args.resume = out, out
        if threads:  # the machine may have changed: --threads on the resume command line wins
            args.threads = threads
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    args.out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        handlers.append(logging.FileHandler(args.out / "train.log"))
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)
    if rank == 0 and not resuming:
        (args.out / "args.json").write_text(json.dumps({"argv": argv if argv is not None else sys.argv[1:]}))
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed)

    # model
    cfg_src = args.config
    if cfg_src.endswith(".json"):
        from ..config import ModelConfig
        cfg_obj = json.loads(Path(cfg_src).read_text())
        cfg_obj.pop("description", None)
        cfg = ModelConfig.from_dict(cfg_obj)
    else:
        cfg = get_config(cfg_src)
    model = create_model(cfg)
    from_clip = args.clip is not None
    if from_clip:
        rep = load_pretrained_clip(model, args.clip)
        log.info("CLIP weights %s (%s): %d tensors, %d MoE tensors new", args.clip, rep.source_format, rep.loaded,
                 rep.missing_moe)
    if cfg.vision.stem == "mobilenetv2" and not args.init and not resuming:
        stem_path = args.stem_weights or DEFAULT_STEM_WEIGHTS
        if str(stem_path) != "none":
            from ..stem import load_mobilenet_v2_stem

            if not Path(stem_path).is_file():
                print(f"error: MobileNetV2 stem weights not found at {stem_path}: pass --stem-weights "
                      "PATH (the ImageNet release safetensors) or --stem-weights none", file=sys.stderr)
                return 2
            n = load_mobilenet_v2_stem(model.visual.stem.features, stem_path)
            log.info("stem: %d MobileNetV2 tensors from %s", n, stem_path)
        else:
            log.info("stem: trained from scratch (--stem-weights none)")
    if args.fresh_experts:
        fresh_experts(model, args.seed)
    if args.init:
        model.load_state_dict(load_checkpoint(args.init).model.state_dict())
    open_moe(model, args.moe_gate, args.moe_router_scale)
    lr = args.lr if args.lr is not None else (1e-6 if from_clip else 5e-4)
    lr_new = args.lr_new if args.lr_new is not None else (1e-4 if from_clip else 1e-3)
    model.to(device).train()

    # data
    samples = fdata.read_manifest(args.manifest)
    if args.limit:
        samples = random.Random(args.seed).sample(samples, min(args.limit, len(samples)))
    if args.split == "group":
        train, val = fdata.group_split(samples, args.val_fraction,
                                       args.seed if args.split_seed is None else args.split_seed)
    elif args.split.startswith("loso:"):
        train, val = fdata.leave_one_source_out(samples, args.split[5:])
    elif args.split.startswith("holdout:"):
        train, val = fdata.hold_out_sources(samples, [x for x in args.split[8:].split(",") if x])
    elif args.split == "all":
        _, val = fdata.group_split(samples, args.val_fraction,
                                   args.seed if args.split_seed is None else args.split_seed)
        train = list(samples)
        log.warning("--split all: training on all %d crops; the %d validation crops are trained on too, so the "
                    "figures below are not held out and the stored threshold is in-domain", len(train), len(val))
    else:
        raise SystemExit(f"error: --split must be 'group', 'loso:SOURCE', 'holdout:SRC,...' or 'all', "
                         f"got {args.split!r}")
    log.info("train %d: %s", len(train), fdata.summarize(train))
    log.info("val %d: %s", len(val), fdata.summarize(val))
    if rank == 0:  # the exact split, so `python -m models.evaluate --manifest OUT/val_manifest.csv` re-measures it
        fdata.write_manifest(train, args.out / "train_manifest.csv")
        fdata.write_manifest(val, args.out / "val_manifest.csv")
    store = 160
    tr_img = load_images(train, store, args.cache)
    va_img = load_images(val, store, args.cache)
    size = cfg.vision.image_size
    aug = TrainAugment(size, p_moire=args.p_moire, p_colour_distortion=args.p_colour,
                       p_self_blend=args.p_self_blend, p_camera=args.p_camera, p_noise=args.p_noise,
                       p_border_mix=args.p_border_mix, p_swap_blend=args.p_swap_blend,
                       p_motion_blur=args.p_motion_blur, p_detail=args.p_detail, detail_bias=args.detail_bias,
                       seed=args.seed + 1000 * rank)
    group_names = sorted({(s.source, s.label) for s in train})
    group_index = {g: k for k, g in enumerate(group_names)}
    group_ids = np.array([group_index[(s.source, s.label)] for s in train])
    dro = GroupDRO(len(group_names), args.group_dro) if args.group_dro > 0 else None
    source_index = {src: k for k, src in enumerate(sorted({s.source for s in train}))}
    group_source = torch.tensor([source_index[g[0]] for g in group_names])  # group id -> capture-set id
    aux = nn.ModuleDict()
    if args.aux_spectrum > 0:
        aux["spectrum"] = SpectrumHead(cfg.vision.width)
    if args.domain_adv > 0:
        if len(source_index) < 2:
            print(f"error: --domain-adv needs at least two capture sets (sources) in the training split, got "
                  f"{sorted(source_index)}", file=sys.stderr)
            return 2
        aux["domain"] = DomainHead(cfg.vision.width, len(source_index))
    aux.to(device).train()
    tap = TokenTap(model) if len(aux) else None
    prep = Preprocessing.from_config(cfg)
    tr_ds = CropDataset(tr_img, np.array([s.label for s in train]), aug, prep,
                        sources=[s.source for s in train] if args.p_border_mix > 0 or args.p_swap_blend > 0 else None,
                        groups=group_ids if dro is not None or "domain" in aux else None)
    va_ds = CropDataset(va_img, np.array([s.label for s in val]), _EvalWrap(size), prep)
    steps_per_epoch = args.steps_per_epoch or max(1, len(train) // (args.batch_size * world))
    gen = torch.Generator().manual_seed(args.seed * 100 + rank)
    weights = fdata.balanced_weights(train, args.balance_alpha)
    if args.sharpness_match:
        weights, matched = fdata.sharpness_matched_weights(weights, train, np.array([sharpness(x) for x in tr_img]),
                                                           bins=args.sharpness_match)
        for src, r in matched.items():
            log.info("sharpness matching %s: median live / attack %.0f / %.0f -> %.0f / %.0f, overlap %.2f, "
                     "effective crops %.0f -> %.0f", src, r["before"]["median_live"], r["before"]["median_attack"],
                     r["after"]["median_live"], r["after"]["median_attack"], r["overlap"], r["before"]["ess"],
                     r["after"]["ess"])
    sampler = torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(weights), steps_per_epoch * args.batch_size, replacement=True, generator=gen)
    workers = 1 if device.type == "cpu" else 4
    import cv2

    cv2.setNumThreads(1)  # before the DataLoader forks: workers x OpenCV threads would thrash (and see augment.py)
    tr_loader = torch.utils.data.DataLoader(tr_ds, args.batch_size, sampler=sampler, num_workers=workers,
                                            drop_last=True, persistent_workers=True)
    va_loader = torch.utils.data.DataLoader(va_ds, 128, shuffle=False, num_workers=0)

    opt = make_optimizer(model, lr, lr_new, args.weight_decay,
                         lr_stem=args.lr_stem if cfg.vision.stem != "patch" else None)
    if len(aux):  # training-only heads (models/training/auxiliary.py): new parameters, never exported
        opt.add_param_group({"params": list(aux.parameters()), "lr": lr_new, "weight_decay": args.weight_decay})
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(args.warmup * total)))
    start_epoch, best = 0, float("inf")
    if resuming and (args.out / "train_state.pt").is_file():
        st = torch.load(args.out / "train_state.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(load_checkpoint(args.out / "last.safetensors").model.state_dict())
        model.to(device).train()
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, best = int(st["epoch"]), float(st["best"])
        gen.set_state(st["sampler_rng"])
        if dro is not None and "group_dro" in st:
            dro.load_state_dict(st["group_dro"])
        if len(aux) and "aux" in st:
            aux.load_state_dict(st["aux"])
        torch.set_rng_state(st["torch_rng"])
        log.info("resumed %s at epoch %d (best %.4f)", args.out, start_epoch, best)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                                              else None)
    use_bf16 = args.bf16 or device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    data_card = {"data": str(args.manifest.name), "sources": sorted({s.source for s in samples}),
                 "train": fdata.summarize(train), "val": fdata.summarize(val), "split": args.split,
                 **({"sharpness_match_bins": args.sharpness_match} if args.sharpness_match else {}),
                 "terms": DATA_TERMS}
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0 or tqdm is None,
                   mininterval=5, file=sys.stderr)
        run_loss = None
        for batch in tr_loader:
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device)
            with autocast():
                logits = ddp_model(x)
            if dro is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
            else:
                loss = dro(F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing,
                                           reduction="none"), batch[2])
            if "spectrum" in aux:
                loss = loss + args.aux_spectrum * aux["spectrum"].loss(tap.tokens, x)
            if "domain" in aux:
                # the classifiers learn the rooms at full strength; only the reversed gradient into the tower is
                # weighted (DANN's lambda). Weighting both (a first try) let the tower outrun the classifiers:
                # the domain loss grew without bound and validation AUC fell 0.91 -> 0.66 in 600 steps.
                lam = args.domain_adv * DomainHead.schedule(sched.last_epoch / max(1, total))
                loss = loss + aux["domain"].loss(tap.tokens, y, group_source[batch[2]].to(device), lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
            bar.set_postfix(loss=f"{run_loss:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            bar.update()
        bar.close()
        if rank == 0:
            res = validate(model, va_loader, val, autocast)
            rep = res["report"]
            sel = selection_value(rep)
            pooled = rep["pooled"]
            log.info("epoch %d: loss %.4f, val AUC %.4f, EER %.4f, ACER@EER-thr %.4f, mean source error %.4f, "
                     "%.0f s", epoch + 1, run_loss, pooled.get("auc") or float("nan"), pooled.get("eer") or
                     float("nan"), pooled.get("acer") or float("nan"), sel, time.time() - t0)
            for src, m in sorted(rep["per_source"].items()):
                log.info("   %-26s APCER %s BPCER %s", src, _fmt(m.get("apcer")), _fmt(m.get("bpcer")))
            if dro is not None:
                worst = torch.nan_to_num(dro.running, nan=-1.0).argsort(descending=True)[:4].tolist()
                log.info("   hardest training groups: %s", ", ".join(
                    f"{group_names[k][0]}/{'attack' if group_names[k][1] else 'live'} {float(dro.running[k]):.3f}"
                    for k in worst))
            card = dict(data_card, epoch=epoch + 1, val_metrics={"pooled": pooled, "per_source": rep["per_source"],
                                                                  "per_attack_type": rep["per_attack_type"]})
            dtype = torch.float16 if args.fp16_weights else None
            save_checkpoint(args.out / "last.safetensors", model, threshold=res["threshold"], data_card=card,
                            dtype=dtype)
            if args.keep_epochs:
                save_checkpoint(args.out / f"epoch_{epoch + 1}.safetensors", model, threshold=res["threshold"],
                                data_card=card, dtype=dtype)
            if sel < best:
                best = sel
                save_checkpoint(args.out / "best.safetensors", model, threshold=res["threshold"], data_card=card,
                                dtype=dtype)
                log.info("   new best (mean source error %.4f)", sel)
            with atomic_path(args.out / "train_state.pt") as tmp:
                torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                            "best": best, "sampler_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                            **({"group_dro": dro.state_dict()} if dro is not None else {}),
                            **({"aux": aux.state_dict()} if len(aux) else {})}, tmp)
            with open(args.out / "history.jsonl", "a") as f:
                f.write(json.dumps({"epoch": epoch + 1, "loss": run_loss, "threshold": res["threshold"],
                                    "selection": sel, "pooled": pooled, "per_source": rep["per_source"],
                                    "per_attack_type": rep["per_attack_type"]}, default=float) + "\n")
        if world > 1:
            torch.distributed.barrier()
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


def _fmt(v) -> str:
    return "  -   " if v is None else f"{v:.4f}"


if __name__ == "__main__":
    sys.exit(main())
