"""Compares groups of runs: the metric over seeds, and each group against a baseline.

  python scripts/compare.py runs/gpt_vs_llama --group_by model.name --baseline gpt
  python scripts/compare.py runs/a runs/b runs/sweep --metric val_loss --json

`lm-jax compare` is the same command; lm_jax/commands/compare.py holds it and says more.
"""

from lm_jax.commands import compare

if __name__ == "__main__":
  compare.run()
