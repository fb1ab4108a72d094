#!/usr/bin/env bash
# The paper's ablation at the bundled size, on ../shared/data: dense CLIP vs Soft MoE vs La-SoftMoE (readings A
# and B); same budget, seed and data for every variant; group-held-out and leave-one-source-out validation.
# Results: python scripts/ablation_table.py runs/ablation > docs/ablation.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-75}; EPOCHS=${EPOCHS:-4}; SEED=${SEED:-0}
SPLITS=${SPLITS:-"group loso:utkface"}
for split in $SPLITS; do
  for variant in dense softmoe la-a la-b; do
    cfg=ViT-Ti-16-128-$variant; [ "$variant" = la-a ] && cfg=ViT-Ti-16-128
    out=runs/ablation/${split/:/-}/$variant
    [ -f "$out/history.jsonl" ] && [ "$(wc -l < "$out/history.jsonl")" -ge "$EPOCHS" ] && continue
    rm -rf "$out"
    $PY -m models.train --config "$cfg" --split "$split" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" \
        --seed "$SEED" --bf16 --out "$out"
  done
done
