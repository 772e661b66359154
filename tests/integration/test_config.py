"""A run's config on disk: resuming refuses changes, config.json reproduces the run."""

import pytest
from helpers.runs import train_losses, write_config

from lm_jax import UserError, train
from lm_jax import config as config_lib


def test_resume_refuses_a_changed_config_unless_allowed(config, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  spec = write_config(config, tmp_path / "same.json")
  assert config_lib.for_workdir(workdir, None, {}, []) == config
  assert config_lib.for_workdir(workdir, spec, {}, []) == config
  with pytest.raises(UserError, match="keys that differ: optim.learning_rate, train.num_steps"):
    config_lib.for_workdir(
      workdir, spec, {"train.num_steps": "9", "optim.learning_rate": "0.5"}, []
    )
  longer = config_lib.for_workdir(workdir, None, {"train.num_steps": "9"}, ["train.num_steps"])
  assert longer.train.num_steps == 9
  with pytest.raises(UserError, match="holds no run to resume"):
    config_lib.for_workdir(str(tmp_path / "empty"), None, {}, [])


def test_json_config_reproduces_the_run(config, tmp_path):
  train.train_and_evaluate(config, str(tmp_path / "a"))
  again = config_lib.load(str(tmp_path / "a" / "config.json"))
  assert again == config
  train.train_and_evaluate(again, str(tmp_path / "b"))
  assert train_losses(str(tmp_path / "a")) == train_losses(str(tmp_path / "b"))
