"""Exports a run's newest (or given) checkpoint as a Hugging Face model directory.

  python scripts/export_hf.py --workdir runs/gpt2_shakespeare --out exported/ [--checkpoint_step N]
      [--dtype float32|bfloat16] [--adapters]

`lm-jax export-hf` is the same command; lm_jax/commands/export_hf.py holds it and says more.
"""

from lm_jax.commands import export_hf

if __name__ == "__main__":
  export_hf.run()
