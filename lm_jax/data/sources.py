"""Where a split's text comes from: a `Source` names it (for the cache key) and reads it.

Local UTF-8 files (lm_jax/data/text_files.py) and synthetic tokens here; TFDS datasets in
lm_jax/data/tfds.py.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from lm_jax import UserError
from lm_jax.data import text_files, token_cache

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a dataset: what identifies it, and how to read it.

  `pieces()` yields `(text, starts_document)`: whole documents, or long ones in pieces that
  end at a newline.
  """

  identity: dict
  pieces: Callable[[], Iterable[tuple[str, bool]]]
  spans: Callable[[], Iterable] | None = None  # Chunks that workers read (text_files.Span...).

  def texts(self) -> Iterator[str]:
    return (text for text, _ in self.pieces())

  def chunks(self) -> Iterable:
    """What token_cache.build encodes: spans each worker reads, or chunks of the pieces."""
    return self.spans() if self.spans else token_cache.chunks(self.pieces())


def split_names(c) -> dict[str, str]:
  return {"train": c.train_split, "validation": c.eval_split, "test": c.test_split}


def file_sources(c) -> dict[str, Source]:
  """Local UTF-8 files named by data.text_files.<split> (paths or globs), read as streams."""
  if c.documents not in text_files.DOCUMENTS:
    raise UserError(f"data.documents={c.documents!r}: use one of {list(text_files.DOCUMENTS)}.")
  paths = {
    split: text_files.expand(c.text_files[split], f"data.text_files.{split}")
    for split in SPLITS
    if c.text_files[split]
  }
  if "train" not in paths:
    raise UserError(
      "data.text_files.train is empty: name the training text files "
      "(a path or glob) with --config.data.text_files.train=PATH."
    )
  holdout = "validation" not in paths and c.holdout_fraction > 0
  if "validation" not in paths and not holdout:
    raise UserError(
      "no validation text: set data.text_files.validation, or "
      "data.holdout_fraction > 0 to hold out the end of the train text."
    )
  ranges = {split: text_files.whole(p) for split, p in paths.items()}
  if holdout:
    ranges["train"], ranges["validation"] = text_files.holdout(paths["train"], c.holdout_fraction)

  def identity(split):
    files = [
      (os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns)
      for p in paths.get(split, paths["train"])
    ]
    held = c.holdout_fraction if holdout and split in ("train", "validation") else None
    return {"files": files, "documents": c.documents, "holdout": held, "split": split}

  def source(split, r):
    spans = lambda: text_files.spans(r, c.documents, token_cache.CHUNK_CHARS)
    return Source(identity(split), functools.partial(text_files.pieces, r, c.documents), spans)

  return {s: source(s, r) for s, r in ranges.items()}


def synthetic_tokens(kind: str, vocab_size: int, num_tokens: int, seed: int) -> np.ndarray:
  """'random': uniform ids; 'pattern': runs of 16 consecutive ids from random starts."""
  rng = np.random.default_rng([seed, num_tokens])
  if kind == "random":
    return rng.integers(0, vocab_size, num_tokens, dtype=np.int32)
  if kind == "pattern":
    starts = rng.integers(0, vocab_size, num_tokens // 16 + 1).repeat(16)[:num_tokens]
    return ((starts + np.arange(num_tokens) % 16) % vocab_size).astype(np.int32)
  raise UserError(f"data.synthetic={kind!r}: use 'random' or 'pattern'.")
