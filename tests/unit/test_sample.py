"""The sampler on a fake model: exact sequences for ragged prompts, the end token, top-p."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.models import V

from lm_jax import UserError, sample


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


@pytest.mark.parametrize(
  "settings, message",
  [
    ({"temperature": -1.0}, r"^--temperature=-1.0: use a finite temperature >= 0 \(0 is greedy"),
    ({"temperature": math.inf}, r"^--temperature=inf: "),
    ({"temperature": math.nan}, r"^--temperature=nan: "),
    ({"top_p": 1.5}, r"^--top_p=1.5: use a probability in \(0, 1\] \(1 keeps every token\)\.$"),
    ({"top_p": 0.0}, r"^--top_p=0.0: "),
    ({"top_k": -1}, r"^--top_k=-1: use 0 \(every token\) or a count >= 1\.$"),
    ({"max_new_tokens": 0}, r"^--max_new_tokens=0: draw at least 1 token\.$"),
  ],
)
def test_settings_out_of_range_are_refused(settings, message):
  given = {"max_new_tokens": 4, "temperature": 1.0, "top_k": 0, "top_p": 1.0, **settings}
  with pytest.raises(UserError, match=message):
    sample.check_settings(**given)
  with pytest.raises(UserError, match=message):  # generate checks before it builds anything.
    sample.generate(None, None, [np.array([1])], None, **given)


def test_settings_in_range_pass():
  sample.check_settings(1, 0.0, 0, 1.0)  # Greedy, no filters.
  sample.check_settings(1, 0.8, 40, 0.95)


def test_top_k_past_the_vocabulary_keeps_every_token():
  logits = np.log(np.array([[0.5, 0.3, 0.2]], np.float32))
  np.testing.assert_array_equal(
    sample.filter_logits(logits, 1.0, 10, 1.0), sample.filter_logits(logits, 1.0, 0, 1.0)
  )


def test_prompts_are_read_per_line_and_repeated(tmp_path):
  path = tmp_path / "prompts.txt"
  path.write_text("ROMEO:\n\nJULIET:\\nO\n")
  texts = sample.read_prompts("", str(path), 2)
  assert texts == ["ROMEO:", "ROMEO:", "JULIET:\nO", "JULIET:\nO"]
  assert sample.read_prompts("", None, 1) == ["\n"]  # An empty prompt starts from a newline.


@pytest.mark.parametrize(
  "prompt_file, num_samples, message",
  [
    ("missing.txt", 1, r"cannot read --prompt_file .*missing.txt \(.*No such file.*\): check"),
    ("empty.txt", 1, r"--prompt_file .*empty.txt holds no prompt: write one per line\.$"),
    (None, 0, r"^--num_samples=0: draw at least 1 sample per prompt\.$"),
  ],
)
def test_prompts_that_cannot_be_read_are_refused(tmp_path, prompt_file, num_samples, message):
  (tmp_path / "empty.txt").write_text("\n\n")
  path = str(tmp_path / prompt_file) if prompt_file else None
  with pytest.raises(UserError, match=message):
    sample.read_prompts("x", path, num_samples)
