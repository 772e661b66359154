"""Trains a language model, or resumes the run in --workdir.

  python scripts/train.py --config CONFIG.py --workdir DIR [--config.KEY=VALUE ...]
  python scripts/train.py --workdir DIR                      # resume
  python scripts/train.py --workdir DIR --config.train.num_steps=4000 --override=train.num_steps
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from lm_jax import UserError  # noqa: E402
from lm_jax import config as config_lib  # noqa: E402

flags.DEFINE_string("config", None, "Config file: path.py[:arg] or path.json. "
                    "Optional when --workdir holds a run to resume.")
flags.DEFINE_string("workdir", None, "Directory for the run's records and checkpoints.")
flags.DEFINE_list("override", [], "Config keys that may differ from the stored config "
                  "of the run being resumed, e.g. train.num_steps.")
FLAGS = flags.FLAGS
OVERRIDES, ARGV = config_lib.split_overrides(sys.argv)


def main(argv):
  del argv
  from lm_jax import train  # Imported late so --help stays fast.

  try:
    if not FLAGS.workdir:
      raise UserError("pass --workdir DIR (and --config CONFIG.py to start a new run).")
    config = config_lib.for_workdir(FLAGS.workdir, FLAGS.config, OVERRIDES, FLAGS.override)
    train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as e:
    sys.exit(f"error: {e}")
  except train.Preempted as e:
    print(e, file=sys.stderr)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  app.run(main, argv=ARGV)
