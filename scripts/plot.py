"""Plots train and validation loss of one or more runs.

python scripts/plot.py runs/gpt_cpu runs/lstm --out curves.png
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  return rows, config["train"]["batch_size"] * config["data"]["seq_len"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="Run directories.")
  parser.add_argument("--out", default="curves.png", help="Image file to write.")
  args = parser.parse_args()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, workdir in enumerate(args.workdirs):
    rows, tokens_per_step = read(workdir)
    label = os.path.basename(os.path.normpath(workdir))
    color = f"C{i}"
    for key, style in (("train_loss", "-"), ("val_loss", "o--")):
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if not pts:
        continue
      steps, values = zip(*pts)
      kind = "train" if key == "train_loss" else "val"
      axes[0].plot(steps, values, style, color=color, label=f"{label} {kind}", markersize=3)
      axes[1].plot(
        [s * tokens_per_step for s in steps],
        values,
        style,
        color=color,
        label=f"{label} {kind}",
        markersize=3,
      )
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
