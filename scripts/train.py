"""Trains a language model, or resumes the run in --workdir.

  python scripts/train.py --config CONFIG.py --workdir DIR [--config.KEY=VALUE ...]
  python scripts/train.py --workdir DIR                      # resume
  python scripts/train.py --workdir DIR --config.train.num_steps=4000 --override=train.num_steps

`lm-jax train` is the same command; lm_jax/commands/train.py holds it and says more.
"""

from lm_jax.commands import train

if __name__ == "__main__":
  train.run()
