"""Sources: a mixture's keys, resolved from the config and checked."""

import fractions

import pytest

from lm_jax import UserError, data
from lm_jax import config as config_lib
from lm_jax.data import sources

F = fractions.Fraction


def test_mixture_keys_are_overridable_and_checked(mixed):
  c = config_lib.override(mixed, {"data.mixture.b.weight": "0.5"})
  _, named = sources.resolve(c.data)
  assert {n.name: n.weight for n in named} == {"a": F(7, 12), "b": F(5, 12)}
  assert named[1].config.text_files.test == ""
  assert named[0].config.text_files.train == mixed.data.text_files.train
  c.data.mixture.b.seq_len = 8
  with pytest.raises(UserError, match=r"mixture.b sets \['seq_len'\].*shared by every source"):
    data.prepare(c.data, "")
  del c.data.mixture.b["seq_len"]
  c.data.mixture.b.text_files.train = "/nowhere/*.txt"
  with pytest.raises(UserError, match=r"^data.mixture.b: data.text_files.train='/nowhere"):
    data.prepare(c.data, "")
