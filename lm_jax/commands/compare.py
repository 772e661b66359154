"""Compares groups of runs: the metric over seeds, and each group against a baseline.

  lm-jax compare runs/gpt_vs_llama --group_by model.name --baseline gpt
  lm-jax compare runs/a runs/b runs/sweep --metric val_loss --json

Arguments are run directories or sweep directories (their sweep.json lists the
runs). Without --group_by, runs whose configs differ only in the seed form a group.
"""

import json

from absl import flags

from lm_jax import UserError, cli
from lm_jax.experiments import compare

flags.DEFINE_list("group_by", [], "Config keys that define a group, e.g. model.name.")
flags.DEFINE_string("metric", "val_loss", "A metrics.jsonl key, taken at each run's final step.")
flags.DEFINE_string("baseline", None, "The baseline group's value(s) (default: the first group).")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
FLAGS = flags.FLAGS


def main(argv):
  paths = argv[1:]
  if not paths:
    raise UserError("name run or sweep directories: compare.py runs/sweep [runs/other ...].")
  result = compare.compare(paths, FLAGS.group_by, FLAGS.metric, FLAGS.baseline)
  print(json.dumps(result, indent=2) if FLAGS.json else compare.format_table(result))


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
