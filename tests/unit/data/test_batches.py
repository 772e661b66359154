"""Batches: windows as a pure function of (seed, step), mixtures in exact proportions from each
source's own stream, whole-split evaluation batches, the prefetching thread."""

import fractions
import threading
import time

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from lm_jax import UserError
from lm_jax.data import batches, streams

F = fractions.Fraction


@pytest.mark.parametrize(
  "weights, batch_size",
  [({"a": 0.7, "b": 0.3}, 8), ({"x": 1.0, "y": 1.0, "z": 1.0}, 16), ({"a": 0.9, "b": 0.1}, 12)],
)
def test_rows_follow_the_weights_exactly_over_steps(weights, batch_size):
  total = sum(F(w) for w in weights.values())
  w = {n: F(x) / total for n, x in weights.items()}
  seen = dict.fromkeys(w, 0)
  for step in range(500):
    counts = batches.row_counts(w, step, batch_size)
    assert sum(counts.values()) == batch_size and min(counts.values()) >= 0
    for n in w:
      seen[n] += counts[n]
      assert abs(seen[n] - (step + 1) * batch_size * w[n]) < 1  # Never a whole row off.
  if batch_size == 8:  # 0.7 * 8 = 5.6 rows: 5 or 6 per batch, exactly 70% every 5 steps.
    assert seen == {"a": 2800, "b": 1200}


def test_a_source_needs_a_row_per_batch():
  with pytest.raises(UserError, match=r"mixture.b.weight .* raise its weight or train.batch"):
    batches.row_counts({"a": F(15, 16), "b": F(1, 16)}, 0, 8)


def two_streams():
  return {"a": np.arange(5000), "b": 10_000 + np.arange(3000)}


# 'sequential' reads one stream as contiguous rows; a mixture is refused (test_sequential_batches).
@pytest.mark.parametrize("order", [o for o in batches.ORDERS if o != "sequential"])
def test_each_source_gives_its_rows_from_its_own_stream(order):
  mix = streams.Mixture(two_streams(), {"a": F(3, 4), "b": F(1, 4)})
  for step in range(6):
    full = batches.train_batch(mix, 7, step, 8, 16, order=order)
    assert (full["inputs"][:6] < 10_000).all() and (full["inputs"][6:] >= 10_000).all()
    np.testing.assert_array_equal(full["inputs"][:, 1:], full["targets"][:, :-1])
    for rows in (slice(0, 4), slice(4, 8), slice(6, 8)):  # A process builds only its rows.
      part = batches.train_batch(mix, 7, step, 8, 16, rows, order)
      np.testing.assert_array_equal(part["inputs"], full["inputs"][rows])
    alone = batches.train_batch(
      streams.Mixture.single(mix.streams["b"]), batches.source_seed(7, "b"), step, 2, 16
    )
    if order == "random_windows":  # The source's own scheme, with its own seed.
      np.testing.assert_array_equal(full["inputs"][6:], alone["inputs"])


def test_epochs_visit_each_sources_windows_once():
  mix = streams.Mixture(two_streams(), {"a": F(1, 2), "b": F(1, 2)})
  starts = {"a": [], "b": []}
  for step in range(20):  # 80 windows of each, fewer than an epoch (187 of b): no repeats.
    batch = batches.train_batch(mix, 3, step, 8, 16, order="epochs")
    starts["a"] += [int(r[0]) for r in batch["inputs"][:4]]
    starts["b"] += [int(r[0]) for r in batch["inputs"][4:]]
  assert all(s % 16 == 0 for s in starts["a"]) and len(set(starts["a"])) == 80
  assert all(s % 16 == 0 for s in starts["b"]) and len(set(starts["b"])) == 80


@pytest.mark.parametrize("order", batches.ORDERS)
def test_train_batch_is_a_pure_function_of_seed_and_step(order):
  tokens = streams.Mixture.single(np.arange(1000, dtype=np.int32))
  a = batches.train_batch(tokens, seed=3, step=7, batch_size=6, seq_len=10, order=order)
  b = batches.train_batch(tokens, seed=3, step=7, batch_size=6, seq_len=10, order=order)
  c = batches.train_batch(tokens, seed=3, step=8, batch_size=6, seq_len=10, order=order)
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert not np.array_equal(a["inputs"], c["inputs"])
  np.testing.assert_array_equal(a["targets"], a["inputs"] + 1)
  # Two processes, each reading only its half of the rows, together read the whole batch.
  halves = [
    batches.train_batch(tokens, 3, 7, 6, 10, rows=slice(i, i + 3), order=order) for i in (0, 3)
  ]
  for key in a:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), a[key])


def test_epochs_visit_every_window_once():
  tokens = streams.Mixture.single(np.arange(101, dtype=np.int32))  # 10 windows of 10 targets.
  seen = [batches.train_batch(tokens, 0, s, 5, 10, order="epochs")["targets"] for s in range(4)]
  first, second = np.concatenate(seen[:2]), np.concatenate(seen[2:])
  np.testing.assert_array_equal(np.sort(first.reshape(-1)), np.arange(1, 101))
  np.testing.assert_array_equal(np.sort(second.reshape(-1)), np.arange(1, 101))
  assert not np.array_equal(first, second)  # A new permutation each epoch.


def test_eval_batches_cover_every_token_once():
  tokens = np.arange(50, dtype=np.int32)
  got = list(batches.eval_batches(tokens, seq_len=4, batch_size=3))
  weights = np.concatenate([b["weights"] for b in got]).reshape(-1)
  targets = np.concatenate([b["targets"] for b in got]).reshape(-1)
  assert all(b["inputs"].shape == (3, 4) for b in got)
  np.testing.assert_array_equal(targets[weights > 0], np.arange(1, 50))


def test_prefetcher_keeps_order_and_raises_errors():
  fetched = batches.Prefetcher(lambda s: s * s, range(5))
  assert list(fetched) == [0, 1, 4, 9, 16]

  def fail(step):
    if step == 2:
      raise ValueError("bad step")
    return step

  fetched = batches.Prefetcher(fail, range(5))
  with pytest.raises(ValueError, match="bad step"):
    list(fetched)
  stopped = batches.Prefetcher(lambda s: s, range(10**9))
  assert next(iter(stopped)) == 0
  stopped.close()


def closes_within_a_second(fetched):
  closing = threading.Thread(target=fetched.close, daemon=True)
  closing.start()
  closing.join(timeout=1.0)
  assert not closing.is_alive(), "Prefetcher.close() blocked"


def test_prefetcher_closes_at_once_on_error_end_and_mid_stream():
  def fail(step):
    if step == 1:
      raise ValueError("bad step")
    return step

  failed = batches.Prefetcher(fail, range(5), depth=1)  # The error comes with the queue full.
  time.sleep(0.2)
  closes_within_a_second(failed)
  ended = batches.Prefetcher(lambda s: s, range(1), depth=1)  # So does the end of the steps.
  time.sleep(0.2)
  closes_within_a_second(ended)
  mid = batches.Prefetcher(lambda s: s, range(10**9), depth=2)
  assert next(iter(mid)) == 0
  time.sleep(0.2)  # The queue fills up behind the reader.
  closes_within_a_second(mid)


def test_a_plain_configs_source_draws_with_the_runs_own_seed():
  assert batches.source_seed(7, "") == 7 and batches.source_seed(0, "") == 0
  named = batches.source_seed(7, "b")
  assert named == batches.source_seed(7, "b") and 0 <= named < 2**63  # One number, any process.
  assert len({named, batches.source_seed(8, "b"), batches.source_seed(7, "a")}) == 3


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(
  st.lists(st.integers(1, 20), min_size=1, max_size=4), st.integers(0, 10**6), st.integers(4, 64)
)
def test_row_counts_add_up_to_the_batch(parts, step, batch_size):
  w = {f"s{i}": F(p, sum(parts)) for i, p in enumerate(parts)}
  hypothesis.assume(all(batch_size * x >= 1 for x in w.values()))
  counts = batches.row_counts(w, step, batch_size)
  assert sum(counts.values()) == batch_size and min(counts.values()) >= 0
  assert batches.row_counts({"": F(1)}, step, batch_size) == {"": batch_size}


def test_one_source_draws_the_windows_of_its_seeds_own_scheme():
  """The windows a run draws from a plain config's one stream, written out: runs made before
  every split became a mixture draw them too."""
  tokens = np.arange(1000, dtype=np.int32)
  one = streams.Mixture.single(tokens)
  seed, batch_size, seq_len = 11, 6, 10
  for step in (0, 1, 57):
    starts = np.random.default_rng([seed, step]).integers(0, 1000 - seq_len, size=batch_size)
    got = batches.train_batch(one, seed, step, batch_size, seq_len)
    np.testing.assert_array_equal(got["inputs"], starts[:, None] + np.arange(seq_len))
    np.testing.assert_array_equal(got["targets"], got["inputs"] + 1)
  windows = (1000 - 1) // seq_len  # 'epochs': the seeded permutation of each epoch, in order.
  order = np.concatenate([np.random.default_rng([seed, e, 1]).permutation(windows) for e in (0, 1)])
  for step in (0, 16, 17):  # Step 16 crosses into the second epoch (99 windows, 6 a step).
    starts = order[step * batch_size : (step + 1) * batch_size] * seq_len
    got = batches.train_batch(one, seed, step, batch_size, seq_len, order="epochs")
    np.testing.assert_array_equal(got["inputs"], starts[:, None] + np.arange(seq_len))
