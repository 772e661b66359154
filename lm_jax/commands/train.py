"""Trains a language model, or resumes the run in --workdir.

  lm-jax train --config CONFIG.py --workdir DIR [--config.KEY=VALUE ...]
  lm-jax train --workdir DIR                      # resume
  lm-jax train --workdir DIR --config.train.num_steps=4000 --override=train.num_steps

Several hosts: run the same command on each, adding
  --coordinator_address HOST:PORT --num_processes N --process_id I
(on TPU pods, SLURM and Open MPI, `--distributed` alone lets JAX find them).
"""

import sys

from absl import flags

from lm_jax import UserError, cli
from lm_jax import config as config_lib

flags.DEFINE_string(
  "config",
  None,
  "Config file: path.py[:arg] or path.json. Optional when --workdir holds a run to resume.",
)
flags.DEFINE_string("workdir", None, "Directory for the run's records and checkpoints.")
flags.DEFINE_list(
  "override",
  [],
  "Config keys that may differ from the stored config "
  "of the run being resumed, e.g. train.num_steps.",
)
cli.define_backend_flags()
FLAGS = flags.FLAGS


def main(argv, overrides):
  del argv
  if not FLAGS.workdir:
    raise UserError("pass --workdir DIR (and --config CONFIG.py to start a new run).")
  config = config_lib.for_workdir(FLAGS.workdir, FLAGS.config, overrides, FLAGS.override)
  cli.start_backend(config)
  from lm_jax import train  # Only now: the device count is set.

  try:
    train.train_and_evaluate(config, FLAGS.workdir)
  except train.Preempted as e:
    print(e, file=sys.stderr)
    sys.exit(128 + e.signum)


def run(argv: list[str] | None = None) -> None:
  cli.run_with_overrides(main, argv)


if __name__ == "__main__":  # The file each run of a sweep starts (lm-jax sweep --train_script).
  run()
