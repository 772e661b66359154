"""Plots train and validation loss of runs, or of groups of runs as a mean with a band.

python scripts/plot.py runs/gpt_cpu runs/lstm --out curves.png
python scripts/plot.py runs/gpt_vs_llama --group_by model.name --band std --out curves.png
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lm_jax import UserError, console, records  # noqa: E402
from lm_jax.experiments import compare

CURVES = (("train_loss", "-", "train"), ("val_loss", "o--", "val"))


def tokens_per_step(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  return config["train"]["batch_size"] * config["data"]["seq_len"]


def draw(axes, label, color, workdirs, band):
  """One run's curves, or a group's mean curves with a band when it has several runs."""
  rows = [records.read_metrics(w) for w in workdirs]
  scale = tokens_per_step(workdirs[0])
  for key, style, kind in CURVES:
    steps, mean, low, high = compare.mean_curve(rows, key, band)
    if not steps:
      continue
    for ax, xs in zip(axes, (steps, [s * scale for s in steps])):
      ax.plot(xs, mean, style, color=color, label=f"{label} {kind}", markersize=3)
      if len(workdirs) > 1 and kind == "train":
        ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
      elif len(workdirs) > 1:  # Evaluations are few points: bars show their band.
        bars = [[m - lo for m, lo in zip(mean, low)], [hi - m for m, hi in zip(mean, high)]]
        ax.errorbar(xs, mean, yerr=bars, fmt="none", ecolor=color, capsize=3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", help="Run or sweep directories.")
  parser.add_argument("--out", default="curves.png", help="Image file to write.")
  parser.add_argument(
    "--group_by", default="", help="Config keys, comma-separated: one curve each."
  )
  parser.add_argument("--band", default="minmax", help="Band around a group's mean: minmax or std.")
  parser.add_argument("--verbose", action="store_true", help="Show the libraries' own logging.")
  args = parser.parse_args()
  console.setup(args.verbose)
  try:
    if args.group_by:
      groups = compare.group_runs(args.paths, args.group_by.split(","))
    else:
      groups = [(os.path.basename(os.path.normpath(w)), [w]) for w in compare.find_runs(args.paths)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, workdirs) in enumerate(groups):
      n = f" ({len(workdirs)} runs, {args.band})" if len(workdirs) > 1 else ""
      draw(axes, label + n, f"C{i}", workdirs, args.band)
  except UserError as e:
    sys.exit(f"error: {e}")
  for ax, xlabel in zip(axes, ("step", "tokens seen")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(args.out, dpi=120)
  print(args.out)


if __name__ == "__main__":
  main()
