"""Imports a local Hugging Face model directory as a run at step 0.

  lm-jax import-hf --hf_dir ~/models/gpt2 --workdir runs/gpt2 [--config BASE.py]
      [--config.KEY=VALUE ...]

The run's config is BASE (default: configs/shakespeare_char_gpt_cpu.py) with
the model's shape as config.model and its tokenizer (data.tokenizer=hf); the
run holds config.json, tokenizer.json and a checkpoint at step 0, so
`lm-jax sample` and `lm-jax evaluate` work on it at once, and
`lm-jax train --workdir RUN` fine-tunes it on BASE's data.
"""

import sys
import time

from absl import flags

from lm_jax import cli
from lm_jax import config as config_lib

flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory.", required=True)
flags.DEFINE_string("workdir", None, "The new run's directory.", required=True)
flags.DEFINE_string("config", None, "Base config: path.py[:arg] or path.json.")
FLAGS = flags.FLAGS


def main(argv, overrides):
  del argv
  from configs import shakespeare_char_gpt_cpu  # Imported late so --help stays fast.
  from lm_jax.hf import runs as hf_runs

  base = config_lib.load(FLAGS.config) if FLAGS.config else shakespeare_char_gpt_cpu.get_config()
  start = time.perf_counter()
  hf_runs.import_hf(FLAGS.hf_dir, FLAGS.workdir, config_lib.override(base, overrides))
  print(
    f"imported {FLAGS.hf_dir} into {FLAGS.workdir} in {time.perf_counter() - start:.1f} s",
    file=sys.stderr,
  )


def run(argv: list[str] | None = None) -> None:
  cli.run_with_overrides(main, argv)
