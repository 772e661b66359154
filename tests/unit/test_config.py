"""Config overrides: values keep their types, unknown keys are refused."""

import pytest

from lm_jax import UserError
from lm_jax import config as config_lib


def test_unknown_config_key_is_refused(config):
  with pytest.raises(
    UserError, match=r"unknown config key 'model.depth'; valid keys: .*model.num_layers"
  ):
    config_lib.override(config, {"model.depth": "3"})


def test_overrides_keep_types(config):
  c = config_lib.override(
    config,
    {
      "model.num_layers": "3",
      "optim.learning_rate": "0.1",
      "model.use_bias": "true",
      "data.tokenizer": "char",
    },
  )
  assert (c.model.num_layers, c.optim.learning_rate, c.model.use_bias) == (3, 0.1, True)
  with pytest.raises(UserError, match="not a valid int"):
    config_lib.override(config, {"model.num_layers": "four"})
