"""Plots train and validation loss of runs, or of groups of runs as a mean with a band.

  python scripts/plot.py runs/gpt_cpu runs/lstm --out curves.png
  python scripts/plot.py runs/gpt_vs_llama --group_by model.name --band std --out curves.png

`lm-jax plot` is the same command; lm_jax/commands/plot.py holds it and says more.
"""

from lm_jax.commands import plot

if __name__ == "__main__":
  plot.run()
