"""Evaluates a run's checkpoint on lm-evaluation-harness tasks; prints the harness's table.

  lm-jax eval-harness --workdir runs/gpt_cpu --tasks shakespeare_cloze \
      --include_path tasks/ [--limit N] [--num_fewshot K] [--step S] [--output FILE] \
      [--log_samples]

Writes the results to WORKDIR/harness/<step>.json (or --output) in the harness's format, the
per-request samples beside them with --log_samples, and each task metric to metrics.jsonl and
TensorBoard as harness/<task>/<metric>. Needs the harness: pip install -e .[harness].
"""

import sys

from absl import flags

from lm_jax import UserError, cli

flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
flags.DEFINE_list("tasks", None, "Harness task names, comma-separated.", required=True)
flags.DEFINE_integer("limit", None, "Documents per task (default: all).")
flags.DEFINE_integer("num_fewshot", None, "Few-shot examples (default: each task's own).")
flags.DEFINE_string("include_path", "", "A folder of task YAMLs, searched besides the harness's.")
flags.DEFINE_integer("step", None, "Checkpoint to evaluate (default: the newest).")
flags.DEFINE_string("output", "", "Results file (default: WORKDIR/harness/<step>.json).")
flags.DEFINE_bool("log_samples", False, "Also write each request's inputs and outputs.")
flags.DEFINE_integer("batch_size", 0, "Rows per batch (default: the run's eval batch size).")
flags.DEFINE_string("parallel", "", "jit, pmap, sharded or auto (default: the run's).")
flags.DEFINE_integer("max_gen_toks", 256, "New tokens at most, for tasks that do not say.")
FLAGS = flags.FLAGS
INSTALL = "the harness is not installed: pip install -e .[harness] (lm-eval and accelerate)."


def main(argv):
  del argv
  try:
    from lm_jax import harness  # pylint: disable=g-import-not-at-top  (late: --help stays fast)
  except ImportError as e:
    if e.name not in ("lm_eval", "accelerate", "datasets"):
      raise
    raise UserError(INSTALL) from e
  keys = "limit num_fewshot include_path step output log_samples batch_size max_gen_toks".split()
  options = {k: getattr(FLAGS, k) for k in keys}  # Flags named as evaluate_run's keywords.
  results, path = harness.evaluate_run(
    FLAGS.workdir, FLAGS.tasks, parallel_mode=FLAGS.parallel, **options
  )
  print(harness.table(results))
  r = results["lm_jax"]
  print(
    f"step {r['step']}: {r['requests']} requests in {r['wall_sec']:.1f} s with task loading and "
    f"compilation ({r['requests_per_sec'] or 0:,.1f} requests/s answering them); results in {path}",
    file=sys.stderr,
  )


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
