"""Text -> token ids: the data pipeline, a short sequence of stages, each in its own module.

  sources     the config's sources (a plain config is a one-source mixture), each split's
              text: TFDS (tfds.py), local files (text_files.py) or generated (synthetic)
  tokenizers  the tokenizer: the run's, a cached one, or one trained on the train text
  streams     each split of each source tokenized once into the cache (token_cache.py), then
              memory-mapped; a split of the corpus is a Mixture of its sources' streams
  batches     training windows as a pure function of (seed, step), evaluation batches

Documents are joined by the tokenizer's end-of-document token into one stream per split, and
training windows cross document boundaries (packing, as in GPT-2 pretraining).
"""

import os

from lm_jax import UserError
from lm_jax.data import (
  hf_tokenizer,  # noqa: F401  (the tokenizer kinds register as they are defined)
  sources,
  sp_tokenizer,  # noqa: F401
  streams,
  tokenizers,
)
from lm_jax.data.sources import SPLITS, synthetic_tokens  # noqa: F401  (the package's names)


def prepare(data_config, workdir: str, is_writer: bool = True):
  """Loads or trains the tokenizer and returns (tokenizer, {split: streams.Mixture}).

  The tokenizer is saved in `workdir` (by the writer process; not when `workdir` is '') and
  reused from there, so sampling and evaluation decode exactly as training encoded.
  """
  c, named = sources.resolve(data_config)
  tokenizer = tokenizers.obtain(c, workdir, named)
  corpus = streams.corpus(named, tokenizer)
  streams.check_length(corpus, c.seq_len)
  path = os.path.join(workdir, "tokenizer.json")
  if workdir and is_writer and not os.path.exists(path):  # Once all splits are known usable.
    os.makedirs(workdir, exist_ok=True)
    tokenizers.save(tokenizer, path)
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
