"""Measures training and generation speed of a config on synthetic tokens.

  python scripts/benchmark.py --config configs/shakespeare_char_gpt_cpu.py --steps 20

`lm-jax benchmark` is the same command; lm_jax/commands/benchmark.py holds it and says more.
"""

from lm_jax.commands import benchmark

if __name__ == "__main__":
  benchmark.run()
