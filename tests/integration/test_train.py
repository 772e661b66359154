"""The train step and loop: parallel equivalence, plugins, records, bad input."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers.runs import train_losses
from helpers.trees import assert_trees_close, assert_trees_equal

from lm_jax import UserError, checkpoint, records, runs, train
from lm_jax import config as config_lib


class Bigram(nn.Module):
  """A plugin model named as 'integration.test_train:Bigram': next token from this token only."""

  vocab_size: int
  width: int = 8

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True):
    return nn.Dense(self.vocab_size)(nn.Embed(self.vocab_size, self.width)(tokens_BxL))


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_pmap_equals_jit(config, tmp_path, model):
  if model == "lstm":
    config.model = config_lib.load("configs/shakespeare_char_lstm.py").model
    config.model.update(embed_size=16, hidden_size=16)
  assert jax.local_device_count() == 8
  results = {}
  for mode in ("jit", "pmap"):
    config.train.parallel = mode
    state, ev = train.train_and_evaluate(config, str(tmp_path / mode))
    results[mode] = (state, ev, records.read_metrics(str(tmp_path / mode)))
  (s1, e1, m1), (s8, e8, m8) = results["jit"], results["pmap"]
  assert_trees_close(s1.params, s8.params, atol=2e-6, rtol=0)
  np.testing.assert_allclose(e1["loss"], e8["loss"], rtol=1e-5)
  losses1 = [r["train_loss"] for r in m1 if "train_loss" in r]
  losses8 = [r["train_loss"] for r in m8 if "train_loss" in r]
  np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
  assert e1["tokens"] == sum(1 for _ in open(config.data.text_files.validation).read()) - 1


def test_loss_falls_and_records_are_written(config, tmp_path):
  config.train.update(num_steps=60, log_every=10, eval_every=30)
  config.optim.learning_rate = 3e-3
  workdir = str(tmp_path / "run")
  _, ev = train.train_and_evaluate(config, workdir)
  rows = records.read_metrics(workdir)
  train_rows = [r for r in rows if "train_loss" in r]
  assert [r["step"] for r in train_rows] == list(range(10, 61, 10))
  assert {"train_loss", "learning_rate", "tokens_per_sec", "elapsed_sec"} <= set(train_rows[0])
  assert [r["step"] for r in rows if "val_loss" in r] == [30, 60]
  assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"] - 0.5
  assert ev["loss"] < train_rows[0]["train_loss"] - 0.5
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f) == config.to_dict()


def test_plugin_model_by_module_path(config, tmp_path):
  config.model = config_lib.ml_collections.ConfigDict(
    {"name": "integration.test_train:Bigram", "width": 4}
  )
  state, _ = train.train_and_evaluate(config, str(tmp_path))
  assert state.params["Dense_0"]["kernel"].shape[0] == 4


def test_indivisible_batch_is_refused(config, tmp_path):
  config.train.update(parallel="pmap", batch_size=12)
  with pytest.raises(UserError, match="not divisible by the 8 devices"):
    train.train_and_evaluate(config, str(tmp_path))


def test_same_config_twice_gives_identical_losses(config, tmp_path):
  config.model.dropout = 0.1
  train.train_and_evaluate(config, str(tmp_path / "a"))
  train.train_and_evaluate(config, str(tmp_path / "b"))
  assert train_losses(str(tmp_path / "a")) == train_losses(str(tmp_path / "b"))


def diverged_at(error) -> tuple[int, int]:
  """(the step the message names, the step it was seen at)."""
  text = str(error.value)
  first = int(text.split("not finite at step ")[1].split(" ")[0])
  seen = int(text.split("(seen at step ")[1].split(")")[0])
  return first, seen


def test_a_diverging_run_stops_at_its_first_bad_step_and_keeps_its_checkpoint(config, tmp_path):
  config.train.update(num_steps=4, checkpoint_every=4, keep_checkpoints=5)
  workdirs = [str(tmp_path / name) for name in ("every_step", "seldom")]
  for w in workdirs:
    train.train_and_evaluate(config, w)  # Finite up to its checkpoint at step 4.
  good = runs.load_run(workdirs[0])[3]
  # Resumed with a step size that blows up: step 5's update is huge, a later loss overflows.
  config.optim.learning_rate = 1e30  # Clipped gradients or not, Adam's step is about lr.
  config.train.update(num_steps=12, eval_every=100)
  found = []
  for w, every in zip(workdirs, (1, 8), strict=True):
    config.train.update(log_every=every, checkpoint_every=8)
    with pytest.raises(UserError, match=r"^the run diverged: its loss, gradients or upd") as e:
      train.train_and_evaluate(config, w)
    assert "its newest checkpoint, step 4, is intact and nothing later was saved" in str(e.value)
    assert "--override=optim.learning_rate" in str(e.value)
    found.append(diverged_at(e))
    assert checkpoint.Checkpointer(w, read_only=True).steps() == [4]
    rows = records.read_metrics(w)
    assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.endswith("loss"))
    restored = runs.load_run(w)[3]
    assert_trees_equal(restored, good)
  (first, seen), (first_seldom, seen_seldom) = found
  assert 4 < first <= 8 and seen == first  # Logged every step: seen at once.
  assert (first_seldom, seen_seldom) == (first, 8)  # Every step watched, read at step 8.
