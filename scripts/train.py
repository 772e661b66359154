"""Trains a language model: python scripts/train.py --config CONFIG --workdir DIR."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from lm_jax import UserError  # noqa: E402
from lm_jax import config as config_lib  # noqa: E402

flags.DEFINE_string("config", None, "Config file: path.py[:arg] or path.json.")
flags.DEFINE_string("workdir", None, "Directory for the run's records and checkpoints.")
FLAGS = flags.FLAGS
OVERRIDES, ARGV = config_lib.split_overrides(sys.argv)


def main(argv):
  del argv
  from lm_jax import train  # Imported late so --help stays fast.

  try:
    if not FLAGS.config or not FLAGS.workdir:
      raise UserError("pass --config CONFIG.py and --workdir DIR.")
    config = config_lib.override(config_lib.load(FLAGS.config), OVERRIDES)
    train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, argv=ARGV)
