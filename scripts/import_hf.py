"""Imports a local Hugging Face model directory as a run at step 0.

  python scripts/import_hf.py --hf_dir ~/models/gpt2 --workdir runs/gpt2 [--config BASE.py]
      [--config.KEY=VALUE ...]

`lm-jax import-hf` is the same command; lm_jax/commands/import_hf.py holds it and says more.
"""

from lm_jax.commands import import_hf

if __name__ == "__main__":
  import_hf.run()
