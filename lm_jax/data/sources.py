"""The sources a data config names, and where each split of each comes from.

A config names one source (data.dataset and the keys that say where its text is) or several
(data.mixture.NAME, each with a weight). `resolve` makes the two the same thing, a list of
named, weighted sources, so that every later stage has one path: a plain config is one
source, named '' and weighted 1. A source's kind is its dataset: a TFDS name
(lm_jax/data/tfds.py), 'text' for local files (lm_jax/data/text_files.py), 'jsonl' or
'parquet' for record files (lm_jax/data/record_files.py), 'hf:NAME' for a Hugging Face dataset
(lm_jax/data/hf_datasets.py), or 'synthetic', whose token ids are generated rather than read.
"""

import copy
import dataclasses
import fractions
import functools
import os
from collections.abc import Callable, Iterable, Iterator

import ml_collections
import numpy as np

from lm_jax import UserError
from lm_jax.data import chunks, hf_datasets, record_files, text_files, tfds

SPLITS = ("train", "validation", "test")
FORMATS = ("text", "chat")  # data.format: documents, or conversations (lm_jax/data/chat.py).
# The formats other objectives read (lm_jax/objectives): data.format -> (objective, its config).
OBJECTIVE_FORMATS = {"preference": ("dpo", "configs/dpo.py"), "prompt": ("grpo", "configs/grpo.py")}
# The data keys that say where a source's text is; a mixture source may set these.
SOURCE_KEYS = (
  "dataset",
  "format",
  "data_dir",
  "hf_config",
  "hf_revision",
  "manual_dir",
  "text_key",
  "train_split",
  "eval_split",
  "test_split",
  "text_files",
  "documents",
  "holdout_fraction",
)


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a source: what identifies it, and how to read it.

  `pieces()` yields `(text, starts_document)`: whole documents, or long ones in pieces that
  end at a newline; conversations (data.format='chat') add each piece's loss weight,
  `(text, starts_document, weight)`. A generated split (synthetic) has no text: `generate()`
  gives its ids.
  """

  identity: dict
  pieces: Callable[[], Iterable[tuple[str, bool]]] = tuple
  spans: Callable[[], Iterable] | None = None  # Chunks that workers read (text_files.Span...).
  generate: Callable[[], np.ndarray] | None = None
  weighted: bool = False  # Pieces carry loss weights (conversations).

  def texts(self) -> Iterator[str]:
    return (piece[0] for piece in self.pieces())

  def chunks(self) -> Iterable:
    """What token_cache.build encodes: spans each worker reads, or chunks of the pieces."""
    return self.spans() if self.spans else chunks.chunks(self.pieces())


@dataclasses.dataclass(frozen=True)
class Named:
  """A source of the corpus: its name ('' for a plain config's), weight, data config, splits."""

  name: str
  weight: fractions.Fraction  # The weights of a corpus's sources sum to 1.
  config: ml_collections.ConfigDict  # `data` with the keys this source sets.
  splits: dict[str, Source]


def resolve(data_config) -> tuple[ml_collections.ConfigDict, list[Named]]:
  """The data config as the stages read it, and its sources in name order.

  A synthetic source's ids are the tokenizer's too: its config reads data.tokenizer='ids'.
  """
  c = ml_collections.ConfigDict(copy.deepcopy(data_config.to_dict()))
  if c.dataset == "synthetic":
    if _names(c):
      raise UserError(
        "data.dataset='synthetic' cannot be mixed with text: set data.dataset to a text source "
        "(the sources' default) or empty data.mixture."
      )
    c.tokenizer = "ids"
  configs = _source_configs(c)
  weights = _weights(c)
  named = []
  for name, sc in configs.items():
    try:
      splits = _splits(sc)
    except UserError as e:
      raise UserError(f"data.mixture.{name}: {e}") if name else e from e
    named.append(Named(name, weights[name], sc, splits))
  return c, named


def _names(c) -> list[str]:
  return sorted((c.get("mixture") or {}).keys())


def _source_configs(c) -> dict[str, ml_collections.ConfigDict]:
  """Each source's full data config: `data` with the keys the source sets replaced.

  A source's `text_files` replaces the whole of `data.text_files` (splits it leaves out
  are empty). Sources are taken in name order, so a config's order (or a JSON round trip)
  never changes the batches.
  """
  if not _names(c):
    return {"": c}
  configs = {}
  for name in _names(c):
    if not name.replace("_", "").replace("-", "").isalnum():
      raise UserError(f"data.mixture.{name}: name sources with letters, digits, '_' or '-'.")
    source = c.mixture[name]
    if not isinstance(source, ml_collections.ConfigDict) or "weight" not in source:
      raise UserError(f"data.mixture.{name} has no weight: give it data.mixture.{name}.weight.")
    extra = sorted(set(source.keys()) - {"weight", *SOURCE_KEYS})
    if extra:
      raise UserError(
        f"data.mixture.{name} sets {extra}, which a source cannot set: set them in data "
        f"(shared by every source), or keep to {['weight', *SOURCE_KEYS]}."
      )
    if not source.weight > 0:
      raise UserError(f"data.mixture.{name}.weight={source.weight}: give it a weight above 0.")
    sc = ml_collections.ConfigDict(copy.deepcopy(c.to_dict()))
    del sc["mixture"]
    for key in set(source.keys()) - {"weight"}:
      if key == "text_files":
        files = {"train": "", "validation": "", "test": "", **source.text_files.to_dict()}
        sc.text_files = ml_collections.ConfigDict(files)
      else:
        sc[key] = source[key]
    if sc.dataset == "synthetic":
      raise UserError(
        f"data.mixture.{name}.dataset='synthetic' has no text to share a tokenizer with: "
        "mix TFDS datasets or local text files."
      )
    configs[name] = sc
  return configs


def _weights(c) -> dict[str, fractions.Fraction]:
  """The configured weights as exact fractions that sum to 1, by source name (0.7 is 7/10)."""
  if not _names(c):
    return {"": fractions.Fraction(1)}
  raw = {n: fractions.Fraction(str(c.mixture[n].weight)) for n in _names(c)}
  total = sum(raw.values())
  return {n: w / total for n, w in raw.items()}


def check_format(data_config, objective: str) -> None:
  """Refuses a data.format other than the one train.objective `objective` reads."""
  (fmt, (_, config)), *_ = [(f, o) for f, o in OBJECTIVE_FORMATS.items() if o[0] == objective]
  if data_config.get("format") != fmt:
    raise UserError(
      f"train.objective={objective!r} reads data.format={fmt!r} records, and data.format is "
      f"{data_config.get('format')!r}: set data.format={fmt!r} ({config} does)."
    )


def _splits(c) -> dict[str, Source]:
  """The configured splits of one source, by kind."""
  records = c.dataset in record_files.SUFFIXES or c.dataset.startswith(hf_datasets.PREFIX)
  fmt = c.get("format", "text")
  if fmt in OBJECTIVE_FORMATS:
    objective, config = OBJECTIVE_FORMATS[fmt]
    raise UserError(
      f"data.format={fmt!r} holds records that {objective} reads, not text to predict: set "
      f"train.objective={objective!r} ({config} does)."
    )
  if fmt not in FORMATS or (fmt == "chat" and not records):
    raise UserError(
      f"data.format={fmt!r} with data.dataset={c.dataset!r}: use data.format 'text', or "
      "'chat' with records (data.dataset 'jsonl', 'parquet' or 'hf:NAME')."
    )
  if c.dataset == "synthetic":
    splits = synthetic_sources(c)
  elif c.dataset == "text" or c.dataset in record_files.SUFFIXES:
    splits = file_sources(c)
  elif c.dataset.startswith(hf_datasets.PREFIX):
    parts = hf_datasets.splits(c, split_names(c))
    splits = {s: Source(*p, weighted=fmt == "chat") for s, p in parts.items()}
  else:
    splits = {s: Source(*parts) for s, parts in tfds.splits(c, split_names(c)).items()}
  for split, key in (("train", "train_split"), ("validation", "eval_split")):
    if split not in splits:
      raise UserError(f"no {split} split is configured: set data.{key}.")
  return splits


def split_names(c) -> dict[str, str]:
  return {"train": c.train_split, "validation": c.eval_split, "test": c.test_split}


def file_sources(c) -> dict[str, Source]:
  """Local files named by data.text_files.<split> (paths or globs), read as streams: UTF-8
  text, or records (data.dataset 'jsonl' or 'parquet')."""
  records = c.dataset in record_files.SUFFIXES
  if not records and c.documents not in text_files.DOCUMENTS:
    raise UserError(f"data.documents={c.documents!r}: use one of {list(text_files.DOCUMENTS)}.")
  paths = {
    split: text_files.expand(c.text_files[split], f"data.text_files.{split}")
    for split in SPLITS
    if c.text_files[split]
  }
  for split, ps in paths.items():
    if records:
      record_files.check_paths(c.dataset, ps, f"data.text_files.{split}")
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
  if records:
    chat = c.get("format", "text") == "chat"
    return {s: Source(*p, weighted=chat) for s, p in record_files.splits(c, paths, holdout).items()}
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
    spans = lambda: text_files.spans(r, c.documents, chunks.CHUNK_CHARS)
    return Source(identity(split), functools.partial(text_files.pieces, r, c.documents), spans)

  return {s: source(s, r) for s, r in ranges.items()}


def synthetic_sources(c) -> dict[str, Source]:
  """Generated ids: data.synthetic_tokens for train, a tenth (at least two windows) held out."""
  held_out = max(c.synthetic_tokens // 10, 2 * c.seq_len)
  sizes = {"train": c.synthetic_tokens, "validation": held_out, "test": held_out}
  return {
    split: Source(
      {"synthetic": c.synthetic, "vocab_size": c.vocab_size, "tokens": n, "split": split},
      generate=functools.partial(synthetic_tokens, c.synthetic, c.vocab_size, n, i),
    )
    for i, (split, n) in enumerate(sizes.items())
  }


def synthetic_tokens(kind: str, vocab_size: int, num_tokens: int, seed: int) -> np.ndarray:
  """'random': uniform ids; 'pattern': runs of 16 consecutive ids from random starts."""
  rng = np.random.default_rng([seed, num_tokens])
  if kind == "random":
    return rng.integers(0, vocab_size, num_tokens, dtype=np.int32)
  if kind == "pattern":
    starts = rng.integers(0, vocab_size, num_tokens // 16 + 1).repeat(16)[:num_tokens]
    return ((starts + np.arange(num_tokens) % 16) % vocab_size).astype(np.int32)
  raise UserError(f"data.synthetic={kind!r}: use 'random' or 'pattern'.")
