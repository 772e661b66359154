"""train.num_epochs: the step counts it resolves, and resuming with the same config."""

import json

import numpy as np
import pytest

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.data import batches, streams

SPLIT = streams.Mixture.single(np.arange(7001))  # 20 streams of 350: 9 windows of 35 each.


def test_epochs_set_the_steps_and_the_cadence():
  c = config_lib.load("configs/word_lstm.py:3")
  assert batches.steps_per_epoch(SPLIT, 20, 35, "sequential") == 9
  assert batches.steps_per_epoch(SPLIT, 20, 35, "epochs") == 10  # 200 windows, 20 a step.
  resolved = config_lib.with_epochs(c, 9)
  assert (resolved.train.num_steps, resolved.train.eval_every) == (27, 9)
  assert resolved.train.checkpoint_every == 9 and c.train.num_steps == 2000  # A copy.
  config_lib.check_epoch_keys(resolved)
  c.train.eval_every = 4  # Explicit counts stay.
  assert config_lib.with_epochs(c, 9).train.eval_every == 4
  with pytest.raises(UserError, match="train.checkpoint_every=0 means once per epoch"):
    config_lib.check_epoch_keys(c)


def test_the_same_config_resumes_a_run_it_resolved(tmp_path):
  c = config_lib.load("configs/word_lstm.py:3")
  (tmp_path / "config.json").write_text(json.dumps(config_lib.with_epochs(c, 9).to_dict()))
  again = config_lib.for_workdir(str(tmp_path), "configs/word_lstm.py:3", {}, [])
  assert again.train.num_steps == 27
  with pytest.raises(UserError, match="keys that differ: .*train.num_epochs"):
    config_lib.for_workdir(str(tmp_path), "configs/word_lstm.py:4", {}, [])
