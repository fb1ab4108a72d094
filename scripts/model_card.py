"""Write the bundled model's card from its checkpoint and evaluation reports (figures come from the reports).

    python scripts/model_card.py --model assets/liveness_default.safetensors \
        --report "group-held-out validation=runs/eval/group.json" \
        --command "python -m models.train ..." --out assets/MODEL_CARD.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from models.training.info import describe  # noqa: E402


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def table(metrics: dict) -> list[str]:
    rows = ["| subset | live | attack | APCER % | BPCER % | ACER % | AUC | EER % |", "|---|---|---|---|---|---|---|---|"]

    def row(name, m):
        rows.append(f"| {name} | {m['n_live']} | {m['n_attack']} | {pct(m.get('apcer'))} | {pct(m.get('bpcer'))} | "
                    f"{pct(m.get('acer'))} | {num(m.get('auc'))} | {pct(m.get('eer'))} |")

    row("**pooled**", metrics["pooled"])
    for k, m in sorted(metrics["per_source"].items()):
        row(f"source {k}", m)
    for k, m in sorted(metrics["per_attack_type"].items()):
        row(f"attack type {k} (vs all live)", m)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--report", action="append", default=[], help="TITLE=path/to/evaluate.json (repeatable)")
    p.add_argument("--command", action="append", default=[], help="a command that reproduces the model (repeatable)")
    p.add_argument("--notes", type=Path, help="Markdown appended as the card's last section")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    ck = models.load_checkpoint(a.model)
    info = describe(ck)
    card = ck.data_card
    lines = [f"# Model card: `{a.model.name}`", "",
             "La-SoftMoE CLIP (Zou et al., IJCB 2024) at a CPU real-time size, trained on the crops of "
             "`../shared/data`. No pretrained CLIP weights can be obtained here: "
             + ("the transformer is trained from scratch on top of an ImageNet MobileNetV2 stem (blocks 0-12, "
                "Apache-2.0, fine-tuned) in place of the patch embedding."
                if ck.config.vision.stem == "mobilenetv2" else "the whole model is trained from scratch."), "",
             "## Architecture", "",
             f"- config `{ck.config.name}`: {ck.config.vision.image_size} px input, "
             + (f"MobileNetV2 stem (stride 16) + 1x1 projection, " if ck.config.vision.stem == "mobilenetv2"
                else f"patch {ck.config.vision.patch_size}, ") +
             f"width {ck.config.vision.width}, {ck.config.vision.layers} image blocks, MoE ({ck.config.moe.weighting}) "
             f"in blocks {list(ck.config.moe.layers)}, {ck.config.moe.num_experts} experts x {ck.config.slots_per_expert()} slots",
             f"- parameters: {info['params']['total']:,} in all, {info['params']['image_tower']:,} in the deployed image "
             f"tower ({info['params']['moe']:,} in MoE branches); {info['flops_per_crop']['total'] / 1e9:.3f} GFLOPs per crop",
             f"- prompts: {list(ck.prompts)}; score = P(attack) = softmax(exp(logit_scale) cos(image, prompt))[1]",
             f"- decision threshold {ck.threshold:.4f}: " + card.get(
                 "threshold_origin", "the equal-error-rate point on the validation split (its capture sets are "
                 "whole groups the model never trained on)"),
             f"- preprocessing: {ck.preprocessing.size} px, mean {list(ck.preprocessing.mean)}, std {list(ck.preprocessing.std)}",
             "", "## Data and terms", "",
             f"- {'training data (every crop)' if card.get('split') == 'all' else 'training split'}: {card.get('train', '?')}",
             (f"- monitor crops (the group split's validation crops, trained on too: not held out): {card.get('val', '?')}"
              if card.get("split") == "all" else f"- validation split ({card.get('split', '?')}): {card.get('val', '?')}"),
             f"- {card.get('terms', '')}", "",
             f"Sources: {', '.join(card.get('sources', []))}. NUAA, Idiap Replay-Attack "
             "and the webcam / PyImageSearch-clone sets are research-only, UTKFace non-commercial, rsface CC BY 4.0 "
             "(\"사람 감지 테스트 1\", Roboflow Universe, project-iorgd). **These weights are for evaluation and "
             "demonstration, not for production decisions**: a deployer trains on data they hold rights to, with "
             "`python -m models.train`.", ""]
    for spec in a.report:
        title, _, path = spec.partition("=")
        rep = json.loads(Path(path).read_text())
        lines += [f"## {title}", "", f"`{path}`: {rep['data'].get('scored')} crops, backend {rep['backend']}, "
                  f"threshold {rep['threshold']:.4f} ({rep['threshold_origin']}).", ""]
        lines += table(rep["metrics"]) + [""]
    if a.command:
        lines += ["## Reproduce", "", "```bash", *a.command, "```", ""]
    if a.notes and a.notes.is_file():
        lines += [a.notes.read_text().rstrip(), ""]
    a.out.write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
