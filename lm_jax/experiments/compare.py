"""Comparing groups of runs from their directories alone: is a change beyond seed noise?

A run contributes the metric at its final evaluation (the metrics.jsonl line
at train.num_steps); runs that have not reached it are listed as skipped.
Runs are grouped by config keys (default: every key but the seed), each group
summarized over its runs, and every group set against a baseline group by the
difference of means, its interval and Welch's t-test.
"""

import json
import os
import statistics

from lm_jax import UserError, records
from lm_jax import config as config_lib
from lm_jax.experiments import stats, sweep

_MISSING = "-"  # How a key a run's config lacks (a GPT key in a Llama run) is shown.


def find_runs(paths: list[str]) -> list[str]:
  """Run directories from run or sweep directories (a sweep lists its runs in sweep.json)."""
  workdirs = []
  for path in paths:
    if os.path.exists(os.path.join(path, sweep.SWEEP_FILE)):
      try:
        with open(os.path.join(path, sweep.SWEEP_FILE)) as f:
          found = [os.path.join(path, e["workdir"]) for e in json.load(f)["runs"]]
      except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}/{sweep.SWEEP_FILE} is not a sweep record ({e}): check it.") from e
      found = [w for w in found if os.path.exists(os.path.join(w, "config.json"))]
    elif os.path.exists(os.path.join(path, "config.json")):
      found = [path]
    elif os.path.isdir(path):
      subdirs = sorted(os.path.join(path, d) for d in os.listdir(path))
      found = [w for w in subdirs if os.path.exists(os.path.join(w, "config.json"))]
    else:
      found = []
    if not found:
      raise UserError(f"{path} holds no run (config.json) and no sweep (sweep.json): check it.")
    workdirs += [w for w in found if w not in workdirs]
  return workdirs


def wall_sec(rows: list[dict]) -> float | None:
  """Training time of the steps a run kept: elapsed_sec restarts at 0 on each resume."""
  total = last = 0.0
  seen = False
  for r in rows:
    if "elapsed_sec" in r:
      if r["elapsed_sec"] < last:
        total += last
      last, seen = r["elapsed_sec"], True
  return total + last if seen else None


def num_params(workdir: str, model_config) -> int | None:
  """Parameters of the run's model, from its config and tokenizer (shapes only, nothing runs)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from lm_jax import models  # pylint: disable=g-import-not-at-top
  from lm_jax.data import tokenizers

  try:
    tokenizer = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
    model = models.build_model(model_config, tokenizer.vocab_size)
  except (UserError, OSError):
    return None
  init = lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  params = jax.eval_shape(init)["params"]  # Abstract all through: no backend starts.
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def load_run(workdir: str, metric: str) -> dict:
  """One run's record: its config, the metric at its final step (None if not there yet), speed."""
  config = config_lib.load(os.path.join(workdir, "config.json"))
  rows = records.read_metrics(workdir)
  last = config.train.num_steps
  final = [r[metric] for r in rows if r.get("step") == last and metric in r]
  speeds = [r["tokens_per_sec"] for r in rows if "tokens_per_sec" in r]
  return {
    "workdir": workdir,
    "config": config,
    "seed": config.get("seed"),
    "value": final[-1] if final else None,
    "steps": max((r["step"] for r in rows if metric in r), default=0),
    "wall_sec": wall_sec(rows),
    "tokens_per_sec": statistics.median(speeds) if speeds else None,
    "has_metric": any(metric in r for r in rows),
  }


def _flat(config) -> dict:
  return {k: config_lib.get(config, k) for k in config_lib.flat_keys(config)}


def _group_keys(runs: list[dict], group_by: list[str]) -> list[tuple]:
  if group_by:
    known = set().union(*(config_lib.flat_keys(r["config"]) for r in runs))
    unknown = [k for k in group_by if k not in known]
    if unknown:
      raise UserError(f"--group_by {','.join(unknown)}: no run's config has it; check the key.")
    return [tuple(_flat(r["config"]).get(k, _MISSING) for k in group_by) for r in runs]
  return [
    tuple(sorted((k, json.dumps(v)) for k, v in _flat(r["config"]).items() if k != "seed"))
    for r in runs
  ]


def _spread(groups: list[list[dict]]) -> tuple[dict, list[str]]:
  """Keys whose values differ between groups (value per group), and keys that vary within one."""
  flats = [[_flat(r["config"]) for r in g] for g in groups]
  keys = sorted(set().union(*(f.keys() for fs in flats for f in fs)))
  between, within = {}, []
  for k in keys:
    values = [sorted({json.dumps(f.get(k, _MISSING)) for f in fs}) for fs in flats]
    if any(len(v) > 1 for v in values):
      within.append(k)
    if any(v != values[0] for v in values):
      between[k] = [[json.loads(x) for x in v] if len(v) > 1 else json.loads(v[0]) for v in values]
  return between, within


def _label(key: dict) -> str:
  return ", ".join(f"{k}={v}" for k, v in key.items()) or "all runs"


def _pick_baseline(keys: list[dict], baseline: str | None) -> int:
  if baseline is None:
    return 0
  matches = [
    i
    for i, key in enumerate(keys)
    if baseline in (_label(key), ",".join(str(v) for v in key.values()))
    or baseline in {str(v) for v in key.values()} | {json.dumps(v) for v in key.values()}
  ]
  if len(matches) != 1:
    labels = "; ".join(_label(k) for k in keys)
    raise UserError(
      f"--baseline {baseline!r} matches {len(matches)} groups, not one: name one of {labels}."
    )
  return matches[0]


def compare(
  paths: list[str], group_by: list[str] | None = None, metric: str = "val_loss", baseline=None
) -> dict:
  """The comparison as one JSON-able object: groups with their statistics and runs.

  {"metric", "group_by", "baseline", "groups": [{"key", "n", "mean", "std",
  "ci95", "min", "max", "wall_sec", "tokens_per_sec", "params", "vs_baseline",
  "runs"}], "differing_keys", "varying_within", "skipped"}
  """
  loaded = [load_run(w, metric) for w in find_runs(paths)]
  if not any(r["has_metric"] for r in loaded):
    raise UserError(f"no run logs {metric!r} in metrics.jsonl: pick another --metric.")
  skipped = [
    {"workdir": r["workdir"], "reason": f"at step {r['steps']} of {r['config'].train.num_steps}"}
    for r in loaded
    if r["value"] is None
  ]
  runs = [r for r in loaded if r["value"] is not None]
  if not runs:
    raise UserError(f"no run has reached its final step among {', '.join(paths)}: finish them.")
  keys = _group_keys(runs, group_by or [])
  order = list(dict.fromkeys(keys))
  groups = [[r for r, k in zip(runs, keys, strict=True) if k == key] for key in order]
  between, within = _spread(groups)
  if group_by:
    group_keys = [dict(zip(group_by, k, strict=True)) for k in order]
  else:
    group_keys = [{k: v[i] for k, v in between.items()} for i in range(len(groups))]
  base = _pick_baseline(group_keys, baseline)
  base_values = [r["value"] for r in groups[base]]
  params = {}
  out_groups = []
  for key, g in zip(group_keys, groups, strict=True):
    values = [r["value"] for r in g]
    model_key = json.dumps(g[0]["config"].model.to_dict(), sort_keys=True)
    if model_key not in params:
      params[model_key] = num_params(g[0]["workdir"], g[0]["config"].model)
    out_groups.append(
      {
        "key": key,
        **stats.summarize(values),
        "wall_sec": _mean_of(g, "wall_sec"),
        "tokens_per_sec": _mean_of(g, "tokens_per_sec"),
        "params": params[model_key],
        "vs_baseline": None if g is groups[base] else stats.welch(values, base_values),
        "runs": [
          {k: r[k] for k in ("workdir", "seed", "value", "wall_sec", "tokens_per_sec")} for r in g
        ],
      }
    )
  return {
    "metric": metric,
    "group_by": group_by or sorted(between),
    "baseline": group_keys[base],
    "groups": out_groups,
    "differing_keys": between,
    "varying_within": within,
    "skipped": skipped,
  }


def _mean_of(runs: list[dict], field: str) -> float | None:
  values = [r[field] for r in runs if r[field] is not None]
  return stats.mean(values) if values else None


def _num(x, fmt: str = ".4f") -> str:
  return "" if x is None else format(x, fmt)


def _p(p) -> str:
  return "" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def format_table(result: dict) -> str:
  """The comparison as a Markdown table with notes under it."""
  m = result["metric"]
  head = ["group", "runs", f"{m} mean ± std", "95% CI of mean", "min", "max"]
  head += ["wall s", "tokens/s", "params", "diff vs baseline (95% CI)", "p (Welch)"]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for g in result["groups"]:
    vs = g["vs_baseline"]
    diff = "baseline" if g["key"] == result["baseline"] else ""
    if vs is not None:
      diff = f"{vs['diff']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]"
    cells = [
      _label(g["key"]),
      str(g["n"]),
      f"{g['mean']:.4f} ± {_num(g['std'])}" if g["std"] is not None else f"{g['mean']:.4f}",
      f"[{g['ci95'][0]:.4f}, {g['ci95'][1]:.4f}]" if g["ci95"] else "",
      _num(g["min"]),
      _num(g["max"]),
      _num(g["wall_sec"], ".0f"),
      _num(g["tokens_per_sec"], ",.0f"),
      _num(g["params"], ","),
      diff,
      _p(vs["p"]) if vs else "",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(f"{m} at each run's final step; baseline: {_label(result['baseline'])}")
  differing = [
    f"{k} ({' | '.join(json.dumps(v) if not isinstance(v, str) else v for v in vs)})"
    for k, vs in result["differing_keys"].items()
  ]
  lines.append("keys that differ between groups: " + (", ".join(differing) or "none"))
  lines.append("keys that vary within groups: " + (", ".join(result["varying_within"]) or "none"))
  for s in result["skipped"]:
    lines.append(f"skipped {s['workdir']}: unfinished, {s['reason']}")
  return "\n".join(lines)


def mean_curve(runs_rows: list[list[dict]], key: str, band: str = "minmax"):
  """(steps, mean, low, high) of `key` over runs, at the steps every run logged it.

  The band is the runs' min and max (`minmax`) or the mean -+ one standard
  deviation (`std`).
  """
  if band not in ("minmax", "std"):
    raise UserError(f"--band {band!r}: use minmax or std.")
  per_run = [{r["step"]: r[key] for r in rows if key in r} for rows in runs_rows]
  steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
  means, lows, highs = [], [], []
  for s in steps:
    values = [p[s] for p in per_run]
    m = stats.mean(values)
    if band == "minmax":
      lo, hi = min(values), max(values)
    else:
      sd = stats.std(values) or 0.0
      lo, hi = m - sd, m + sd
    means.append(m)
    lows.append(lo)
    highs.append(hi)
  return steps, means, lows, highs


def group_runs(paths: list[str], group_by: list[str]) -> list[tuple[str, list[str]]]:
  """(label, workdirs) per group of the runs under `paths`, grouped by config keys."""
  workdirs = find_runs(paths)
  configs = [{"config": config_lib.load(os.path.join(w, "config.json"))} for w in workdirs]
  keys = _group_keys(configs, group_by)
  order = list(dict.fromkeys(keys))
  return [
    (
      _label(dict(zip(group_by, key, strict=True))),
      [w for w, k in zip(workdirs, keys, strict=True) if k == key],
    )
    for key in order
  ]
