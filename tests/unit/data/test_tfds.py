"""TFDS sources: what is refused before TensorFlow loads."""

import pytest
from helpers.data import data_config

from lm_jax import UserError, data


def test_missing_manual_dir_is_refused(tmp_path):
  c = data_config(dataset="tiny_shakespeare", manual_dir=str(tmp_path / "empty"))
  with pytest.raises(UserError, match="holds no files"):
    data.prepare(c, str(tmp_path))
