"""The registry refuses unknown models and hyperparameters."""

import ml_collections
import pytest
from helpers.models import V

from lm_jax import UserError, models


def test_unknown_model_is_refused():
  with pytest.raises(UserError, match="unknown model 'nope'"):
    models.build_model(ml_collections.ConfigDict({"name": "nope"}), V)


def test_unknown_hyperparameter_is_refused():
  with pytest.raises(UserError, match="no hyperparameter"):
    models.build_model(ml_collections.ConfigDict({"name": "gpt", "depth": 3}), V)
