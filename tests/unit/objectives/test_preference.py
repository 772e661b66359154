"""DPO's, IPO's and SimPO's losses against a NumPy transcription of TRL's formulas; pairs as
TRL tokenizes them; records that lack a field are refused naming the file and the record."""

import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax import UserError
from lm_jax.data import preferences, record_files
from lm_jax.objectives import preference

B, L, V = 3, 5, 7


def fake_apply(_=None):
  """An apply function whose logits are its 'params' (2B x L x V), whatever the inputs."""
  return lambda variables, inputs, **kwargs: variables["params"]


def numpy_losses(pi_logits, ref_logits, targets, weights, beta, gamma):
  logp = lambda logits: np.take_along_axis(
    logits - np.log(np.exp(logits).sum(-1, keepdims=True)), targets[..., None], -1
  )[..., 0]
  pi = (logp(pi_logits) * weights).sum(-1).reshape(B, 2)
  ref = (logp(ref_logits) * weights).sum(-1).reshape(B, 2)
  n = weights.sum(-1).reshape(B, 2)
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))
  d = (pi - ref)[:, 0] - (pi - ref)[:, 1]
  ipo = ((pi - ref)[:, 0] / n[:, 0] - (pi - ref)[:, 1] / n[:, 1] - 1 / (2 * beta)) ** 2
  simpo = -log_sigmoid(beta * (pi[:, 0] / n[:, 0] - pi[:, 1] / n[:, 1]) - gamma)
  return {"sigmoid": -log_sigmoid(beta * d), "ipo": ipo, "simpo": simpo}, beta * d, pi


@pytest.mark.parametrize("kind", preference.LOSSES)
def test_losses_equal_the_formulas(kind):
  rng = np.random.default_rng(0)
  pi_logits = rng.normal(size=(2 * B, L, V)).astype(np.float32)
  ref_logits = rng.normal(size=(2 * B, L, V)).astype(np.float32)
  targets = rng.integers(0, V, (B, 2, L))
  weights = (rng.random((B, 2, L)) < 0.7).astype(np.float32)
  weights[..., 0] = 1.0
  batch = {"inputs": targets, "targets": targets, "weights": weights, "pairs": np.ones(B)}
  state = types.SimpleNamespace(
    apply_fn=fake_apply(None),
    variables=lambda p: {"params": p},
    frozen=None,
    reference=jnp.asarray(ref_logits),
  )
  loss = preference.DPOLoss(0.3, kind, 0.2, fake_apply(None))
  total, sums, _ = loss(state, jnp.asarray(pi_logits), batch, None, train=False)
  want, margin, pi = numpy_losses(pi_logits, ref_logits, targets.reshape(2 * B, L),
                                  weights.reshape(2 * B, L), 0.3, 0.2)  # fmt: skip
  np.testing.assert_allclose(float(total), want[kind].sum(), rtol=1e-5)
  np.testing.assert_allclose(float(sums["logps_chosen"]), pi[:, 0].sum(), rtol=1e-5)
  if kind != "simpo":
    np.testing.assert_allclose(float(sums["dpo_margin"]), margin.sum(), rtol=1e-5)
    assert float(sums["dpo_accuracy"]) == float((margin > 0).sum())


def test_a_policy_equal_to_its_reference_loses_exactly_ln_2():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(2 * B, L, V)), jnp.float32)
  state = types.SimpleNamespace(
    apply_fn=fake_apply(None), variables=lambda p: {"params": p}, frozen=None, reference=logits
  )
  targets = np.zeros((B, 2, L), np.int32)
  batch = {
    "inputs": targets,
    "targets": targets,
    "weights": np.ones((B, 2, L)),
    "pairs": np.ones(B),
  }
  total, _, _ = preference.DPOLoss(0.1, reference_apply=fake_apply(None))(
    state, logits, batch, None, train=False
  )
  assert float(total / B) == np.float32(math.log(2))


class Letters:
  """A tokenizer of one id per character (a = 1, ...), end of text 0."""

  eos_id = 0
  chat_template = None

  def encode(self, text):
    return np.array([ord(ch) - 96 if ch.isalpha() else 27 for ch in text])


def test_pairs_mark_the_responses_tokens_and_end_them_with_end_of_text():
  records = [(lambda: "r0", {"prompt": "ab", "chosen": "cd", "rejected": "e"})]
  pairs = preferences.encode(Letters(), records, seq_len=6)
  np.testing.assert_array_equal(pairs.tokens[0], [[1, 2, 3, 4, 0, 0, 0], [1, 2, 5, 0, 0, 0, 0]])
  # Targets 1.. are the tokens after the first; the response's (and its end) carry weight.
  np.testing.assert_array_equal(pairs.weights[0], [[0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]])


def test_a_prompt_that_fills_the_row_drops_its_pair():
  records = [(lambda: "r", {"prompt": "abcdefgh", "chosen": "x", "rejected": "y"})]
  assert preferences.encode(Letters(), records, seq_len=6).dropped == 1


@pytest.mark.parametrize("missing", ["prompt", "chosen", "rejected"])
def test_a_record_missing_a_field_is_refused_naming_file_and_line(missing, tmp_path):
  record = {"prompt": "ab", "chosen": "c", "rejected": "d"}
  del record[missing]
  path = tmp_path / "pairs.jsonl"
  good = {"prompt": "x", "chosen": "y", "rejected": "z"}
  path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
  with pytest.raises(UserError, match=rf"{path} line 2 has no field '{missing}'"):
    preferences.encode(Letters(), record_files.records(str(path)), seq_len=8)
