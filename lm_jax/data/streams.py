"""Token streams: each split of each source tokenized once into the cache, then memory-mapped.

A split of the corpus is a `Mixture` of its sources' streams and weights; a plain config's
split is a mixture of one unnamed stream with weight 1, so batches, evaluation and
fingerprints have one path. A cached split is a `TokenStream` over the shards that
token_cache.py wrote; generated sources (synthetic) give their ids directly.
"""

import dataclasses
import fractions
import os

import numpy as np

from lm_jax import UserError
from lm_jax.data import chunks, token_cache
from lm_jax.data.sources import SPLITS, Named, Source


@dataclasses.dataclass(frozen=True)
class Mixture:
  """One split of every source: token streams and weights (summing to 1), by source name.

  The name '' is a plain config's one source; named sources report their own metrics.
  """

  streams: dict
  weights: dict[str, fractions.Fraction]

  @classmethod
  def single(cls, tokens) -> "Mixture":
    """One stream (an array of ids or a TokenStream) as a split of its own."""
    return cls({"": tokens}, {"": fractions.Fraction(1)})

  @property
  def named(self) -> bool:
    """Whether the sources have names (a mixture), so each reports its own metrics."""
    return any(self.streams)

  def weighted(self, values: dict[str, float]) -> float:
    """The mean of per-source `values` weighted as configured."""
    return float(sum(float(self.weights[n]) * values[n] for n in self.streams))

  def labels(self, split: str) -> dict[str, str]:
    """'SPLIT/SOURCE' for each source ('SPLIT' for an unnamed one), by source name."""
    return {n: f"{split}/{n}" if n else split for n in self.streams}


class TokenStream:
  """A split's shards as one sequence of token ids: len(), [i], [a:b] and np.asarray.

  `weights`: the loss weight of each token, a stream of the same length (conversations), or
  None (every token counts).
  """

  def __init__(self, directory: str, index: dict):
    self.index = index
    self.weights = None
    if index.get("weights"):
      self.weights = TokenStream(
        directory, {**index, "shards": index["weights"], "dtype": "uint8", "weights": None}
      )
    self.dtype = np.dtype(index["dtype"])
    self._shards = [
      np.memmap(os.path.join(directory, name), dtype=self.dtype, mode="r")
      for name, size in zip(index["shards"], index["shard_sizes"], strict=True)
      if size
    ]
    self._starts = np.cumsum([0] + [len(s) for s in self._shards])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, key):
    if isinstance(key, slice):
      start, stop, step = key.indices(len(self))
      if step != 1:
        return np.asarray(self)[key]
      return self._read(start, max(start, stop))
    i = range(len(self))[key]
    return self._read(i, i + 1)[0]

  def _read(self, start: int, stop: int) -> np.ndarray:
    parts = []
    i = int(np.searchsorted(self._starts, start, side="right")) - 1
    while start < stop:
      shard_start = self._starts[i]
      end = min(stop, self._starts[i + 1])
      parts.append(np.asarray(self._shards[i][start - shard_start : end - shard_start]))
      start, i = end, i + 1
    if len(parts) == 1:
      return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, self.dtype)

  def __array__(self, dtype=None, copy=None):
    return self._read(0, len(self)).astype(dtype or self.dtype)


def cached_tokens(c, tokenizer, split: str, source: Source) -> TokenStream:
  """The split's token stream: tokenized once into shards (resumably), then memory-mapped."""
  chunking = (chunks.CHUNK_CHARS, c.shard_tokens)  # Parts are resumed by number.
  key = token_cache.key(token_cache.FORMAT, source.identity, tokenizer.fingerprint(), chunking)
  directory = os.path.join(token_cache.root(c), "tokens", f"{split}-{key}")
  num_workers = chunks.workers(c.workers)
  build = lambda: {
    "identity": source.identity,
    "tokenizer": tokenizer.kind,
    **token_cache.build(
      directory,
      source.chunks,
      tokenizer,
      num_workers,
      c.shard_tokens,
      f"tokenizing {split}",
      source.weighted,
    ),
  }
  # Processes that find another building this directory encode the chunks it has not claimed.
  contribute = lambda: token_cache.contribute(directory, source.chunks, tokenizer, num_workers)
  index = token_cache.cached(directory, build, c.cache_wait_sec, contribute)
  if index["tokens"] == 0:
    raise UserError(
      f"the {split} split of {c.dataset!r} is empty: check data.*_split and data.text_files."
    )
  return TokenStream(directory, index)


def _stream(c, tokenizer, split: str, source: Source):
  return source.generate() if source.generate else cached_tokens(c, tokenizer, split, source)


def corpus(sources: list[Named], tokenizer) -> dict[str, Mixture]:
  """{split: Mixture} for each split that every source has."""
  splits = [s for s in SPLITS if all(s in n.splits for n in sources)]
  return {
    split: Mixture(
      {n.name: _stream(n.config, tokenizer, split, n.splits[split]) for n in sources},
      {n.name: n.weight for n in sources},
    )
    for split in splits
  }


def check_length(corpus_: dict[str, Mixture], seq_len: int) -> None:
  """Refuses a stream too short for one training window."""
  for split, mix in corpus_.items():
    for name, tokens in mix.streams.items():
      if len(tokens) < seq_len + 1:
        raise UserError(
          f"the {f'{name} {split}' if name else split} split has {len(tokens)} tokens, fewer "
          f"than data.seq_len + 1 = {seq_len + 1}: lower data.seq_len or add text."
        )


def cached(corpus_: dict[str, Mixture]) -> dict[str, TokenStream]:
  """The cached streams of a corpus by 'SPLIT' or 'SPLIT/SOURCE' (generated ones have none)."""
  return {
    label: mix.streams[name]
    for split, mix in corpus_.items()
    for name, label in mix.labels(split).items()
    if isinstance(mix.streams[name], TokenStream)
  }


def fingerprints(corpus_: dict[str, Mixture]) -> dict[str, str]:
  """sha256 of each cached stream's token ids, as written (what run.json records)."""
  return {label: s.index["fingerprint"] for label, s in cached(corpus_).items()}
