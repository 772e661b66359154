"""data.order='sequential' and the carried and strided evaluation batches: which tokens each
row reads, wrap-around, and that every prediction is made exactly once."""

import fractions

import numpy as np
import pytest

from lm_jax import UserError
from lm_jax.data import batches, streams

TOKENS = np.arange(1000, 1103)  # 103 tokens: 4 streams of 25, 3 left over.


def test_sequential_rows_are_contiguous_streams_that_wrap():
  B, L = 4, 6
  assert batches.windows_per_epoch(TOKENS, B, L) == 4  # (25 - 1) // 6
  split = streams.Mixture.single(TOKENS)
  for step in range(10):
    batch = batches.train_batch(split, 7, step, B, L, order="sequential")
    w = step % 4
    for b in range(B):
      start = 1000 + 25 * b + w * L
      np.testing.assert_array_equal(batch["inputs"][b], np.arange(start, start + L))
      np.testing.assert_array_equal(batch["targets"][b], np.arange(start + 1, start + L + 1))
    np.testing.assert_array_equal(batch["continues"], np.full(B, float(w > 0)))
  # Consecutive steps of a row continue each other: a window's last target is the next's
  # first input's successor.
  a, b = (batches.sequential_batch(TOKENS, s, B, L) for s in (1, 2))
  np.testing.assert_array_equal(a["targets"][:, -1], b["inputs"][:, 0])
  # A process's rows are those rows of the global batch; the seed changes nothing.
  part = batches.train_batch(split, 0, 5, B, L, slice(2, 4), "sequential")
  whole = batches.train_batch(split, 1, 5, B, L, order="sequential")
  np.testing.assert_array_equal(part["inputs"], whole["inputs"][2:4])


def test_sequential_refuses_mixtures_and_short_streams():
  mix = streams.Mixture(
    {"a": TOKENS, "b": TOKENS}, {"a": fractions.Fraction(1, 2), "b": fractions.Fraction(1, 2)}
  )
  with pytest.raises(UserError, match="a mixture has several"):
    batches.train_batch(mix, 0, 0, 4, 6, order="sequential")
  with pytest.raises(UserError, match="give 10 tokens each, fewer than data.seq_len"):
    batches.sequential_batch(TOKENS, 0, 10, 12)


def predictions(batch_iter):
  """{predicted position: (count, context)} over weighted positions of `batch_iter`."""
  seen = []
  for batch in batch_iter:
    for row_in, row_t, row_w in zip(
      batch["inputs"], batch["targets"], batch["weights"], strict=True
    ):
      for j in np.flatnonzero(row_w):
        seen.append((int(row_t[j]), row_in[: j + 1].tolist()))
  return seen


def test_carried_eval_batches_predict_each_stream_token_once_in_order():
  B, L = 4, 6
  seen = predictions(batches.carried_eval_batches(TOKENS, L, B))
  # Each of 4 streams of 25 tokens predicts its last 24, window by window.
  assert sorted(t for t, _ in seen) == sorted(
    1000 + 25 * b + i for b in range(B) for i in range(1, 25)
  )
  last = {}
  for batch in batches.carried_eval_batches(TOKENS, L, B):
    for b in range(B):
      n = int(batch["weights"][b].sum())
      if b in last:  # The window continues where the stream's last one stopped.
        assert batch["inputs"][b, 0] == last[b] + 1
      last[b] = batch["inputs"][b, n - 1]


@pytest.mark.parametrize("stride", [1, 2, 5, 6])
def test_strided_eval_batches_predict_each_token_once_with_context(stride):
  L = 6
  seen = predictions(batches.strided_eval_batches(TOKENS, L, 4, stride))
  assert sorted(t for t, _ in seen) == list(range(1001, 1103))  # Each prediction once.
  for target, context in seen:
    assert context == list(range(context[0], target))  # The tokens right before it...
    assert len(context) >= min(L - stride + 1, target - 1000)  # ...at least L - stride + 1.


def test_stride_equal_to_seq_len_gives_the_consecutive_windows():
  pairs = zip(
    batches.strided_eval_batches(TOKENS, 6, 4, 6), batches.eval_batches(TOKENS, 6, 4), strict=True
  )
  for got, want in pairs:
    np.testing.assert_array_equal(got["weights"], want["weights"])
    for k in ("inputs", "targets"):  # Equal wherever a prediction counts.
      np.testing.assert_array_equal(got[k] * got["weights"], want[k] * want["weights"])
