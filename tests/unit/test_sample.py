"""Sampling settings a new user gets wrong are refused by name before anything compiles."""

import math

import numpy as np
import pytest

from lm_jax import UserError, sample


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
