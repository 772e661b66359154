#!/usr/bin/env bash
# configs/word_lstm.py against PyTorch's word_language_model/main.py, on the same local text
# (benchmarks/word_lm_data.py) for the same epochs: test perplexity and wall time of each whole
# command (data, training, the per-epoch validation, the test), docs/benchmarks.md.
#
#   bash benchmarks/word_lm_vs_pytorch.sh EXAMPLE_DIR WIKITEXT_DIR OUT [EPOCHS] [WHICH]
#
# EXAMPLE_DIR holds main.py, data.py and model.py of pytorch/examples' word_language_model;
# WIKITEXT_DIR the WikiText-2 files benchmarks/word_lm_data.py reads;
# WHICH is any of pytorch, sgd, adam (default: all three). Each lm_jax run starts from empty
# token and compilation caches, as a first run does.
set -euo pipefail
example=$(cd "$1" && pwd)
wikitext=$(cd "$2" && pwd)
out=$(mkdir -p "$3" && cd "$3" && pwd)
epochs=${4:-6}
which=${5:-pytorch sgd adam}
python benchmarks/word_lm_data.py "$wikitext" "$out/data" | tee "$out/data.json"
clock() { date +%s.%N; }

for what in $which; do
  start=$(clock)
  if [ "$what" = pytorch ]; then  # main.py unmodified; torch's default threads (the cores).
    (cd "$example" && python main.py --data "$out/data" --epochs "$epochs" \
      --save "$out/pytorch_model.pt") >"$out/pytorch.log" 2>&1
    test_ppl=$(grep "End of training" "$out/pytorch.log" | sed 's/.*test ppl *//; s/ .*//')
  else
    spec="configs/word_lstm.py:$epochs"
    [ "$what" = adam ] && spec="configs/word_lstm.py:adam,$epochs"
    run="$out/lm_jax_$what"
    rm -rf "$run" "$out/cache_$what"
    export XDG_CACHE_HOME="$out/cache_$what"
    python scripts/train.py --config "$spec" --workdir "$run" \
      --config.data.text_files.train="$out/data/train.txt" \
      --config.data.text_files.validation="$out/data/valid.txt" \
      --config.data.text_files.test="$out/data/test.txt" >"$run.log" 2>&1
    python scripts/evaluate.py --workdir "$run" --split test --best >"$run.test.json" 2>>"$run.log"
    test_ppl=$(python -c "import json; print(round(json.load(open('$run.test.json'))['perplexity'], 2))")
  fi
  echo "$what: test perplexity $test_ppl, wall $(python -c "print(round($(clock) - $start, 1))") s"
done
