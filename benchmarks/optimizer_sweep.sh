#!/usr/bin/env bash
# The optimizer comparison in docs/experiments.md, on the GPT CPU recipe (2000 steps):
# a 3-point learning-rate grid per optimizer at seed 0, then seeds 0, 1, 2 at the grid's best
# rate (seed 0 is reused), then the table of all four against AdamW.
#
#   bash benchmarks/optimizer_sweep.sh runs/optimizers
#
# The same command again skips finished runs and resumes the others.
set -euo pipefail
root=${1:-runs/optimizers}
config=configs/shakespeare_char_gpt_cpu.py
# AdamW's and Lion's grids were widened upward while the best rate sat at the top.
declare -A grid=([adamw]=1e-3,2e-3,4e-3,8e-3 [muon]=0.01,0.02,0.04 [lion]=1e-4,3e-4,1e-3,3e-3,1e-2
  [sgd]=0.1,0.3,1.0)
# Muon: AdamW's best rate of its first three-point grid (4e-3) on embeddings and norms, no
# weight decay on its matrices (Muon's own default). Lion: weight decay 10x AdamW's (optax
# multiplies it by the smaller rate). SGD: momentum 0.9, no weight decay.
declare -A fixed=(
  [adamw]=""
  [muon]="--config.optim.adam_learning_rate=4e-3 --config.optim.weight_decay=0.0"
  [lion]="--config.optim.weight_decay=1.0"
  [sgd]="--config.optim.momentum=0.9 --config.optim.weight_decay=0.0"
)
names=(adamw muon lion sgd)

sweep() {  # NAME LEARNING_RATES SEEDS
  # shellcheck disable=SC2086  # ${fixed[...]} holds several flags.
  python scripts/sweep.py --config "$config" --root "$root/$1" --seeds "$3" \
    --grid "optim.learning_rate=$2" --config.optim.name="$1" ${fixed[$1]} ||
    echo "$1: $? run(s) failed (see $root/$1/*/train.log)"
}

best() {  # NAME -> the grid value whose seed-0 run ended with the lowest validation loss
  python - "$root/$1" <<'PY'
import glob, json, os, re, sys
found = {}
for d in glob.glob(os.path.join(sys.argv[1], "learning_rate=*-seed=0")):
  path = os.path.join(d, "metrics.jsonl")
  rows = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
  last = [r["val_loss"] for r in rows if "val_loss" in r and r["step"] == 2000]
  if last:  # Runs that failed (a non-finite loss) have no final evaluation.
    found[re.match(r"learning_rate=(.*)-seed=0", os.path.basename(d)).group(1)] = last[0]
print(min(found, key=found.get))
PY
}

for name in "${names[@]}"; do
  sweep "$name" "${grid[$name]}" 0
done
dirs=()
for name in "${names[@]}"; do
  lr=$(best "$name")
  echo "$name: best learning rate $lr"
  sweep "$name" "$lr" 0,1,2
  dirs+=("$root/$name/learning_rate=$lr-seed=0" "$root/$name/learning_rate=$lr-seed=1"
    "$root/$name/learning_rate=$lr-seed=2")
done
for name in "${names[@]}"; do
  python scripts/compare.py "$root/$name" --group_by optim.learning_rate
done
python scripts/compare.py "${dirs[@]}" --group_by optim.name --baseline adamw
python scripts/compare.py "${dirs[@]}" --group_by optim.name --baseline adamw
