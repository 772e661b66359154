"""Text sources -> tokenizer -> token cache on disk -> numpy batches.

Sources (`data.dataset`): any TFDS text dataset by name, 'text' for local
files, or 'synthetic'. Documents are joined by the tokenizer's end-of-document
token into one stream per split, and training windows cross document
boundaries (packing, as in GPT-2 pretraining).

Each split is tokenized once into a flat uint16/uint32 file under
`data.cache_dir`, keyed by source, split and tokenizer, and memory-mapped by
every later run. The only module that imports TensorFlow (through TFDS), and
only when a TFDS dataset is asked for.
"""

import dataclasses
import difflib
import functools
import glob
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tqdm

from lm_jax import UserError, tokenizers

SPLITS = ("train", "validation", "test")
ORDERS = ("random_windows", "epochs")
_CACHE_FORMAT = 1  # Bump when the cached token layout changes.


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a dataset: what identifies it, and how to read its documents."""

  identity: dict
  documents: Callable[[], Iterable[str]]


def _split_names(c) -> dict[str, str]:
  return {"train": c.train_split, "validation": c.eval_split, "test": c.test_split}


def _tfds_sources(c) -> dict[str, Source]:
  """Each configured split of a TFDS dataset; prepared on first read."""
  if c.manual_dir and not (os.path.isdir(c.manual_dir) and os.listdir(c.manual_dir)):
    raise UserError(
      f"data.manual_dir {c.manual_dir!r} holds no files: put the dataset's "
      f"manual files there (for tiny_shakespeare, input.txt) or unset it to download."
    )
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.
  try:
    builder = tfds.builder(c.dataset, data_dir=c.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(c.dataset.split("/")[0], tfds.list_builders(), n=3)
    raise UserError(
      f"TFDS has no dataset {c.dataset!r}"
      f"{f' (close: {close})' if close else ''}: check data.dataset."
    ) from e

  @functools.cache
  def prepare():
    try:
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=c.manual_dir or None)
      )
    except Exception as e:  # Network, checksum and manual-file errors all end here.
      raise UserError(
        f"could not prepare TFDS dataset {c.dataset!r} ({type(e).__name__}: {str(e)[:300]}); "
        "offline, put its files in a folder and pass --config.data.manual_dir=FOLDER "
        "(for tiny_shakespeare: input.txt)."
      ) from e

  def reader(name):
    def documents():
      prepare()
      try:
        ds = builder.as_dataset(split=name)
      except (ValueError, KeyError) as e:
        raise UserError(
          f"TFDS dataset {c.dataset!r} has no split {name!r} "
          f"(it has {sorted(builder.info.splits)}): check data.*_split; "
          "slices like 'train[:1%]' work."
        ) from e
      for example in tfds.as_numpy(ds):
        if c.text_key not in example:
          raise UserError(
            f"TFDS dataset {c.dataset!r} has no feature {c.text_key!r} "
            f"(it has {sorted(example)}): set data.text_key."
          )
        yield example[c.text_key].decode("utf-8")

    return documents

  base = {"tfds": c.dataset, "version": str(builder.version)}
  return {
    split: Source({**base, "split": name}, reader(name))
    for split, name in _split_names(c).items()
    if name
  }


def _read_documents(path: str, per: str) -> list[str]:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"{path} is not UTF-8 at byte {e.start}: convert it to UTF-8.") from e
  if per == "file":
    return [text]
  return [d.strip("\n") for d in text.split("\n\n") if d.strip()]


def _holdout(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
  """Splits off the last `fraction` of the characters, at a newline where one is near."""
  cut = int(sum(map(len, docs)) * (1 - fraction))
  for i, doc in enumerate(docs):
    if cut <= len(doc):
      at = doc.find("\n", cut)
      at = cut if at < 0 or at - cut > 1000 else at + 1
      head, tail = doc[:at], doc[at:]
      return docs[:i] + ([head] if head else []), ([tail] if tail else []) + docs[i + 1 :]
    cut -= len(doc)
  return docs, []


def _file_sources(c) -> dict[str, Source]:
  """Local UTF-8 files named by data.text_files.<split> (paths or globs)."""
  if c.documents not in ("file", "blank_line"):
    raise UserError(f"data.documents={c.documents!r}: use 'file' or 'blank_line'.")
  paths = {}
  for split in SPLITS:
    pattern = c.text_files[split]
    if pattern:
      paths[split] = sorted(glob.glob(os.path.expanduser(pattern)))
      if not paths[split]:
        raise UserError(f"data.text_files.{split}={pattern!r} matches no file: check the path.")
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

  def reader(split):
    def documents():
      docs = [d for p in paths.get(split, paths["train"]) for d in _read_documents(p, c.documents)]
      if holdout and split in ("train", "validation"):
        docs = _holdout(docs, c.holdout_fraction)[split == "validation"]
      return docs

    return documents

  def identity(split):
    files = [
      (os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns)
      for p in paths.get(split, paths["train"])
    ]
    held = c.holdout_fraction if holdout and split in ("train", "validation") else None
    return {"files": files, "documents": c.documents, "holdout": held, "split": split}

  splits = list(paths) + (["validation"] if holdout else [])
  return {s: Source(identity(s), reader(s)) for s in SPLITS if s in splits}


def synthetic_tokens(kind: str, vocab_size: int, num_tokens: int, seed: int) -> np.ndarray:
  """'random': uniform ids; 'pattern': runs of 16 consecutive ids from random starts."""
  rng = np.random.default_rng([seed, num_tokens])
  if kind == "random":
    return rng.integers(0, vocab_size, num_tokens, dtype=np.int32)
  if kind == "pattern":
    starts = rng.integers(0, vocab_size, num_tokens // 16 + 1).repeat(16)[:num_tokens]
    return ((starts + np.arange(num_tokens) % 16) % vocab_size).astype(np.int32)
  raise UserError(f"data.synthetic={kind!r}: use 'random' or 'pattern'.")


def _tokenize(tokenizer, documents: Iterable[str], desc: str) -> Iterator[np.ndarray]:
  """Yields the token stream in chunks: documents joined by end-of-document ids."""
  bar = tqdm.tqdm(
    desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False, mininterval=1.0
  )
  first, chunk, size = True, [], 0

  def flush():
    pieces = []
    for ids in tokenizer.encode_batch(chunk):
      if not first or pieces:
        pieces.append(tokenizer.eod_ids)
      pieces.append(ids)
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)

  for doc in documents:
    chunk.append(doc)
    size += len(doc)
    if size >= 1 << 22:
      yield flush()
      bar.update(size)
      first, chunk, size = False, [], 0
  if chunk:
    yield flush()
    bar.update(size)
  bar.close()


def _cache_dir(c) -> str:
  default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "lm_jax")
  return os.path.expanduser(c.cache_dir or default)


def _key(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _atomic_write(path: str, write: Callable) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)  # Readers see the whole file or none; processes may race here.


def cached_tokens(c, tokenizer, split: str, source: Source) -> np.ndarray:
  """The split's token stream, tokenized once and memory-mapped from the cache."""
  dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
  key = _key(_CACHE_FORMAT, source.identity, tokenizers.fingerprint(tokenizer))
  path = os.path.join(_cache_dir(c), "tokens", f"{split}-{key}.{np.dtype(dtype).name}")
  if not os.path.exists(path):
    t = time.perf_counter()

    def write(f):
      for ids in _tokenize(tokenizer, source.documents(), f"tokenizing {split}"):
        f.write(ids.astype(dtype).tobytes())

    _atomic_write(path, write)
    meta = {
      "identity": source.identity,
      "tokenizer": tokenizer.kind,
      "seconds": time.perf_counter() - t,
    }
    _atomic_write(path + ".json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
  if os.path.getsize(path) == 0:
    raise UserError(
      f"the {split} split of {c.dataset!r} is empty: check data.*_split and data.text_files."
    )
  return np.memmap(path, dtype=dtype, mode="r")


def _tokenizer(c, workdir: str, train: Source):
  """The workdir's tokenizer, else a cached one trained on the same data, else a new one."""
  path = os.path.join(workdir, "tokenizer.json")
  if os.path.exists(path):
    tokenizer = tokenizers.load(path)
    tokenizers.check_matches(tokenizer, c, path)
    return tokenizer
  kind = "ids" if c.dataset == "synthetic" else c.tokenizer
  if kind == "hf":  # Read from data.hf_tokenizer: nothing to train, nothing to cache.
    return tokenizers.train(kind, (), c)
  settings = {"kind": kind}
  if kind in ("sentencepiece", "ids"):
    settings.update(vocab_size=c.vocab_size)
  if kind == "sentencepiece":
    settings.update(type=c.sentencepiece_type, train_bytes=c.tokenizer_train_bytes)
  cache = os.path.join(
    _cache_dir(c), "tokenizers", f"{kind}-{_key(_CACHE_FORMAT, train.identity, settings)}.json"
  )
  if os.path.exists(cache):
    tokenizer = tokenizers.load(cache)
  else:
    tokenizer = tokenizers.train(kind, train.documents(), c)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tokenizers.save(tokenizer, cache)
  return tokenizer


def prepare(data_config, workdir: str, is_writer: bool = True):
  """Loads or trains the tokenizer and returns (tokenizer, {split: token array}).

  The tokenizer is saved in `workdir` (by the writer process) and reused from
  there, so sampling and evaluation decode exactly as training encoded.
  """
  c = data_config
  if c.dataset == "synthetic":
    held_out = max(c.synthetic_tokens // 10, 2 * c.seq_len)
    sizes = {"train": c.synthetic_tokens, "validation": held_out, "test": held_out}
    tokenizer = _tokenizer(c, workdir, Source({"synthetic": c.vocab_size}, list))
    tokens = {
      s: synthetic_tokens(c.synthetic, c.vocab_size, n, i) for i, (s, n) in enumerate(sizes.items())
    }
  else:
    sources = _file_sources(c) if c.dataset == "text" else _tfds_sources(c)
    for split, key in (("train", "train_split"), ("validation", "eval_split")):
      if split not in sources:
        raise UserError(f"no {split} split is configured: set data.{key}.")
    tokenizer = _tokenizer(c, workdir, sources["train"])
    tokens = {s: cached_tokens(c, tokenizer, s, src) for s, src in sources.items()}
  for split, toks in tokens.items():
    check_length(toks, split, c.seq_len)
  path = os.path.join(workdir, "tokenizer.json")
  if is_writer and not os.path.exists(path):  # Only once all splits are known to be usable.
    os.makedirs(workdir, exist_ok=True)
    tokenizers.save(tokenizer, path)
  return tokenizer, tokens


def check_length(tokens: np.ndarray, split: str, seq_len: int) -> None:
  if len(tokens) < seq_len + 1:
    raise UserError(
      f"the {split} split has {len(tokens)} tokens, fewer than "
      f"data.seq_len + 1 = {seq_len + 1}: lower data.seq_len or add text."
    )


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, num_windows: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch, 1]).permutation(num_windows)


def train_batch(
  tokens: np.ndarray,
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
  per epoch, so every token is a target once per epoch.

  Returns:
    {'inputs': int32[rows, seq_len], 'targets': int32[rows, seq_len]}.
  """
  if order == "random_windows":
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)[rows]
  elif order == "epochs":
    num_windows = (len(tokens) - 1) // seq_len
    index = step * batch_size + np.arange(batch_size)[rows]
    starts = (
      np.array(
        [
          _epoch_permutation(seed, int(e), num_windows)[w]
          for e, w in zip(*np.divmod(index, num_windows))
        ],
        np.int64,
      ).reshape(-1)
      * seq_len
    )
  else:
    raise UserError(f"data.order={order!r}: use one of {list(ORDERS)}.")
  windows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int32)
  return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


def eval_batches(tokens: np.ndarray, seq_len: int, batch_size: int):
  """Yields batches covering every next-token prediction of `tokens` exactly once.

  Consecutive non-overlapping windows; the tail is padded with weight 0 rows,
  so every batch has `batch_size` rows.
  """
  n = len(tokens) - 1
  num_windows = -(-n // seq_len)
  num_rows = -(-num_windows // batch_size) * batch_size
  padded = np.zeros(num_rows * seq_len + 1, np.int32)
  padded[: n + 1] = tokens
  inputs = padded[:-1].reshape(num_rows, seq_len)
  targets = padded[1:].reshape(num_rows, seq_len)
  weights = (np.arange(num_rows * seq_len) < n).reshape(num_rows, seq_len).astype(np.float32)
  for i in range(0, num_rows, batch_size):
    rows = slice(i, i + batch_size)
    yield {"inputs": inputs[rows], "targets": targets[rows], "weights": weights[rows]}


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

  def _run(self, make, steps):
    try:
      for step in steps:
        item = (True, make(step))
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        if self._stop.is_set():
          return
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      self._queue.put((False, e))
      return
    self._queue.put((False, None))

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
