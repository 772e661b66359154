"""Runs every combination of configs, grid values and seeds, each as its own run under --root.

  lm-jax sweep --config configs/shakespeare_char_gpt_cpu.py --root runs/lr \
    --grid optim.learning_rate=1e-3,3e-3 --seeds 0,1,2 [--config.KEY=VALUE ...] [--jobs N]
  lm-jax sweep --root runs/gpt_vs_llama --seeds 0,1,2 \
    --config configs/shakespeare_char_gpt_cpu.py,configs/shakespeare_char_llama.py

The same command again skips finished runs and resumes the others. Exit
status: the number of failed runs (128 + the signal number when stopped).
"""

import os
import sys

from absl import flags

from lm_jax import UserError, cli
from lm_jax.experiments import sweep

flags.DEFINE_list("config", None, "Config files (path.py[:arg] or .json), comma-separated.")
flags.DEFINE_string("root", None, "Directory that holds the runs and sweep.json.")
flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,...: values to sweep; repeat for more keys.")
flags.DEFINE_string("seeds", None, "Seeds, comma-separated (default: each config's own).")
flags.DEFINE_integer("jobs", 1, "Runs at once: the CPU cores (or the GPUs) are split between them.")
flags.DEFINE_string(
  "train_script",
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"),
  "The training script each run calls with --config, --workdir and --config.KEY=VALUE.",
)
FLAGS = flags.FLAGS


def main(argv, overrides):
  del argv
  if not FLAGS.config or not FLAGS.root:
    raise UserError("pass --config CONFIG.py[,OTHER.py] and --root DIR.")
  seeds = sweep.parse_seeds(FLAGS.seeds) if FLAGS.seeds else None
  grid = sweep.parse_grid(FLAGS.grid)
  runs = sweep.expand(FLAGS.config, grid, seeds, overrides, FLAGS.root)
  sys.exit(sweep.run_sweep(runs, FLAGS.root, FLAGS.train_script, FLAGS.jobs))


def run(argv: list[str] | None = None) -> None:
  cli.run_with_overrides(main, argv)
