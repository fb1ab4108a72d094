#!/usr/bin/env bash
# Leave-sources-out ablation of issue 11 at equal budget: patch embedding vs MobileNetV2 stem, dense vs
# La-SoftMoE, 128 vs 160 px, new camera / room augmentations vs without; two seeds for the stem-vs-patch pair.
# Every run trains on the same fold (FOLD: whole sources held out: webcam capture sets, a web-photo source and a
# digital family, all never seen in training) for the same number of steps and validates on the held-out sources.
# Two runs at a time with one torch thread each (better use of 2 cores than one run with two threads).
# Table: python scripts/ablation_table.py --folds runs/abl > docs/ablation.md section.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-125}; EPOCHS=${EPOCHS:-2}; JOBS=${JOBS:-2}; OUT=${OUT:-runs/abl}
FOLD=${FOLD:-cvzc,pyis-apfol,pyis-shubhamlala,pyis-wolf-huo,rsface,utkface,yonsei}
NEW="--p-camera 0.5 --p-noise 0.3 --p-border-mix 0.3"
BASE="--p-self-blend 0.2 --p-moire 0.1 --p-colour 0.05 --balance-alpha 0.7 --fresh-experts"
PATCH=scripts/ablation_configs/ViT-Ti-16-128-patch.json
# name | config | seed | extra flags
RUNS=(
  "mnv2-s0|ViT-Ti-16-128-mnv2|0|$NEW"
  "patch-s0|$PATCH|0|$NEW"
  "mnv2-s1|ViT-Ti-16-128-mnv2|1|$NEW"
  "patch-s1|$PATCH|1|$NEW"
  "mnv2dense-s0|ViT-Ti-16-128-mnv2-dense|0|$NEW"
  "mnv2-160-s0|ViT-Ti-16-160-mnv2|0|$NEW"
  "mnv2-noroomaug-s0|ViT-Ti-16-128-mnv2|0|"
  "mnv2-160-s1|ViT-Ti-16-160-mnv2|1|$NEW"
  "mnv2dense-s1|ViT-Ti-16-128-mnv2-dense|1|$NEW"
)
ONLY=${ONLY:-}  # space-separated run names: only these (e.g. ONLY="mnv2-160-s0 mnv2-160-s1")
run() {
  IFS='|' read -r name cfg seed extra <<< "$1"
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  out=$OUT/$name
  if [ -f "$out/history.jsonl" ] && [ "$(wc -l < "$out/history.jsonl")" -ge "$EPOCHS" ]; then return; fi
  rm -rf "$out"; mkdir -p "$out"
  # shellcheck disable=SC2086
  $PY -m models.train --config "$cfg" --split "holdout:$FOLD" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" \
      --seed "$seed" --bf16 --threads 1 --out "$out" $BASE $extra > "$out/stdout.log" 2>&1
  echo "$(date +%T) done $name rc=$?"
}
for r in "${RUNS[@]}"; do
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" ${r%%|*} "* ]]; then continue; fi
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  run "$r" &
  sleep 2
done
wait
