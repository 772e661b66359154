"""Evaluates a run on a whole split; prints one JSON object on stdout.

  lm-jax evaluate --workdir runs/gpt_cpu --split test [--checkpoint_step N | --best]

Writes the same object to WORKDIR/eval_<split>_<step>.json.
"""

import json

from absl import flags

from lm_jax import cli

flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
flags.DEFINE_enum("split", "validation", ["validation", "test", "train"], "Split to evaluate.")
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to evaluate (default: the newest).")
flags.DEFINE_bool("best", False, "Evaluate the checkpoint with the lowest validation loss.")
flags.DEFINE_integer("batch_size", 0, "Rows per eval batch (default: the run's).")
flags.DEFINE_string("parallel", "", "jit, pmap or auto (default: the run's train.parallel).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from lm_jax import UserError, evaluate, runs  # Imported late so --help stays fast.

  if FLAGS.best and FLAGS.checkpoint_step is not None:
    raise UserError("pass --checkpoint_step N or --best, not both.")
  step = runs.best_step(FLAGS.workdir) if FLAGS.best else FLAGS.checkpoint_step
  result = evaluate.evaluate_run(FLAGS.workdir, FLAGS.split, step, FLAGS.batch_size, FLAGS.parallel)
  print(json.dumps(result))


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
