"""Run directories as training leaves them, made without training: what comparisons read."""

import json
import os

from lm_jax import config as config_lib
from lm_jax.data import tokenizers

# The final validation losses of three seeds of a GPT and of a Llama (the `runs` fixture's).
GPT = [1.90, 1.88, 1.89]
LLAMA = [1.63, 1.65, 1.62]


def make_run(workdir, config, seed, val_loss, last_step=None, elapsed=(1.0, 2.0, 3.0)):
  """A run directory as training leaves it, with the given final validation loss."""
  os.makedirs(workdir)
  config = config_lib.override(config, {"seed": str(seed)})
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  tokenizers.save(tokenizers.CharTokenizer("\n abcdefgh"), os.path.join(workdir, "tokenizer.json"))
  n = config.train.num_steps if last_step is None else last_step
  rows = [
    {
      "step": s,
      "train_loss": 3.0 - s / 10 - seed / 100,
      "tokens_per_sec": 100.0 * i,
      "elapsed_sec": t,
    }
    # Ragged on purpose: a run cut short (last_step) logs fewer steps than `elapsed` has times.
    for i, (s, t) in enumerate(zip(range(2, n + 1, 2), elapsed, strict=False), 1)
  ]
  rows.append({"step": n, "val_loss": val_loss})
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(workdir)
