"""Compiles a run's train step for a TPU slice on any machine with libtpu; prints one JSON object.

  python scripts/compile_check.py --config configs/llama_1b_tpu.py --topology v5e:4x4
  python scripts/compile_check.py --config CONFIG --topology v5p:2x2x2 --config.mesh.tensor=4
  python scripts/compile_check.py --workdir runs/x --topology v5e:2x4  # a run's config, vocabulary

`lm-jax compile-check` is the same command; lm_jax/commands/compile_check.py holds it and says more.
"""

from lm_jax.commands import compile_check

if __name__ == "__main__":
  compile_check.run()
