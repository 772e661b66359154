"""Text -> token ids: the data pipeline, a short sequence of stages, each in its own module.

  sources     the config's sources (a plain config is a one-source mixture), each split's
              text: TFDS (tfds.py), local files (text_files.py) or generated (synthetic)
  tokenizers  the tokenizer: the run's, a cached one, or one trained on the train text
  streams     each split of each source cut in chunks (chunks.py), tokenized once into the
              cache (token_cache.py, its files in shards.py), then memory-mapped; a split of
              the corpus is a Mixture of its sources' streams
  batches     training windows as a pure function of (seed, step), evaluation batches

Documents are joined by the tokenizer's end-of-document token into one stream per split, and
training windows cross document boundaries (packing, as in GPT-2 pretraining).
"""

import ml_collections

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.data import (
  hf_tokenizer,  # noqa: F401  (the tokenizer kinds register as they are defined)
  sources,
  sp_tokenizer,  # noqa: F401
  streams,
  text_files,
  tokenizers,
)
from lm_jax.data.sources import SPLITS, synthetic_tokens  # noqa: F401  (the package's names)


def check_config(data_config) -> None:
  """Refuses data keys of the wrong type or range before anything is read or tokenized; what
  the sources hold (files that exist, their splits) is checked as each stage reads them."""
  c = data_config
  _check_source(c, "data")
  for name, source in (c.get("mixture") or {}).items():
    if isinstance(source, ml_collections.ConfigDict) and "weight" in source:
      config_lib.check_number(f"data.mixture.{name}.weight", source.weight, 0, above=True)
      _check_source(source, f"data.mixture.{name}")  # The keys it sets; sources checks the rest.
  config_lib.check_choice("data.tokenizer", c.tokenizer, sorted(tokenizers.KINDS))
  config_lib.check_str("data.hf_tokenizer", c.hf_tokenizer)
  config_lib.check_int("data.vocab_size", c.vocab_size, 1)
  config_lib.check_choice("data.sentencepiece_type", c.sentencepiece_type, ("bpe", "unigram"))
  config_lib.check_int("data.tokenizer_train_bytes", c.tokenizer_train_bytes, 1)
  config_lib.check_choice("data.synthetic", c.synthetic, ("random", "pattern"))
  config_lib.check_int("data.synthetic_tokens", c.synthetic_tokens, 1)
  config_lib.check_str("data.cache_dir", c.cache_dir)
  config_lib.check_int("data.workers", c.workers, 0)
  config_lib.check_int("data.shard_tokens", c.shard_tokens, 1)
  config_lib.check_number("data.cache_wait_sec", c.cache_wait_sec, 0, above=True)


def _check_source(c, prefix: str) -> None:
  """The keys of `c` that say where a source's text is (those it has, for a mixture source)."""
  for key in (
    "dataset",
    "data_dir",
    "manual_dir",
    "text_key",
    "train_split",
    "eval_split",
    "test_split",
  ):
    if key in c:
      config_lib.check_str(f"{prefix}.{key}", c[key])
  for split, path in (c.get("text_files") or {}).items():
    config_lib.check_str(f"{prefix}.text_files.{split}", path)
  if "documents" in c:
    config_lib.check_choice(f"{prefix}.documents", c.documents, text_files.DOCUMENTS)
  if "holdout_fraction" in c:
    config_lib.check_number(f"{prefix}.holdout_fraction", c.holdout_fraction, 0, 1, below=True)


def prepare(data_config, workdir: str, is_writer: bool = True):
  """Loads or trains the tokenizer and returns (tokenizer, {split: streams.Mixture}).

  The tokenizer is saved in `workdir` (by the writer process; not when `workdir` is '') and
  reused from there, so sampling and evaluation decode exactly as training encoded.
  """
  c, named = sources.resolve(data_config)
  tokenizer = tokenizers.obtain(c, workdir, named)
  corpus = streams.corpus(named, tokenizer)
  streams.check_length(corpus, c.seq_len)
  tokenizers.keep(tokenizer, workdir, is_writer)  # Once all splits are known usable.
  return tokenizer, corpus


def prepare_cache(data_config) -> dict:
  """Tokenizes every configured split (or finds it cached); a summary per 'SPLIT[/SOURCE]'."""
  c, named = sources.resolve(data_config)
  cached = streams.cached(streams.corpus(named, tokenizers.obtain(c, "", named)))
  if not cached:
    raise UserError(f"data.dataset={c.dataset!r} has no text to tokenize: pick a dataset.")
  keys = ("tokens", "bytes", "seconds", "fingerprint", "workers")
  return {label: {k: s.index[k] for k in keys} for label, s in cached.items()}


fingerprints = streams.fingerprints
