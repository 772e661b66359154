"""The harness adapter's request handling, on a fake scorer (no model compiles)."""

import pytest

from lm_jax import UserError, parallel
from lm_jax.data import tokenizers

pytest.importorskip("lm_eval", reason="the harness is not installed: pip install -e .[harness]")
from lm_eval.api.instance import Instance  # noqa: E402

from lm_jax import harness  # noqa: E402

V = 257  # The byte tokenizer's ids; 256 (end of document) is the prefix token.


def score(prev, target):
  """The fake model's log p(target | previous token): a function of both, so misaligned
  windows or slices change the sums."""
  return -((prev * 7 + target * 3) % 11 + 1) / 8.0


class FakePrograms:
  """Scores rows as `score` says; greedy where target == previous + 1."""

  def __init__(self):
    self.plan, self.shapes, self.rows = parallel.Plan("jit"), set(), []

  def score(self, params, batch):
    del params
    inputs, targets = batch["inputs"], batch["targets"]
    self.rows.append(inputs.shape)
    return {"logprob": score(inputs, targets), "greedy": targets == (inputs + 1) % V}


def fake_lm(max_length=16, batch_size=4):
  return harness.LMJax(
    FakePrograms(),
    None,
    tokenizers.ByteTokenizer(),
    batch_size=batch_size,
    max_length=max_length,
    progress=False,
  )


def requests(kind, args):
  return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def test_padded_lengths_are_few_and_fit():
  lengths = {harness.padded_length(n, 64) for n in range(1, 65)}
  assert lengths == {16, 32, 64}
  assert all(n <= harness.padded_length(n, 100) <= 100 for n in range(1, 101))


def test_loglikelihood_scores_the_continuation_after_its_context():
  lm = fake_lm()
  text = "abcdefghijklmnopqrstuvwxyz"
  args = [("ab", "c"), ("", "xyz"), (text, "0123"), ("bc", "d")]
  got = lm.loglikelihood(requests("loglikelihood", args))
  for (context, continuation), (logp, greedy) in zip(args, got):
    ids = [256] * (not context) + list((context + continuation).encode())  # Prefix: empty only.
    ids = ids[-(16 + 1) :]  # Longer than the context: its last 16 tokens predict.
    n = len(continuation)
    want = sum(score(ids[t], ids[t + 1]) for t in range(len(ids) - 1 - n, len(ids) - 1))
    assert logp == pytest.approx(want, abs=1e-6)
    assert greedy == all(ids[t + 1] == ids[t] + 1 for t in range(len(ids) - 1 - n, len(ids) - 1))
  assert [g for _, g in got] == [True, False, False, True]
  assert lm.requests == 4


def test_rolling_predicts_every_token_once_in_windows_of_the_context():
  lm = fake_lm(max_length=16)
  docs = ["", "x", "a" * 16, "the quick brown fox jumps over the lazy dog " * 3]
  got = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(d,) for d in docs]))
  for doc, total in zip(docs, got):
    ids = [256] + list(doc.encode())
    want = sum(score(ids[t], ids[t + 1]) for t in range(len(ids) - 1))
    assert total == pytest.approx(want, abs=1e-6)
  assert all(shape[1] <= 16 for shape in lm.programs.rows)


def test_generation_settings_are_read_as_the_harness_gives_them():
  lm = fake_lm(max_length=64)
  until, max_new, settings = lm._sampling({"until": "\n\n", "max_gen_toks": 7})  # pylint: disable=protected-access
  assert (until, max_new) == (["\n\n", tokenizers.EOD], 7)
  assert settings == {"temperature": 0.0, "top_k": 0, "top_p": 1.0}
  _, max_new, settings = lm._sampling(  # pylint: disable=protected-access
    {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 5}
  )
  assert (max_new, settings) == (5, {"temperature": 0.7, "top_k": 0, "top_p": 0.9})
  with pytest.raises(UserError, match="num_beams"):
    lm._sampling({"num_beams": 4})  # pylint: disable=protected-access
  with pytest.raises(UserError, match="max_gen_toks=64"):
    lm._sampling({"max_gen_toks": 64})  # pylint: disable=protected-access


def test_metric_names():
  results = {
    "results": {
      "hellaswag": {"alias": "hellaswag", "acc,none": 0.25, "acc_stderr,none": 0.01},
      "gsm8k": {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": "N/A"},
    }
  }
  assert harness.metrics(results) == {
    "harness/hellaswag/acc": 0.25,
    "harness/gsm8k/exact_match/strict-match": 0.5,
  }
