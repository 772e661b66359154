"""The sampler on registered models: cached decoding, greedy equalities, seeds, prompts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.models import NAMES, REGISTERED, V, build, forward, init

from lm_jax import UserError, sample


@pytest.mark.parametrize("name", NAMES)
def test_cached_decoding_equals_full_forward(name):
  model = build(name)
  params, tokens = init(model, length=12, batch=3)
  full = forward(model, params, tokens)
  if hasattr(model, "init_cache"):
    step_fn = lambda t, c: model.apply({"params": params}, t, cache=c)
    cache = model.init_cache(3, 12)
  else:
    step_fn, cache = sample.full_forward_step_fn(
      lambda t: model.apply({"params": params}, t), 3, 12
    )
  step_fn = jax.jit(step_fn)
  logits, cache = step_fn(tokens[:, :5], cache)  # Prefill, then one token at a time.
  pieces = [logits]
  for t in range(5, 12):
    logits, cache = step_fn(tokens[:, t : t + 1], cache)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", REGISTERED)
def test_top_k_1_and_temperature_0_equal_greedy(name):
  model = build(name)
  params, _ = init(model)
  prompts = [np.array([1, 2, 3]), np.array([4])]
  run = lambda **kw: sample.generate(
    model, params, prompts, jax.random.key(3), max_new_tokens=8, **kw
  )
  greedy = run(temperature=0.0)
  for a, b in zip(greedy, run(temperature=1.0, top_k=1), strict=True):
    np.testing.assert_array_equal(a, b)
  no_cache = run(temperature=0.0, use_cache=False)
  for a, b in zip(greedy, no_cache, strict=True):
    np.testing.assert_array_equal(a, b)


def test_same_seed_same_samples():
  model = build("gpt")
  params, _ = init(model)
  run = lambda seed: sample.generate(
    model, params, [np.array([1, 2])] * 4, jax.random.key(seed), max_new_tokens=10, temperature=1.0
  )
  a, b, c = run(0), run(0), run(1)
  assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
  assert all(len(x) == 10 and x.min() >= 0 and x.max() < V for x in a)


def test_long_prompt_is_trimmed_or_refused(capsys):
  model = build("gpt")  # max_len 16.
  params, _ = init(model)
  prompt = [np.arange(20) % V]
  out = sample.generate(model, params, prompt, jax.random.key(0), max_new_tokens=6, temperature=0.0)
  assert "keeping its last 15 tokens" in capsys.readouterr().err
  trimmed = sample.generate(
    model, params, [prompt[0][-15:]], jax.random.key(0), max_new_tokens=6, temperature=0.0
  )
  np.testing.assert_array_equal(out[0], trimmed[0])
  with pytest.raises(UserError, match="longer than the 15 tokens"):
    sample.generate(model, params, prompt, jax.random.key(0), max_new_tokens=6, long_prompt="error")


def test_generation_runs_past_the_context():
  """Past max_len, generation goes on from the last max_len // 2 tokens."""
  model = build("gpt")  # max_len 16.
  params, _ = init(model)
  prompt = np.array([1, 2, 3])
  out = sample.generate(
    model, params, [prompt, prompt[:1]], jax.random.key(0), max_new_tokens=40, temperature=0.0
  )
  assert [len(o) for o in out] == [40, 40]
  # The first chunk fills the context: 13 new tokens after the 3-token prompt.
  first = sample.generate(
    model, params, [prompt], jax.random.key(0), max_new_tokens=13, temperature=0.0
  )[0]
  np.testing.assert_array_equal(out[0][:13], first)
  # The next chunk continues from the last 8 tokens of prompt + first.
  window = np.concatenate([prompt, first])[-8:]
  second = sample.generate(
    model, params, [window], jax.random.key(0), max_new_tokens=8, temperature=0.0
  )[0]
  np.testing.assert_array_equal(out[0][13:21], second)
