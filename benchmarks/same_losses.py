"""Whether two runs logged the same losses: bit for bit, or the first step that differs and by how
much (relative), for each loss metrics.jsonl holds.

  python benchmarks/same_losses.py runs/before runs/after

Used to show that a change which should not alter training (a refactoring) does not: train the
same config with the code before and after it, each into its own workdir, then compare.
"""

import json
import sys


def logged(workdir: str) -> dict[str, dict[int, float]]:
  """{metric: {step: value}} of every *loss* metric in WORKDIR/metrics.jsonl."""
  found = {}
  with open(f"{workdir}/metrics.jsonl") as f:
    for line in f:
      record = json.loads(line)
      for key, value in record.items():
        if "loss" in key:
          found.setdefault(key, {})[record["step"]] = value
  return found


def compare(a: dict, b: dict) -> list[str]:
  lines = []
  for key in sorted(a.keys() | b.keys()):
    x, y = a.get(key, {}), b.get(key, {})
    if x.keys() != y.keys():
      lines.append(f"{key}: logged at different steps ({len(x)} against {len(y)})")
      continue
    differ = [s for s in sorted(x) if x[s] != y[s]]
    if not differ:
      lines.append(f"{key}: {len(x)} values, bit for bit")
      continue
    worst = max(abs(x[s] - y[s]) / max(abs(x[s]), 1e-30) for s in differ)
    lines.append(
      f"{key}: {len(differ)} of {len(x)} differ, first at step {differ[0]} "
      f"({x[differ[0]]!r} against {y[differ[0]]!r}), at most {worst:.2e} relative"
    )
  return lines


if __name__ == "__main__":
  print("\n".join(compare(logged(sys.argv[1]), logged(sys.argv[2]))))
