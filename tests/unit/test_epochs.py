"""train.num_epochs: the step counts it resolves, and resuming with the same config."""

import json

import numpy as np
import pytest

from lm_jax import UserError, train
from lm_jax import config as config_lib
from lm_jax.data import batches, streams

SPLIT = streams.Mixture.single(np.arange(7001))  # 20 streams of 350: 9 windows of 35 each.


def test_epochs_set_the_steps_and_the_cadence():
  c = config_lib.load("configs/word_lstm.py:3")
  assert batches.steps_per_epoch(SPLIT, 20, 35, "sequential") == 9
  resolved = train.with_epochs(c, SPLIT)
  assert (resolved.train.num_steps, resolved.train.eval_every) == (27, 9)
  assert resolved.train.checkpoint_every == 9 and c.train.num_steps == 2000  # A copy.
  c.train.eval_every = 4  # Explicit counts stay.
  assert train.with_epochs(c, SPLIT).train.eval_every == 4
  c.data.order = "epochs"  # 200 windows over batches of 20.
  assert train.with_epochs(c, SPLIT).train.num_steps == 3 * 10
  c.train.num_epochs = 0
  with pytest.raises(UserError, match="train.checkpoint_every=0 means once per epoch"):
    train.with_epochs(c, SPLIT)


def test_the_same_config_resumes_a_run_it_resolved(tmp_path):
  c = config_lib.load("configs/word_lstm.py:3")
  (tmp_path / "config.json").write_text(json.dumps(train.with_epochs(c, SPLIT).to_dict()))
  again = config_lib.for_workdir(str(tmp_path), "configs/word_lstm.py:3", {}, [])
  assert again.train.num_steps == 27
  with pytest.raises(UserError, match="keys that differ: .*train.num_epochs"):
    config_lib.for_workdir(str(tmp_path), "configs/word_lstm.py:4", {}, [])
