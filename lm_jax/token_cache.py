"""A split's pieces of text -> token ids in numbered shard files -> one memory-mapped stream.

CACHE/tokens/SPLIT-KEY/ holds `shard-00000.uint16`, ... (shard i is complete once
`shard-00000.json` beside it says how far into the text it reaches) and `index.json`, written
last. The text is cut into chunks by the reader alone (local files: as byte ranges each worker reads
itself, text_files.spans); a pool of worker processes encodes them and the results are
written in order, so the tokens are the same for any number of workers, and
an interrupted build resumes after its last complete shard. One process builds a directory at a
time (a lock beside it); the others wait for its index.
"""

import collections
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tqdm

from lm_jax import UserError, tokenizers

CHUNK_CHARS = 1 << 20  # Text per task a worker encodes; pieces are cut near this size.
MIN_POOL_CHUNKS = 4  # Fewer chunks than this are encoded in the calling process.
_WORKER = {}  # In a worker process only: the tokenizer, rebuilt once from its dict.


def workers(n: int) -> int:
  """data.workers: 0 means every core this process may use."""
  return n if n > 0 else len(os.sched_getaffinity(0))


def _cut(text: str) -> Iterator[str]:
  """A long text in pieces of about CHUNK_CHARS that end at a newline where one is."""
  start = 0
  while len(text) - start > CHUNK_CHARS:
    at = text.rfind("\n", start, start + CHUNK_CHARS) + 1
    at = at if at > start else start + CHUNK_CHARS  # A line this long is cut anywhere.
    yield text[start:at]
    start = at
  yield text[start:]


def chunks(pieces: Iterable[tuple[str, bool]]) -> Iterator[list[tuple[str, bool]]]:
  """Groups pieces `(text, starts_document)` into lists of about CHUNK_CHARS characters.

  The first piece of the stream starts no document (nothing precedes it to separate).
  """
  chunk, size, first = [], 0, True
  for text, new in pieces:
    for i, part in enumerate(_cut(text)):
      chunk.append((part, new and i == 0 and not first))
      first = False
      size += len(part)
      if size >= CHUNK_CHARS:
        yield chunk
        chunk, size = [], 0
  if chunk:
    yield chunk


def encode_chunk(tokenizer, chunk: list[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray]:
  """(int32 ids with end-of-document ids where documents start, [bytes, documents])."""
  texts = [t for t, _ in chunk]
  starts = np.array([new for _, new in chunk], bool)
  num_bytes = sum(len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts)
  stats = np.array([num_bytes, starts.sum()], np.int64)
  if hasattr(tokenizer, "encode_joined") and len(tokenizer.eod_ids) == 1:
    # Context-free tokenizers encode the whole chunk at once: no per-document arrays.
    ids, offsets = tokenizer.encode_joined(texts)
    offsets = np.concatenate([[0], offsets])[starts]
    return np.insert(ids, offsets, tokenizer.eod_ids[0]), stats
  pieces = []
  for new, ids in zip(starts, tokenizer.encode_batch(texts)):
    if new:
      pieces.append(tokenizer.eod_ids)
    pieces.append(ids)
  return (np.concatenate(pieces) if pieces else np.zeros(0, np.int32)), stats


def _load(chunk) -> list[tuple[str, bool]]:
  """A chunk's pieces: given as a list, or read now (an object with `pieces()`, such as a
  text_files.Span)."""
  return chunk.pieces() if hasattr(chunk, "pieces") else chunk


def _init_worker(tokenizer_dict: dict) -> None:
  _WORKER["tokenizer"] = tokenizers.from_dict(tokenizer_dict)


def _encode_in_worker(chunk, dtype):
  ids, stats = encode_chunk(_WORKER["tokenizer"], _load(chunk))
  return ids.astype(dtype), stats  # Half the bytes to send back, and no copy in the writer.


def encoded(tokenizer, chunk_iter: Iterable, num_workers: int, dtype, used: dict) -> Iterator:
  """encode_chunk over the chunks, in order; with several workers, a few chunks in flight each.

  A chunk is a list of pieces, or a description that the worker reads itself (`pieces()`),
  so that the reading is parallel too.

  A text of fewer than MIN_POOL_CHUNKS chunks is encoded here: starting workers would cost more.
  So are bytes: encoding them is cheaper than sending text to a worker. Sets used['workers'] to
  the number of processes that encode.
  """
  chunk_iter = iter(chunk_iter)
  head = list(itertools.islice(chunk_iter, MIN_POOL_CHUNKS))
  if num_workers <= 1 or len(head) < MIN_POOL_CHUNKS or tokenizer.kind == "byte":
    used["workers"] = 1
    for chunk in itertools.chain(head, chunk_iter):
      yield encode_chunk(tokenizer, _load(chunk))
    return
  chunk_iter = itertools.chain(head, chunk_iter)
  used["workers"] = num_workers
  # forkserver: JAX and TensorFlow threads in this process make fork unsafe.
  context = multiprocessing.get_context("forkserver")
  with context.Pool(num_workers, _init_worker, (tokenizer.to_dict(),)) as pool:
    pending = collections.deque()
    for chunk in chunk_iter:
      pending.append(pool.apply_async(_encode_in_worker, (chunk, dtype)))
      if len(pending) >= 2 * num_workers:  # Bounded: Pool.imap would read the whole corpus.
        yield pending.popleft().get()
    while pending:
      yield pending.popleft().get()


def _shard_path(directory: str, i: int, dtype) -> str:
  return os.path.join(directory, f"shard-{i:05d}.{np.dtype(dtype).name}")


def _write_json(path: str, obj: dict) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _meta_path(directory: str, i: int) -> str:
  return os.path.join(directory, f"shard-{i:05d}.json")


def _completed(directory: str, dtype) -> list[dict]:
  """The shards a previous build finished, in order (each with its running totals)."""
  done = []
  while True:
    meta = _read_json(_meta_path(directory, len(done)))
    if meta is None or not os.path.exists(_shard_path(directory, len(done), dtype)):
      return done
    done.append(meta)


def fingerprint(paths: list[str]) -> str:
  """sha256 of the token ids as written: the shard files' bytes, in order."""
  h = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      while block := f.read(1 << 20):
        h.update(block)
  return h.hexdigest()


def build(
  directory: str,
  chunk_iter: Callable[[], Iterable],
  tokenizer,
  num_workers: int,
  shard_tokens: int,
  desc: str,
) -> dict:
  """Tokenizes the chunks into shards in `directory`, resuming after complete ones; the index.

  `chunk_iter()` gives the chunks: lists of pieces (see `chunks`), or objects that read their
  own pieces (text_files.Span); the same chunks for every call.
  """
  t = time.perf_counter()
  os.makedirs(directory, exist_ok=True)
  dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
  done = _completed(directory, dtype)
  resumed = len(done)
  totals = {"tokens": 0, "bytes": 0, "documents": 0, "chunks": 0}
  if done:
    totals = {k: done[-1][k] for k in totals}
  bar = tqdm.tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, mininterval=1.0)
  bar.update(totals["bytes"])
  todo = itertools.islice(chunk_iter(), totals["chunks"], None)
  shard, shard_size, used = None, 0, {"workers": 1}

  def close(f, size):
    f.close()
    i = len(done)
    os.replace(f.name, _shard_path(directory, i, dtype))
    done.append({**totals, "shard_tokens": size})
    _write_json(_meta_path(directory, i), done[-1])  # Last: the shard is complete.

  try:
    for ids, (num_bytes, docs) in encoded(tokenizer, todo, num_workers, dtype, used):
      if shard is None:
        # One name: the next build (under the lock) truncates what an interrupted one left.
        shard = open(f"{_shard_path(directory, len(done), dtype)}.tmp", "wb")
        shard_size = 0
      shard.write(ids.astype(dtype, copy=False).tobytes())
      shard_size += len(ids)
      totals["tokens"] += len(ids)
      totals["bytes"] += int(num_bytes)
      totals["documents"] += int(docs)
      totals["chunks"] += 1
      bar.update(int(num_bytes))
      if shard_size >= shard_tokens:
        close(shard, shard_size)
        shard = None
    if shard is not None:
      close(shard, shard_size)
  finally:
    bar.close()
    if shard is not None and not shard.closed:
      shard.close()  # Left as a .tmp file; the next build starts that shard again.
  paths = [_shard_path(directory, i, dtype) for i in range(len(done))]
  index = {
    "tokens": totals["tokens"],
    "bytes": totals["bytes"],
    "documents": totals["documents"] + (totals["tokens"] > 0),
    "dtype": np.dtype(dtype).name,
    "shards": [os.path.basename(p) for p in paths],
    "shard_sizes": [d["shard_tokens"] for d in done],
    "fingerprint": fingerprint(paths),
    "seconds": time.perf_counter() - t,
    "workers": used["workers"],
    "resumed_shards": resumed,
  }
  return index


def _progress(directory: str) -> float:
  """The newest modification time of anything in `directory` (a writer's heartbeat)."""
  times = [e.stat().st_mtime for e in os.scandir(directory)] if os.path.isdir(directory) else []
  return max(times, default=0.0)


def cached(directory: str, make_index: Callable[[], dict], wait_sec: float) -> dict:
  """The index in `directory`, built by `make_index` under a lock, or awaited from the builder.

  A process that finds the lock held waits for the index while the builder makes progress,
  and for at most `wait_sec` without any; if the builder dies, the lock frees and the next
  process resumes its build.
  """
  path = os.path.join(directory, "index.json")
  index = _read_json(path)
  if index is not None:
    return index
  os.makedirs(directory, exist_ok=True)
  with open(directory + ".lock", "a") as lock:
    last, since = _progress(directory), time.monotonic()
    while True:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if (index := _read_json(path)) is not None:
          return index
        now = _progress(directory)
        if now != last:
          last, since = now, time.monotonic()
        elif time.monotonic() - since > wait_sec:
          raise UserError(
            f"another process holds the token cache {directory} and wrote nothing for "
            f"{wait_sec:.0f} s: check that process, or give this one its own data.cache_dir."
          ) from None
        time.sleep(0.5)
    try:
      if (index := _read_json(path)) is None:
        index = make_index()
        _write_json(path, index)
      return index
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


class TokenStream:
  """A split's shards as one sequence of token ids: len(), [i], [a:b] and np.asarray."""

  def __init__(self, directory: str, index: dict):
    self.index = index
    self.dtype = np.dtype(index["dtype"])
    self._shards = [
      np.memmap(os.path.join(directory, name), dtype=self.dtype, mode="r")
      for name, size in zip(index["shards"], index["shard_sizes"])
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
