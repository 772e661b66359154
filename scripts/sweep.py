"""Runs every combination of configs, grid values and seeds, each as its own run under --root.

  python scripts/sweep.py --config configs/shakespeare_char_gpt_cpu.py --root runs/lr \
    --grid optim.learning_rate=1e-3,3e-3 --seeds 0,1,2 [--config.KEY=VALUE ...] [--jobs N]
  python scripts/sweep.py --root runs/gpt_vs_llama --seeds 0,1,2 \
    --config configs/shakespeare_char_gpt_cpu.py,configs/shakespeare_char_llama.py

`lm-jax sweep` is the same command; lm_jax/commands/sweep.py holds it and says more.
"""

from lm_jax.commands import sweep

if __name__ == "__main__":
  sweep.run()
