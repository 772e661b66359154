"""Evaluates a run on a whole split; prints one JSON object on stdout.

  python scripts/evaluate.py --workdir runs/gpt_cpu --split test [--checkpoint_step N | --best]

`lm-jax evaluate` is the same command; lm_jax/commands/evaluate.py holds it and says more.
"""

from lm_jax.commands import evaluate

if __name__ == "__main__":
  evaluate.run()
