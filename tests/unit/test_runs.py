"""The workdir lock: one trainer at a time."""

import os

import pytest

from lm_jax import UserError, runs


def test_lock_refuses_a_second_holder_and_is_free_after_release(tmp_path):
  workdir = str(tmp_path)
  with runs.lock_workdir(workdir):
    with pytest.raises(
      UserError, match=rf"in use by a live training run \(host .*, pid {os.getpid()}\)"
    ):
      with runs.lock_workdir(workdir):
        pass
  with runs.lock_workdir(workdir):  # Released: the next trainer takes it.
    pass
