"""Text sources -> tokenizer -> token streams cached on disk (batches.py cuts them into batches).

Sources (`data.dataset`): any TFDS text dataset by name, 'text' for local
files, or 'synthetic'. Documents are joined by the tokenizer's end-of-document
token into one stream per split, and training windows cross document
boundaries (packing, as in GPT-2 pretraining).

Each split is tokenized once, by `data.workers` processes, into uint16/uint32
shard files under `data.cache_dir` (lm_jax/token_cache.py), keyed by source,
split and tokenizer, and memory-mapped by every later run. Local files are
read as streams (lm_jax/text_files.py), in byte ranges; TFDS splits by their
shard files (TfdsSpan); each worker reads its own. The only module that
imports TensorFlow (through TFDS), and only when a TFDS dataset is asked for.
"""

import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from lm_jax import UserError, console, mixtures, text_files, token_cache, tokenizers

SPLITS = ("train", "validation", "test")
TokenStream = token_cache.TokenStream
_CACHE_FORMAT = 4  # Bump when the cached token layout changes.


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


def _split_names(c) -> dict[str, str]:
  return {"train": c.train_split, "validation": c.eval_split, "test": c.test_split}


def _import_tfds():
  """TFDS, with TensorFlow kept off the accelerators and quiet."""
  console.quiet_tensorflow()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.
  if not console.verbose():
    tfds.disable_progress_bar()  # The first preparation prints one line of ours instead.
  console.quiet_package("absl", "tensorflow_datasets", logging.ERROR)  # Notes on empty dirs.
  return tfds


@functools.cache
def _builder(dataset: str, data_dir: str):
  tfds = _import_tfds()
  try:
    return tfds.builder(dataset, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(dataset.split("/")[0], tfds.list_builders(), n=3)
    raise UserError(
      f"TFDS has no dataset {dataset!r}{f' (close: {close})' if close else ''}: check data.dataset."
    ) from e


def _bad_split(builder, dataset: str, name: str) -> UserError:
  return UserError(
    f"TFDS dataset {dataset!r} has no split {name!r} "
    f"(it has {sorted(builder.info.splits)}): check data.*_split; slices like 'train[:1%]' work."
  )


def _examples(dataset: str, data_dir: str, name: str, text_key: str, split=None) -> Iterator[str]:
  """The texts of a prepared TFDS split `name` (or of `split`, part of it), in order."""
  tfds, builder = _import_tfds(), _builder(dataset, data_dir)
  try:
    ds = builder.as_dataset(split=split or name, shuffle_files=False)
  except (ValueError, KeyError) as e:
    raise _bad_split(builder, dataset, name) from e
  for example in tfds.as_numpy(ds):
    if text_key not in example:
      raise UserError(
        f"TFDS dataset {dataset!r} has no feature {text_key!r} "
        f"(it has {sorted(example)}): set data.text_key."
      )
    yield example[text_key].decode("utf-8")


@dataclasses.dataclass(frozen=True)
class TfdsSpan:
  """Examples [start, stop) of split `part` (one of TFDS's shard files, or all of split `name`
  when `part` is empty) of a prepared TFDS dataset, read by the worker that encodes them."""

  dataset: str
  data_dir: str
  name: str  # The configured split, for messages.
  text_key: str
  part: str = ""
  start: int = 0
  stop: int = 0
  first: bool = True  # The first span of the split: its first example starts no document.

  def pieces(self) -> Iterator[tuple[str, bool]]:
    split = None
    if self.part:
      split = _import_tfds().core.ReadInstruction(self.part, self.start, self.stop, unit="abs")
    first = self.first
    for text in _examples(self.dataset, self.data_dir, self.name, self.text_key, split):
      for j, piece in enumerate(token_cache.cut(text)):
        yield piece, j == 0 and not first
        first = False


def _tfds_spans(tfds, builder, c, name: str) -> list[TfdsSpan]:
  """Split `name` in the examples of each of TFDS's shard files that it covers, in order."""
  span = functools.partial(TfdsSpan, c.dataset, c.data_dir, name, c.text_key)
  if not builder.info.splits:  # No split statistics (mock data): one span.
    return [span()]
  try:
    ranges = tfds.core.ReadInstruction.from_spec(name).to_absolute(builder.info.splits)
  except (ValueError, KeyError, AssertionError) as e:
    raise _bad_split(builder, c.dataset, name) from e
  spans = []
  for r in ranges:
    info = builder.info.splits[r.splitname]
    start, stop = r.from_ or 0, info.num_examples if r.to is None else r.to
    bounds = np.cumsum([0, *(info.shard_lengths or [info.num_examples])])
    for a, b in zip(bounds[:-1], bounds[1:]):
      a, b = max(int(a), start), min(int(b), stop)
      if a < b:
        spans.append(span(r.splitname, a, b, first=not spans))
  return spans


def _tfds_sources(c) -> dict[str, Source]:
  """Each configured split of a TFDS dataset; prepared on first read."""
  if c.manual_dir and not (os.path.isdir(c.manual_dir) and os.listdir(c.manual_dir)):
    raise UserError(
      f"data.manual_dir {c.manual_dir!r} holds no files: put the dataset's "
      f"manual files there (for tiny_shakespeare, input.txt) or unset it to download."
    )
  tfds, builder = _import_tfds(), _builder(c.dataset, c.data_dir)

  def cannot_prepare(cause: str) -> UserError:
    return UserError(
      f"could not prepare TFDS dataset {c.dataset!r} ({cause}); "
      "offline, put its files in a folder and pass --config.data.manual_dir=FOLDER "
      "(for tiny_shakespeare: input.txt)."
    )

  @functools.cache
  def prepare():
    if builder.is_prepared():
      return
    if not c.manual_dir:  # Fail in seconds offline, not after minutes of download retries.
      unreachable = _unreachable_host(getattr(builder, "url_infos", None) or {})
      if unreachable:
        raise cannot_prepare(f"{unreachable} cannot be reached")
    print(f"preparing TFDS dataset {c.dataset} in {builder.data_dir} (once)", file=sys.stderr)
    try:
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=c.manual_dir or None)
      )
    except Exception as e:  # Network, checksum and manual-file errors all end here.
      raise cannot_prepare(f"{type(e).__name__}: {str(e)[:300]}") from e

  def pieces(name):
    prepare()
    return ((text, True) for text in _examples(c.dataset, c.data_dir, name, c.text_key))

  def spans(name):
    prepare()
    return _tfds_spans(tfds, builder, c, name)

  base = {"tfds": c.dataset, "version": str(builder.version)}
  return {
    split: Source(
      {**base, "split": name},
      functools.partial(pieces, name),
      functools.partial(spans, name),
    )
    for split, name in _split_names(c).items()
    if name
  }


def _unreachable_host(urls, timeout: float = 5.0) -> str | None:
  """The first host among `urls` that takes no connection within `timeout`, else None."""
  for url in urls:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
      continue
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
      socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError:
      return f"{parts.scheme}://{parts.hostname}"
  return None


def _file_sources(c) -> dict[str, Source]:
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
  sources = _file_sources(c) if c.dataset == "text" else _tfds_sources(c)
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
