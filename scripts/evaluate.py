"""Evaluates a run on a whole split; prints one JSON object on stdout.

  python scripts/evaluate.py --workdir runs/gpt_cpu --split test [--checkpoint_step N | --best]

Writes the same object to WORKDIR/eval_<split>_<step>.json.
"""

import json
import sys

from absl import app, flags

from lm_jax import UserError, console

flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
flags.DEFINE_enum("split", "validation", ["validation", "test", "train"], "Split to evaluate.")
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to evaluate (default: the newest).")
flags.DEFINE_bool("best", False, "Evaluate the checkpoint with the lowest validation loss.")
flags.DEFINE_integer("batch_size", 0, "Rows per eval batch (default: the run's).")
flags.DEFINE_string("parallel", "", "jit, pmap or auto (default: the run's train.parallel).")
flags.DEFINE_bool("verbose", False, "Show the libraries' own logging (also: LM_JAX_VERBOSE=1).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  console.setup(FLAGS.verbose)
  from lm_jax import evaluate, runs  # Imported late so --help stays fast.

  try:
    if FLAGS.best and FLAGS.checkpoint_step is not None:
      raise UserError("pass --checkpoint_step N or --best, not both.")
    step = runs.best_step(FLAGS.workdir) if FLAGS.best else FLAGS.checkpoint_step
    result = evaluate.evaluate_run(
      FLAGS.workdir, FLAGS.split, step, FLAGS.batch_size, FLAGS.parallel
    )
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
