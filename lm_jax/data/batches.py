"""Token streams -> batches: training windows as a pure function of (seed, step), whole-split
evaluation batches, and a background thread that prepares them ahead of the step.

The rows of the global batch at step s go to a split's sources in blocks, name order: source i
gets A_i(s + 1) - A_i(s) rows, where A_i(s) is the largest-remainder apportionment of the
s * batch_size rows before step s by the exact (rational) weights. Over any number of steps
each source's row count is within one row of its share, and each step's counts are a pure
function of s. A plain config's one source gets every row, with the run's own seed.
"""

import fractions
import functools
import hashlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from lm_jax import UserError
from lm_jax.data import streams

ORDERS = ("random_windows", "epochs", "sequential")


def rows_before(w: dict[str, fractions.Fraction], total: int) -> dict[str, int]:
  """Largest-remainder apportionment of `total` rows by weights `w` (ties: name order)."""
  quotas = {n: total * x for n, x in w.items()}
  counts = {n: math.floor(q) for n, q in quotas.items()}
  left = total - sum(counts.values())
  for n in sorted(w, key=lambda n: counts[n] - quotas[n])[:left]:  # sorted() is stable.
    counts[n] += 1
  return counts


def row_counts(w: dict[str, fractions.Fraction], step: int, batch_size: int) -> dict[str, int]:
  """Rows of each source in the global batch at `step`: they add up to batch_size."""
  small = [n for n, x in w.items() if batch_size * x < 1]
  if small:
    raise UserError(
      f"data.mixture.{small[0]}.weight gives it less than one of the {batch_size} rows per "
      "batch: raise its weight or train.batch_size."
    )
  before, after = rows_before(w, step * batch_size), rows_before(w, (step + 1) * batch_size)
  return {n: after[n] - before[n] for n in w}


def source_seed(seed: int, name: str) -> int:
  """The batch seed of one source: its own windows, whatever the other sources are; a plain
  config's unnamed source draws with the run's seed."""
  if not name:
    return seed
  return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big") >> 1


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, num_windows: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch, 1]).permutation(num_windows)


def _window_starts(num_tokens, seed, step, first, count, rows, seq_len, order) -> np.ndarray:
  """Starts of the rows `rows` of `count` windows drawn at `step`; `first` windows came before."""
  if order == "random_windows":
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, num_tokens - seq_len, size=count)[rows]
  if order == "epochs":
    num_windows = (num_tokens - 1) // seq_len
    index = first + np.arange(count)[rows]
    return (
      np.array(
        [
          _epoch_permutation(seed, int(e), num_windows)[w]
          for e, w in zip(*np.divmod(index, num_windows), strict=True)
        ],
        np.int64,
      ).reshape(-1)
      * seq_len
    )
  raise UserError(f"data.order={order!r}: use one of {list(ORDERS)}.")


def _windows(tokens, starts, seq_len: int) -> dict:
  windows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int32)
  windows = windows.reshape(len(starts), seq_len + 1)
  weights = getattr(tokens, "weights", None)  # Each target's loss weight, if the stream has one.
  if weights is None:
    weights = np.ones((len(starts), seq_len), np.float32)
  else:
    weights = np.stack([weights[s + 1 : s + seq_len + 1] for s in starts]).astype(np.float32)
  return {"inputs": windows[:, :-1], "targets": windows[:, 1:], "weights": weights}


def train_batch(
  split: streams.Mixture,
  seed: int,
  step: int,
  batch_size: int,
  seq_len: int,
  rows: slice = slice(None),
  order: str = "random_windows",
) -> dict:
  """The global batch's `rows` at `step`: windows of seq_len + 1 tokens.

  A pure function of (seed, step): resuming, restarting or sharding the run
  never changes which windows a step sees, and a process reads only its rows.
  order='random_windows' starts each window anywhere (nanoGPT); 'epochs' cuts
  the stream into consecutive windows and visits them in a seeded permutation
  per epoch, so every token is a target once per epoch. Each source of the split
  gives its block of rows (row_counts), drawn from its own stream by that scheme
  with its own seed (source_seed).

  order='sequential' cuts the one stream into batch_size contiguous streams
  (PyTorch's batchify) and reads the (step mod windows)-th window of each, so row b
  continues row b of the step before (see `sequential_batch`).

  Returns:
    {'inputs': int32[rows, seq_len], 'targets': int32[rows, seq_len], 'weights':
    float32[rows, seq_len]}: each target's loss weight, 1 unless the stream has weights of its
    own (conversations: 1 on the assistant's tokens, 0 elsewhere); 'sequential' adds
    'continues': float32[rows].
  """
  if order == "sequential":
    if split.named:
      raise UserError(
        "data.order='sequential' reads one stream as train.batch_size contiguous streams, "
        "and a mixture has several: use data.order='random_windows' or 'epochs'."
      )
    return sequential_batch(split.streams[""], step, batch_size, seq_len, rows)
  counts = row_counts(split.weights, step, batch_size)
  before = rows_before(split.weights, step * batch_size)
  lo, hi, _ = rows.indices(batch_size)
  parts, offset = [], 0
  for name, n in counts.items():
    a, b = max(lo - offset, 0), min(hi - offset, n)
    offset += n
    if a >= b:
      continue
    tokens = split.streams[name]
    starts = _window_starts(
      len(tokens), source_seed(seed, name), step, before[name], n, slice(a, b), seq_len, order
    )
    parts.append(_windows(tokens, starts, seq_len))
  return {k: np.concatenate([p[k] for p in parts]) for k in ("inputs", "targets", "weights")}


def _stream_length(tokens, batch_size: int, seq_len: int, what: str) -> int:
  """Tokens per contiguous stream when `tokens` is cut into batch_size of them."""
  length = len(tokens) // batch_size
  if length < seq_len + 1:
    raise UserError(
      f"{len(tokens)} tokens cut into {what} contiguous streams give {length} tokens each, "
      f"fewer than data.seq_len + 1 = {seq_len + 1}: lower {what} or data.seq_len."
    )
  return length


def windows_per_epoch(tokens, batch_size: int, seq_len: int) -> int:
  """Steps of data.order='sequential' before the streams wrap around."""
  return (_stream_length(tokens, batch_size, seq_len, "train.batch_size") - 1) // seq_len


def steps_per_epoch(split: streams.Mixture, batch_size: int, seq_len: int, order: str) -> int:
  """Steps of one pass over a train split: every window once ('sequential': before the
  streams wrap; other orders: the split's whole windows over the batch, rounded up)."""
  if order == "sequential":
    return windows_per_epoch(split.streams[""], batch_size, seq_len)
  num_windows = sum((len(t) - 1) // seq_len for t in split.streams.values())
  return max(-(-num_windows // batch_size), 1)


def sequential_batch(tokens, step: int, batch_size: int, seq_len: int, rows=slice(None)) -> dict:
  """Window (step mod windows_per_epoch) of each of batch_size contiguous streams.

  Stream b is tokens[b * n : (b + 1) * n], n = len(tokens) // batch_size (the remainder is
  never read, as PyTorch's batchify drops it). 'continues' is 1 where row b follows on from
  the previous step's row b and 0 at the first window, where a carried state starts over.
  """
  length = _stream_length(tokens, batch_size, seq_len, "train.batch_size")
  window = step % ((length - 1) // seq_len)
  starts = (np.arange(batch_size) * length + window * seq_len)[rows]
  out = _windows(tokens, starts, seq_len)
  out["continues"] = np.full(len(starts), float(window > 0), np.float32)
  return out


def carried_eval_batches(tokens, seq_len: int, batch_size: int):
  """Yields the windows of batch_size contiguous streams, in order: PyTorch's evaluation.

  Streams as `sequential_batch` cuts them; each predicts its tokens after the first, in
  windows of seq_len (the last one shorter, padded with weight 0), so a state carried from
  window to window has seen the whole stream before each token.
  """
  length = _stream_length(tokens, batch_size, seq_len, "the eval batch size")
  streams_BxN = np.asarray(tokens[: batch_size * length], np.int32).reshape(batch_size, length)
  for start in range(0, length - 1, seq_len):
    stop = min(start + seq_len, length - 1)
    pad = ((0, 0), (0, seq_len - (stop - start)))
    weights = np.ones((batch_size, stop - start), np.float32)
    yield {
      "inputs": np.pad(streams_BxN[:, start:stop], pad),
      "targets": np.pad(streams_BxN[:, start + 1 : stop + 1], pad),
      "weights": np.pad(weights, pad),
    }


def strided_eval_batches(tokens, seq_len: int, batch_size: int, stride: int):
  """Yields sliding windows of seq_len tokens every `stride` tokens; each window scores only
  the predictions no earlier window made (the first: all of its own), so each token is
  predicted once, after at least seq_len - stride tokens of context (or all tokens before
  it). Hugging Face's perplexity guide's convention; stride = seq_len gives eval_batches'
  windows. Rows of `batch_size` windows, the last batch padded with weight-0 rows.
  """
  if not 1 <= stride <= seq_len:
    raise UserError(
      f"eval.stride={stride} is not in [1, data.seq_len={seq_len}]: e.g. {seq_len // 2}."
    )
  n = len(tokens) - 1  # Predictions: of tokens 1..n.
  rows, scored = [], 0  # Predictions up to token `scored` are made.
  for start in range(0, n, stride):
    part = np.zeros(seq_len + 1, np.int32)
    got = np.asarray(tokens[start : start + seq_len + 1], np.int32)
    part[: len(got)] = got
    predicted = start + 1 + np.arange(seq_len)  # The token each position predicts.
    weights = ((predicted > scored) & (predicted <= n)).astype(np.float32)
    rows.append((part[:-1], part[1:], weights))
    scored = min(start + seq_len, n)
    if scored == n:
      break
  for i in range(0, len(rows), batch_size):
    chunk = rows[i : i + batch_size]
    chunk += [(np.zeros(seq_len, np.int32),) * 2 + (np.zeros(seq_len, np.float32),)] * (
      batch_size - len(chunk)
    )
    yield {
      k: np.stack([r[j] for r in chunk]) for j, k in enumerate(("inputs", "targets", "weights"))
    }


def eval_batches(tokens, seq_len: int, batch_size: int):
  """Yields batches covering every next-token prediction of `tokens` exactly once.

  Consecutive non-overlapping windows; the tail is padded with weight 0, so
  every batch has `batch_size` rows; a stream with weights (conversations) gives each
  prediction its own. Reads one batch of `tokens` at a time.
  """
  n = len(tokens) - 1
  size = batch_size * seq_len
  own = getattr(tokens, "weights", None)
  for start in range(0, n, size):
    window = np.zeros(size + 1, np.int32)
    part = tokens[start : start + size + 1]
    window[: len(part)] = part
    weights = (start + np.arange(size) < n).astype(np.float32)
    if own is not None:
      weights[: len(part) - 1] *= own[start + 1 : start + len(part)]
    weights = weights.reshape(batch_size, seq_len)
    yield {
      "inputs": window[:-1].reshape(batch_size, seq_len),
      "targets": window[1:].reshape(batch_size, seq_len),
      "weights": weights,
    }


class Prefetcher:
  """Runs `make(step)` for each step in a background thread, `depth` steps ahead.

  Iterating yields the results in order; `wait_sec` adds up the time the
  consumer spent blocked on them (the train step waiting for input).
  """

  def __init__(self, make: Callable[[int], object], steps: Iterable[int], depth: int = 2):
    self.wait_sec = 0.0
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(make, steps), daemon=True)
    self._thread.start()

  def _put(self, item) -> bool:
    """Queues `item` unless closed first; never blocks past close()."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.05)
        return True
      except queue.Full:
        pass
    return False

  def _run(self, make, steps):
    try:
      for step in steps:
        if not self._put((True, make(step))):
          return
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      self._put((False, e))
      return
    self._put((False, None))

  def __iter__(self):
    while True:
      t = time.perf_counter()
      ok, item = self._queue.get()
      self.wait_sec += time.perf_counter() - t
      if not ok:
        if item is not None:
          raise item
        return
      yield item

  def close(self):
    self._stop.set()
    self._thread.join()
