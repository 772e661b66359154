"""The share of preference pairs whose chosen reply a run's model finds more likely than the
rejected one (summed log-probabilities of the reply's tokens), with no reference: how a model
ranks the pairs before and after preference tuning (docs/benchmarks.md).

  python benchmarks/preference_accuracy.py --workdir runs/chat_dpo --pairs heldout_pairs.jsonl
"""

import argparse
import json

import numpy as np

from lm_jax import runs
from lm_jax.data import preferences, record_files
from lm_jax.objectives import preference


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--pairs", required=True)
  parser.add_argument("--seq_len", type=int, default=48)
  args = parser.parse_args()
  run = runs.load_run(args.workdir)
  pairs = preferences.encode(run.tokenizer, record_files.records(args.pairs), args.seq_len)
  batch = {"inputs": pairs.tokens[..., :-1], "targets": pairs.tokens[..., 1:]}
  batch["weights"] = pairs.weights
  loss = preference.DPOLoss(0.1)
  logps = np.asarray(
    loss.logps(run.model.apply, {"params": run.state.params}, batch, None, False)[0]
  )
  print(
    json.dumps(
      {"pairs": len(pairs), "chosen_more_likely": float(np.mean(logps[:, 0] > logps[:, 1]))}
    )
  )


if __name__ == "__main__":
  main()
