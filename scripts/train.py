"""Trains a language model, or resumes the run in --workdir.

  python scripts/train.py --config CONFIG.py --workdir DIR [--config.KEY=VALUE ...]
  python scripts/train.py --workdir DIR                      # resume
  python scripts/train.py --workdir DIR --config.train.num_steps=4000 --override=train.num_steps

Several hosts: run the same command on each, adding
  --coordinator_address HOST:PORT --num_processes N --process_id I
(on TPU pods, SLURM and Open MPI, `--distributed` alone lets JAX find them).
"""

import sys

from absl import app, flags

from lm_jax import UserError, console
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
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
flags.DEFINE_bool(
  "distributed",
  False,
  "Initialize jax.distributed from the cluster's own "
  "environment (TPU pod, SLURM, Open MPI) when the three flags above are absent.",
)
flags.DEFINE_bool("verbose", False, "Show the libraries' own logging (also: LM_JAX_VERBOSE=1).")
FLAGS = flags.FLAGS
OVERRIDES, ARGV = config_lib.split_overrides(sys.argv)


def main(argv):
  del argv
  console.setup(FLAGS.verbose)
  import jax  # pylint: disable=g-import-not-at-top

  from lm_jax import parallel, profiling  # Imported late so --help stays fast.

  try:
    # Before importing Orbax (lm_jax.train), which starts JAX's backend.
    parallel.initialize_distributed(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
    )
    if not FLAGS.workdir:
      raise UserError("pass --workdir DIR (and --config CONFIG.py to start a new run).")
    config = config_lib.for_workdir(FLAGS.workdir, FLAGS.config, OVERRIDES, FLAGS.override)
    parallel.prepare_cpu_backend(config)
    for option, value in profiling.compilation_cache_options(config).items():
      jax.config.update(option, value)  # Before anything compiles.
  except UserError as e:
    sys.exit(f"error: {e}")
  from lm_jax import train  # Only now: the device count is set.

  try:
    train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as e:
    sys.exit(f"error: {e}")
  except train.Preempted as e:
    print(e, file=sys.stderr)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  app.run(main, argv=ARGV)
