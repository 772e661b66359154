"""Comparisons from run directories: groups, statistics, differing keys, skipped runs, curves."""

import json

import pytest
from helpers.experiments import GPT, LLAMA

from lm_jax import UserError
from lm_jax.experiments import compare, stats


def test_groups_statistics_and_test_against_the_baseline(runs):
  root, gpt, llama = runs
  result = compare.compare([str(root)], ["model.name"], baseline="gpt")
  g, m = result["groups"]
  assert (g["key"], m["key"], result["baseline"]) == (
    {"model.name": "gpt"},
    {"model.name": "llama"},
    {"model.name": "gpt"},
  )
  for group, values in ((g, GPT), (m, LLAMA)):
    assert {k: group[k] for k in ("n", "mean", "std", "ci95", "min", "max")} == stats.summarize(
      values
    )
    assert sorted(r["value"] for r in group["runs"]) == sorted(values)
    assert group["tokens_per_sec"] == 200.0  # The median of 100, 200, 300 in every run.
    assert group["wall_sec"] == 3.0
  # Width 16, context 16, 10 characters, tied heads, no biases. GPT, 2 layers: 12 d^2 + 2 d
  # each, a final norm, positions and tokens. Llama, 1 layer: queries and output 2 d^2, one
  # key-value head of width 8 (2 x 16 x 8), SwiGLU 3 x 16 x 48, two norms; a final norm, tokens.
  assert g["params"] == 2 * (12 * 16 * 16 + 2 * 16) + 16 + 16 * 16 + 10 * 16
  assert m["params"] == 2 * 16 * 16 + 2 * 16 * 8 + 3 * 16 * 48 + 2 * 16 + 16 + 10 * 16
  assert g["vs_baseline"] is None
  assert m["vs_baseline"] == stats.welch(LLAMA, GPT)
  assert m["vs_baseline"]["diff"] == pytest.approx(sum(LLAMA) / 3 - sum(GPT) / 3)
  assert m["vs_baseline"]["p"] < 1e-4
  assert result["differing_keys"]["model.name"] == ["gpt", "llama"]
  assert result["differing_keys"]["model.num_kv_heads"] == ["-", 1]
  assert result["differing_keys"]["model.use_bias"] == [False, "-"]
  assert "seed" not in result["differing_keys"] and result["varying_within"] == ["seed"]
  assert result["skipped"] == [{"workdir": str(root / "llama_cut"), "reason": "at step 2 of 6"}]
  json.dumps(result)  # What --json prints.

  table = compare.format_table(result)
  assert "| model.name=gpt | 3 | 1.8900 ± 0.0100 |" in table
  assert f"| {m['vs_baseline']['diff']:+.4f} [" in table
  assert "model.name (gpt | llama)" in table and "model.use_bias (false | -)" in table


def test_default_groups_are_configs_that_differ_only_in_the_seed(runs):
  root, _, _ = runs
  dirs = [str(root / f"{m}{s}") for m in ("llama", "gpt") for s in range(3)]
  result = compare.compare(dirs, baseline="gpt")
  assert [g["n"] for g in result["groups"]] == [3, 3]
  assert result["groups"][0]["key"]["model.name"] == "llama"
  assert result["baseline"]["model.name"] == "gpt"
  assert "model.num_kv_heads" in result["group_by"] and "seed" not in result["group_by"]
  with pytest.raises(UserError, match="matches 0 groups"):
    compare.compare(dirs, baseline="lstm")
  with pytest.raises(UserError, match="no run's config has it"):
    compare.compare(dirs, ["model.depth"])
  with pytest.raises(UserError, match="no run logs 'test_loss'"):
    compare.compare(dirs, metric="test_loss")
  with pytest.raises(UserError, match="holds no run"):
    compare.compare([str(root / "gpt0" / "missing")])


def test_wall_time_adds_up_the_pieces_of_a_resumed_run():
  rows = [{"step": 2, "elapsed_sec": 1.0}, {"step": 4, "elapsed_sec": 3.0}, {"step": 4}]
  rows += [{"step": 6, "elapsed_sec": 0.5}, {"step": 8, "elapsed_sec": 1.5}]
  assert compare.wall_sec(rows) == 4.5
  assert compare.wall_sec([{"step": 2}]) is None


def test_mean_curve_over_the_steps_every_run_logged():
  a = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 4.0}, {"step": 3, "loss": 0.0}]
  b = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]
  assert compare.mean_curve([a, b], "loss") == ([1, 2], [2.0, 3.0], [1.0, 2.0], [3.0, 4.0])
  steps, mean, lo, hi = compare.mean_curve([a, b], "loss", band="std")
  sd = 2**0.5  # Two values 2 apart.
  assert (steps, mean) == ([1, 2], [2.0, 3.0])
  assert lo == pytest.approx([2 - sd, 3 - sd]) and hi == pytest.approx([2 + sd, 3 + sd])
