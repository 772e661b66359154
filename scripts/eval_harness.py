"""Evaluates a run's checkpoint on lm-evaluation-harness tasks; prints the harness's table.

  python scripts/eval_harness.py --workdir runs/gpt_cpu --tasks shakespeare_cloze \
      --include_path tasks/ [--limit N] [--num_fewshot K] [--step S] [--output FILE] \
      [--log_samples]

`lm-jax eval-harness` is the same command; lm_jax/commands/eval_harness.py holds it and says more.
"""

from lm_jax.commands import eval_harness

if __name__ == "__main__":
  eval_harness.run()
