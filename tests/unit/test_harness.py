"""The harness adapter's request handling, on a fake scorer (no model compiles); importing the
harness leaves the process as it was, and its Hub check reaches an already imported `datasets`."""

import json
import os
import subprocess
import sys

import pytest

from lm_jax import UserError, network, parallel
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
  for (context, continuation), (logp, greedy) in zip(args, got, strict=True):
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
  for doc, total in zip(docs, got, strict=True):
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


def test_importing_the_harness_changes_no_environment_variable_and_loads_no_dependency():
  code = (
    "import json, os, sys; before = dict(os.environ); from lm_jax import harness; "
    "changed = {k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k)}; "
    "loaded = [m for m in ('jax', 'lm_eval', 'datasets', 'huggingface_hub') if m in sys.modules]; "
    "print(json.dumps([sorted(changed), loaded]))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads(out.stdout) == [[], []]


def test_every_public_name_is_read_from_its_module():
  assert all(getattr(harness, name) is not None for name in harness.__all__)
  assert not hasattr(harness, "no_such_name")


def test_an_unreachable_hub_turns_an_imported_datasets_offline(monkeypatch):
  import datasets  # pylint: disable=g-import-not-at-top
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top

  from lm_jax.harness import tasks  # pylint: disable=g-import-not-at-top

  for name in network.HUB_OFFLINE:
    monkeypatch.setenv(name, "0")  # Recorded first, so that the variables set below are undone.
    monkeypatch.delenv(name)
  monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # As read at its import.
  monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
  monkeypatch.setattr(network, "unreachable_host", lambda urls, timeout: urls[0])
  tasks._offline_without_hub()  # pylint: disable=protected-access
  assert all(os.environ[name] == "1" for name in network.HUB_OFFLINE)
  assert datasets.config.HF_HUB_OFFLINE and datasets.config.HF_DATASETS_OFFLINE
  assert constants.HF_HUB_OFFLINE
