"""The sampler on a fake model: exact sequences for ragged prompts, the end token, top-p."""

import jax
import jax.numpy as jnp
import numpy as np
from integration.models.test_models import V

from lm_jax import sample


def counting_step_fn(tokens_BxL, cache):
  """A fake model: the next token is the last one + 1 (mod V), with certainty."""
  logits_BxLxV = jax.nn.one_hot((tokens_BxL + 1) % V, V) * 100.0
  return logits_BxLxV, cache + tokens_BxL.shape[1]


def test_sampler_gives_the_exact_sequence_for_ragged_prompts():
  prompt = jnp.array([[1, 2, 3], [7, 0, 0]], jnp.int32)
  out = sample.sample(
    counting_step_fn,
    jnp.int32(0),
    prompt,
    jnp.array([3, 1]),
    jax.random.key(0),
    min_len=1,
    max_new_tokens=4,
  )
  np.testing.assert_array_equal(out[0], [1, 2, 3, 4, 5, 6, 7])
  np.testing.assert_array_equal(out[1, :5], [7, 8, 9, 10, 11])


def test_sampler_stops_at_the_end_token():
  prompt = jnp.array([[5], [1]], jnp.int32)
  out = sample.sample(
    counting_step_fn,
    jnp.int32(0),
    prompt,
    jnp.array([1, 1]),
    jax.random.key(0),
    min_len=1,
    max_new_tokens=6,
    eos_id=8,
  )
  np.testing.assert_array_equal(out[0], [5, 6, 7, 8, 8, 8, 8])  # Stopped after 8.
  np.testing.assert_array_equal(out[1], [1, 2, 3, 4, 5, 6, 7])


def test_top_p_keeps_the_smallest_set_reaching_p():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  kept = lambda p: np.isfinite(sample.filter_logits(logits, 1.0, 0, p))[0].tolist()
  assert kept(0.8) == [False, True, False, True]  # 0.5 + 0.3 reaches 0.8.
  assert kept(0.81) == [False, True, True, True]
  assert kept(0.5) == [False, True, False, False]
  assert kept(1.0) == [True, True, True, True]
  assert np.isfinite(sample.filter_logits(logits, 1.0, 2, 1.0))[0].tolist() == [
    False,
    True,
    False,
    True,
  ]
