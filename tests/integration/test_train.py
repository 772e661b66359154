"""A run that diverges stops with the step it diverged at, however seldom it logs, and leaves
its newest checkpoint as it was."""

import jax
import numpy as np
import pytest

from lm_jax import UserError, checkpoint, records, runs, train


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
  for w, every in zip(workdirs, (1, 8)):
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
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(good)):
      np.testing.assert_array_equal(a, b)
  (first, seen), (first_seldom, seen_seldom) = found
  assert 4 < first <= 8 and seen == first  # Logged every step: seen at once.
  assert (first_seldom, seen_seldom) == (first, 8)  # Every step watched, read at step 8.
