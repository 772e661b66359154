"""Evaluation flags out of range are refused before the run is loaded."""

import pytest

from lm_jax import UserError, evaluate


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"split": "dev"}, r"^unknown split 'dev': use one of \['train', 'validation', 'test'\]\.$"),
    ({"batch_size": -1}, r"^--batch_size=-1: give rows per batch, or 0 for the run's own\.$"),
    ({"parallel_mode": "tpu"}, r"^--parallel=tpu: use one of \['auto', 'jit', 'pmap', 'sharded'\]"),
  ],
)
def test_evaluation_flags_out_of_range_are_refused_first(tmp_path, kwargs, message):
  with pytest.raises(UserError, match=message):
    evaluate.evaluate_run(str(tmp_path / "no_run"), **kwargs)
