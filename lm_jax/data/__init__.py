"""Text sources -> tokenizer -> token streams cached on disk (batches.py cuts them into batches).

Sources (`data.dataset`): any TFDS text dataset by name (lm_jax/data/tfds.py), 'text' for
local files, or 'synthetic' (lm_jax/data/sources.py). Documents are joined by the tokenizer's
end-of-document token into one stream per split, and training windows cross document
boundaries (packing, as in GPT-2 pretraining).

Each split is tokenized once, by `data.workers` processes, into uint16/uint32
shard files under `data.cache_dir` (lm_jax/data/token_cache.py), keyed by source,
split and tokenizer, and memory-mapped by every later run. Local files are
read as streams (lm_jax/data/text_files.py), in byte ranges; TFDS splits by their
shard files; each worker reads its own.
"""

import hashlib
import json
import os

from lm_jax import UserError
from lm_jax.data import (
  hf_tokenizer,  # noqa: F401  (registers the tokenizer kind hf)
  mixtures,
  tfds,
  token_cache,
  tokenizers,
)
from lm_jax.data.sources import SPLITS, Source, file_sources, synthetic_tokens

TokenStream = token_cache.TokenStream
_CACHE_FORMAT = 4  # Bump when the cached token layout changes.


def _cache_dir(c) -> str:
  default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "lm_jax")
  return os.path.expanduser(c.cache_dir or default)


def _key(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cached_tokens(c, tokenizer, split: str, source: Source) -> token_cache.TokenStream:
  """The split's token stream: tokenized once into shards (resumably), then memory-mapped."""
  chunking = (token_cache.CHUNK_CHARS, c.shard_tokens)  # Parts are resumed by number.
  key = _key(_CACHE_FORMAT, source.identity, tokenizers.fingerprint(tokenizer), chunking)
  directory = os.path.join(_cache_dir(c), "tokens", f"{split}-{key}")
  num_workers = token_cache.workers(c.workers)
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
    ),
  }
  # Processes that find another building this directory encode the chunks it has not claimed.
  contribute = lambda: token_cache.contribute(directory, source.chunks, tokenizer, num_workers)
  index = token_cache.cached(directory, build, c.cache_wait_sec, contribute)
  if index["tokens"] == 0:
    raise UserError(
      f"the {split} split of {c.dataset!r} is empty: check data.*_split and data.text_files."
    )
  return token_cache.TokenStream(directory, index)


def _tokenizer(c, workdir: str, train: Source):
  """The workdir's tokenizer, else a cached one trained on the same data, else a new one."""
  path = os.path.join(workdir, "tokenizer.json") if workdir else ""
  if path and os.path.exists(path):
    tokenizer = tokenizers.load(path)
    tokenizers.check_matches(tokenizer, c, path)
    return tokenizer
  kind = "ids" if c.dataset == "synthetic" else c.tokenizer
  if kind == "hf":  # Read from data.hf_tokenizer: nothing to train, nothing to cache.
    return tokenizers.train(kind, (), c)
  settings = {"kind": kind}
  if kind in ("sentencepiece", "ids", "word"):
    settings.update(vocab_size=c.vocab_size)
  if kind == "sentencepiece":
    settings.update(type=c.sentencepiece_type, train_bytes=c.tokenizer_train_bytes)
  cache = os.path.join(
    _cache_dir(c), "tokenizers", f"{kind}-{_key(_CACHE_FORMAT, train.identity, settings)}.json"
  )
  if os.path.exists(cache):
    tokenizer = tokenizers.load(cache)
  else:
    tokenizer = tokenizers.train(kind, train.texts(), c)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tokenizers.save(tokenizer, cache)
  return tokenizer


def _sources(c) -> dict[str, Source]:
  sources = file_sources(c) if c.dataset == "text" else tfds.sources(c)
  for split, key in (("train", "train_split"), ("validation", "eval_split")):
    if split not in sources:
      raise UserError(f"no {split} split is configured: set data.{key}.")
  return sources


def _mixture_sources(c) -> tuple[dict, dict[str, dict[str, Source]], Source]:
  """Each source's config and splits, and the mixed train text the shared tokenizer learns."""
  configs = mixtures.source_configs(c)
  weights = mixtures.weights(c)
  sources = {}
  for name, sc in configs.items():
    try:
      sources[name] = _sources(sc)
    except UserError as e:
      raise UserError(f"data.mixture.{name}: {e}") from e
  identity = {n: [str(weights[n]), s["train"].identity] for n, s in sources.items()}
  texts = lambda: mixtures.interleaved({n: s["train"].texts() for n, s in sources.items()}, weights)
  return configs, sources, Source({"mixture": identity}, lambda: ((t, True) for t in texts()))


def _mixture_tokens(c, workdir: str) -> tuple:
  """(tokenizer, {split: Mixture}): splits that every source has; one tokenizer for all."""
  configs, sources, mixed = _mixture_sources(c)
  tokenizer = _tokenizer(c, workdir, mixed)
  weights = mixtures.weights(c)
  splits = [s for s in SPLITS if all(s in src for src in sources.values())]
  tokens = {
    split: mixtures.Mixture(
      {n: cached_tokens(configs[n], tokenizer, split, sources[n][split]) for n in sources},
      weights,
    )
    for split in splits
  }
  return tokenizer, tokens


def prepare(data_config, workdir: str, is_writer: bool = True):
  """Loads or trains the tokenizer and returns (tokenizer, {split: token array}).

  With data.mixture, each split is a `mixtures.Mixture` of the sources' token streams.
  The tokenizer is saved in `workdir` (by the writer process) and reused from
  there, so sampling and evaluation decode exactly as training encoded.
  """
  c = data_config
  if mixtures.names(c):
    tokenizer, tokens = _mixture_tokens(c, workdir)
  elif c.dataset == "synthetic":
    held_out = max(c.synthetic_tokens // 10, 2 * c.seq_len)
    sizes = {"train": c.synthetic_tokens, "validation": held_out, "test": held_out}
    tokenizer = _tokenizer(c, workdir, Source({"synthetic": c.vocab_size}, tuple))
    tokens = {
      s: synthetic_tokens(c.synthetic, c.vocab_size, n, i) for i, (s, n) in enumerate(sizes.items())
    }
  else:
    sources = _sources(c)
    tokenizer = _tokenizer(c, workdir, sources["train"])
    tokens = {s: cached_tokens(c, tokenizer, s, src) for s, src in sources.items()}
  for split, toks in tokens.items():
    for name, stream in streams(toks).items():
      check_length(stream, f"{name} {split}" if name else split, c.seq_len)
  path = os.path.join(workdir, "tokenizer.json")
  if is_writer and not os.path.exists(path):  # Only once all splits are known to be usable.
    os.makedirs(workdir, exist_ok=True)
    tokenizers.save(tokenizer, path)
  return tokenizer, tokens


def streams(tokens) -> dict:
  """A split's token streams by source name; '' names the one stream of a plain split."""
  return tokens.streams if isinstance(tokens, mixtures.Mixture) else {"": tokens}


def _summary(stream) -> dict:
  keys = ("tokens", "bytes", "seconds", "fingerprint", "workers")
  return {k: stream.index[k] for k in keys}


def prepare_cache(data_config) -> dict:
  """Tokenizes every configured split (or finds it cached); a summary per split.

  With data.mixture, the keys are 'SPLIT/SOURCE'.
  """
  c = data_config
  if c.dataset == "synthetic" and not mixtures.names(c):
    raise UserError("data.dataset='synthetic' has no text to tokenize: pick a dataset.")
  if mixtures.names(c):
    _, tokens = _mixture_tokens(c, "")
    return {
      f"{split}/{n}": _summary(s) for split, mix in tokens.items() for n, s in mix.streams.items()
    }
  sources = _sources(c)
  tokenizer = _tokenizer(c, "", sources["train"])
  return {
    split: _summary(cached_tokens(c, tokenizer, split, src)) for split, src in sources.items()
  }


def fingerprints(tokens: dict) -> dict:
  """sha256 of each cached split's token ids, as written (what run.json records).

  Mixtures: one per 'SPLIT/SOURCE'.
  """
  found = {}
  for split, toks in tokens.items():
    for name, stream in streams(toks).items():
      if hasattr(stream, "index"):
        found[f"{split}/{name}" if name else split] = stream.index["fingerprint"]
  return found


def check_length(tokens, split: str, seq_len: int) -> None:
  if len(tokens) < seq_len + 1:
    raise UserError(
      f"the {split} split has {len(tokens)} tokens, fewer than "
      f"data.seq_len + 1 = {seq_len + 1}: lower data.seq_len or add text."
    )
