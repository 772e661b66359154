"""Plots train and validation loss of runs, or of groups of runs as a mean with a band.

lm-jax plot runs/gpt_cpu runs/lstm --out curves.png
lm-jax plot runs/gpt_vs_llama --group_by model.name --band std --out curves.png
lm-jax plot runs/grpo --metric reward --out reward.png    # METRIC and val_METRIC
"""

import os

from absl import flags

from lm_jax import UserError, cli
from lm_jax import config as config_lib

flags.DEFINE_string("out", "curves.png", "Image file to write.")
flags.DEFINE_list("group_by", [], "Config keys, comma-separated: one curve each.")
flags.DEFINE_enum("band", "minmax", ["minmax", "std"], "Band around a group's mean.")
flags.DEFINE_string(
  "metric", "loss", "What to plot: train_loss and val_loss, or METRIC and val_METRIC."
)
FLAGS = flags.FLAGS


def curves(metric: str) -> tuple:
  """(metrics.jsonl key, line style, label) of the train and validation curves of `metric`."""
  train = "train_loss" if metric == "loss" else metric
  return ((train, "-", "train"), (f"val_{metric}", "o--", "val"))


def tokens_per_step(workdir):
  config = config_lib.load(os.path.join(workdir, "config.json"))
  return config.train.batch_size * config.data.seq_len


def draw(axes, label, color, workdirs, band):
  """One run's curves, or a group's mean curves with a band when it has several runs."""
  from lm_jax import records  # pylint: disable=g-import-not-at-top
  from lm_jax.experiments import compare  # pylint: disable=g-import-not-at-top

  rows = [records.read_metrics(w) for w in workdirs]
  scale = tokens_per_step(workdirs[0])
  for key, style, kind in curves(FLAGS.metric):
    steps, mean, low, high = compare.mean_curve(rows, key, band)
    if not steps:
      continue
    for ax, xs in zip(axes, (steps, [s * scale for s in steps]), strict=True):
      ax.plot(xs, mean, style, color=color, label=f"{label} {kind}", markersize=3)
      if len(workdirs) > 1 and kind == "train":
        ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
      elif len(workdirs) > 1:  # Evaluations are few points: bars show their band.
        bars = [
          [m - lo for m, lo in zip(mean, low, strict=True)],
          [hi - m for m, hi in zip(mean, high, strict=True)],
        ]
        ax.errorbar(xs, mean, yerr=bars, fmt="none", ecolor=color, capsize=3)


def main(argv):
  paths = argv[1:]
  if not paths:
    raise UserError("name run or sweep directories: plot.py runs/a [runs/b ...] --out FILE.png.")
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir) or os.path.isdir(FLAGS.out):
    raise UserError(f"--out {FLAGS.out} is not a file in an existing directory: check the path.")
  import matplotlib  # pylint: disable=g-import-not-at-top  (late, so --help stays fast)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  from lm_jax.experiments import compare  # pylint: disable=g-import-not-at-top

  if FLAGS.group_by:
    groups = compare.group_runs(paths, FLAGS.group_by)
  else:
    groups = [(os.path.basename(os.path.normpath(w)), [w]) for w in compare.find_runs(paths)]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, (label, workdirs) in enumerate(groups):
    n = f" ({len(workdirs)} runs, {FLAGS.band})" if len(workdirs) > 1 else ""
    draw(axes, label + n, f"C{i}", workdirs, FLAGS.band)
  for ax, xlabel in zip(axes, ("step", "tokens seen"), strict=True):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats per token)" if FLAGS.metric == "loss" else FLAGS.metric)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(FLAGS.out, dpi=120)
  print(FLAGS.out)


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
