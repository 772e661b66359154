"""A split's chunks of text -> token ids in numbered shard files -> one memory-mapped stream.

CACHE/tokens/SPLIT-KEY/ holds `shard-00000.uint16`, ... (shard i is complete once
`shard-00000.json` beside it says how far into the text it reaches) and `index.json`, written
last; conversations also hold each token's loss weight in `weights-00000.uint8`, ... The
reader cuts the text into numbered chunks that a worker reads itself (local files: byte
ranges, text_files.spans; records: record_files.RecordSpan; TFDS: its shard files,
data.TfdsSpan). Each chunk is claimed by an flock on `part-0000012.lock`, encoded (by a pool
of worker processes, or by this one) into a part file, `part-0000012.uint16` (and
`part-0000012.weights`) and its `.json`, and appended to the shards in order by one process,
the assembler; so the tokens are the same for any number of workers. Processes that
share the directory (hosts on one file system) encode the chunks nobody has claimed, then wait
for the assembler's index. An interrupted build resumes after its last complete shard and
keeps the parts already encoded.
"""

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tqdm

from lm_jax import UserError, console

FORMAT = 4  # Bump when the cached token layout changes: it is part of every cache key.
CHUNK_CHARS = 4 << 20  # Text per chunk, the task a worker reads and encodes.
PIECE_CHARS = 1 << 20  # Long texts are cut in pieces of about this size, encoded a group at a time.
MIN_POOL_CHUNKS = 4  # Fewer chunks than this are encoded in the calling process.
AHEAD = 64  # The assembler claims chunks at most this far past the next one it appends.
_WORKER = {}  # In a worker process only: the tokenizer, rebuilt once from its dict.


def root(data_config) -> str:
  """Where caches live: data.cache_dir, else $XDG_CACHE_HOME/lm_jax or ~/.cache/lm_jax."""
  default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "lm_jax")
  return os.path.expanduser(data_config.cache_dir or default)


def key(*parts) -> str:
  """A short hash of JSON-able parts: a cache entry's name."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def workers(n: int) -> int:
  """data.workers: 0 means every core this process may use."""
  return n if n > 0 else len(os.sched_getaffinity(0))


def cut(text: str) -> Iterator[str]:
  """A long text in pieces of about PIECE_CHARS that end at a newline where one is."""
  start = 0
  while len(text) - start > PIECE_CHARS:
    at = text.rfind("\n", start, start + PIECE_CHARS) + 1
    at = at if at > start else start + PIECE_CHARS  # A line this long is cut anywhere.
    yield text[start:at]
    start = at
  yield text[start:]


def chunks(pieces: Iterable[tuple]) -> Iterator[list[tuple]]:
  """Groups pieces `(text, starts_document[, weight])` into lists of about CHUNK_CHARS
  characters.

  The first piece of the stream starts no document (nothing precedes it to separate).
  """
  chunk, size, first = [], 0, True
  for text, new, *weight in pieces:
    for i, part in enumerate(cut(text)):
      chunk.append((part, new and i == 0 and not first, *weight))
      first = False
      size += len(part)
      if size >= CHUNK_CHARS:
        yield chunk
        chunk, size = [], 0
  if chunk:
    yield chunk


def encode_chunk(tokenizer, chunk: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
  """(int32 ids with end-of-document ids where documents start, [bytes, documents]), and with
  pieces that carry a weight, `(text, starts_document, weight)`, the uint8 weight of each id
  (0 for ends of document)."""
  texts = [p[0] for p in chunk]
  starts = np.array([p[1] for p in chunk], bool)
  weighted = bool(chunk) and len(chunk[0]) > 2
  num_bytes = sum(len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts)
  stats = np.array([num_bytes, starts.sum()], np.int64)
  if hasattr(tokenizer, "encode_joined") and len(tokenizer.eod_ids) == 1:
    # Context-free tokenizers encode the whole chunk at once: no per-document arrays.
    ids, offsets = tokenizer.encode_joined(texts)
    bounds = np.concatenate([[0], offsets])
    out = np.insert(ids, bounds[starts], tokenizer.eod_ids[0]), stats
    if not weighted:
      return out
    lengths = np.diff(np.concatenate([bounds, [len(ids)]]))
    weights = np.repeat(np.array([p[2] for p in chunk], np.uint8), lengths)
    return (*out, np.insert(weights, bounds[starts], 0))
  pieces, weights = [], []
  for piece, new, ids in zip(chunk, starts, tokenizer.encode_batch(texts)):
    if new:
      pieces.append(tokenizer.eod_ids)
      weights.append(np.zeros(len(tokenizer.eod_ids), np.uint8))
    pieces.append(ids)
    weights.append(np.full(len(ids), piece[2] if weighted else 1, np.uint8))
  join = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)
  out = join(pieces, np.int32), stats
  return (*out, join(weights, np.uint8)) if weighted else out


def _load(chunk) -> Iterable[tuple[str, bool]]:
  """A chunk's pieces: given as a list, or read now (an object with `pieces()`, such as a
  text_files.Span)."""
  return chunk.pieces() if hasattr(chunk, "pieces") else chunk


def _groups(pieces: Iterable[tuple[str, bool]]) -> Iterator[list[tuple[str, bool]]]:
  """Pieces in lists of about PIECE_CHARS characters: what is encoded at a time."""
  group, size = [], 0
  for piece in pieces:
    group.append(piece)
    size += len(piece[0])
    if size >= PIECE_CHARS:
      yield group
      group, size = [], 0
  if group:
    yield group


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


def _shard_path(directory: str, i: int, dtype) -> str:
  return os.path.join(directory, f"shard-{i:05d}.{np.dtype(dtype).name}")


def _meta_path(directory: str, i: int) -> str:
  return os.path.join(directory, f"shard-{i:05d}.json")


def _part(directory: str, i: int, suffix: str) -> str:
  return os.path.join(directory, f"part-{i:07d}.{suffix}")


def _appended_path(directory: str) -> str:
  """Where the assembler notes how many chunks it has appended, for the processes helping it."""
  return os.path.join(directory, "appended.json")


def _appended(directory: str) -> int:
  """How many chunks the assembler has appended to the shards."""
  return (_read_json(_appended_path(directory)) or {"chunks": 0})["chunks"]


def _part_stats(directory: str, i: int) -> dict | None:
  """A complete part's {tokens, bytes, documents}; None while it is missing or being written."""
  return _read_json(_part(directory, i, "json"))


def encode_part(tokenizer, directory: str, i: int, chunk, dtype) -> dict:
  """Encodes chunk i into its part file, a group of pieces at a time, then writes the stats
  that mark it complete."""
  path = _part(directory, i, np.dtype(dtype).name)
  stats = {"tokens": 0, "bytes": 0, "documents": 0}
  weights = None  # The weights' file, opened at the first group that has them.
  with open(f"{path}.tmp{os.getpid()}", "wb") as f:
    for group in _groups(_load(chunk)):
      ids, (num_bytes, docs), *w = encode_chunk(tokenizer, group)
      f.write(ids.astype(dtype).tobytes())
      if w:
        weights = weights or open(f"{_part(directory, i, 'weights')}.tmp{os.getpid()}", "wb")  # noqa: SIM115
        weights.write(w[0].tobytes())
      stats["tokens"] += len(ids)
      stats["bytes"] += int(num_bytes)
      stats["documents"] += int(docs)
  if weights:
    weights.close()
    os.replace(weights.name, _part(directory, i, "weights"))
  os.replace(f.name, path)
  _write_json(_part(directory, i, "json"), stats)
  return stats


def _init_worker(tokenizer_class, tokenizer_dict: dict) -> None:
  _WORKER["tokenizer"] = tokenizer_class.from_dict(tokenizer_dict)


def _encode_part_in_worker(directory, i, chunk, dtype):
  return encode_part(_WORKER["tokenizer"], directory, i, chunk, dtype)


def _claim(directory: str, i: int):
  """An open lock file holding chunk i for this process, or None if another process holds it
  or its part is already complete."""
  lock = open(_part(directory, i, "lock"), "a")  # noqa: SIM115 - held until the part is done.
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.close()
    return None
  # Finished while this process looked: its part is complete, or appended and deleted
  # (appended.json is updated before a part is deleted).
  if _part_stats(directory, i) is not None or i < _appended(directory):
    lock.close()
    return None
  return lock


class _Encoder:
  """Claims chunks `(i, chunk)` of `todo` in order and has them encoded into parts: by a pool
  of processes, or here one at a time (`finish`).

  `held` keeps the chunks another process had claimed, in case it lets go unfinished.
  """

  def __init__(self, directory, todo, start, tokenizer, dtype, pool, capacity):
    self.directory, self.tokenizer, self.dtype, self.pool = directory, tokenizer, dtype, pool
    self.capacity = capacity  # Chunks claimed and not yet finished, at most.
    self._todo = todo
    self.claimed = {}  # i -> (pool result, or the chunk itself to encode here; its lock file)
    self.held = {}  # i -> chunk that another process claimed when this one came to it
    self.read = start  # Chunks before this one have been claimed, held or found done.
    self.count = None  # The number of chunks, once the reader has reached the end.
    self.mine = set()  # Chunks encoded by this process.

  def fill(self, limit: float = float("inf"), floor: int = 0) -> None:
    """Claims chunks until `capacity` are claimed, the chunks end, or chunk `limit` is next;
    skips those below `floor` (appended already)."""
    while len(self.claimed) < self.capacity and self.count is None and self.read < limit:
      try:
        i, chunk = next(self._todo)
      except StopIteration:
        self.count = self.read
        return
      self.read = i + 1
      if i >= floor and _part_stats(self.directory, i) is None:
        self._take(i, chunk)

  def _take(self, i, chunk) -> bool:
    lock = _claim(self.directory, i)
    if lock is None:
      self.held[i] = chunk
    else:
      args = (self.directory, i, chunk, self.dtype)
      job = self.pool.apply_async(_encode_part_in_worker, args) if self.pool else chunk
      self.claimed[i] = (job, lock)
      self.mine.add(i)
    return lock is not None

  def retake(self, i: int) -> bool:
    """Claims held chunk i if the process that had it let go without finishing it."""
    return i in self.held and self._take(i, self.held.pop(i))

  def finish(self, i: int) -> None:
    """Waits for claimed chunk i's part, encoding it here when there is no pool."""
    job, lock = self.claimed.pop(i)
    if self.pool:
      job.get()
    else:
      encode_part(self.tokenizer, self.directory, i, job, self.dtype)
    lock.close()


@contextlib.contextmanager
def _pool(tokenizer, num_workers: int):
  if num_workers <= 1:
    yield None
    return
  # forkserver: JAX and TensorFlow threads in this process make fork unsafe.
  context = multiprocessing.get_context("forkserver")
  args = (type(tokenizer), tokenizer.to_dict())  # The class pickles by name.
  with context.Pool(num_workers, _init_worker, args) as pool:
    yield pool


def _dtype(tokenizer):
  return np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32


def _weights_path(directory: str, i: int) -> str:
  return os.path.join(directory, f"weights-{i:05d}.uint8")


def _completed(directory: str, dtype, weighted: bool = False) -> list[dict]:
  """The shards a previous build finished, in order (each with its running totals)."""
  done = []
  while True:
    meta = _read_json(_meta_path(directory, len(done)))
    if meta is None or not os.path.exists(_shard_path(directory, len(done), dtype)):
      return done
    if weighted and not os.path.exists(_weights_path(directory, len(done))):
      return done
    done.append(meta)


def _start(directory: str, dtype) -> int:
  """The first chunk that no complete shard holds."""
  done = _completed(directory, dtype)
  return done[-1]["chunks"] if done else 0


def contribute(directory: str, chunk_iter: Callable[[], Iterable], tokenizer, num_workers: int):
  """Encodes into parts every chunk of the build in `directory` that no process has claimed.

  What a process sharing the directory with the assembler does; returns how many it encoded.
  """
  dtype = _dtype(tokenizer)
  start = max(_start(directory, dtype), _appended(directory))
  todo = itertools.islice(enumerate(chunk_iter()), start, None)
  with _pool(tokenizer, num_workers) as pool:
    enc = _Encoder(directory, todo, start, tokenizer, dtype, pool, max(2 * num_workers, 1))
    while not os.path.exists(os.path.join(directory, "index.json")):
      enc.fill(floor=_appended(directory))
      if not enc.claimed:
        break
      enc.finish(min(enc.claimed))
  return len(enc.mine)


def _in_order(directory, todo, start, tokenizer, num_workers, dtype, used) -> Iterator:
  """The paths of the chunks' part files from chunk `start` on, in order, with their stats.

  Encodes the chunks no process has claimed, in a pool or here; waits for those another process
  encodes, and takes over any it lets go unfinished. Sets used['workers'], and counts in
  used['reused'] the parts this call did not encode (another process's, or an earlier build's).
  """
  head = list(itertools.islice(todo, MIN_POOL_CHUNKS))
  used["workers"] = num_workers if len(head) == MIN_POOL_CHUNKS else 1
  with _pool(tokenizer, used["workers"]) as pool:
    capacity = 2 * used["workers"] if pool else 1
    enc = _Encoder(directory, itertools.chain(head, todo), start, tokenizer, dtype, pool, capacity)
    i = start
    while True:
      enc.fill(limit=i + AHEAD)
      if enc.count is not None and i >= enc.count:
        return
      if i in enc.claimed:
        enc.finish(i)
      elif (stats := _part_stats(directory, i)) is not None:
        used["reused"] += i not in enc.mine
        enc.held.pop(i, None)
        yield _part(directory, i, np.dtype(dtype).name), stats
        i += 1
      elif not enc.retake(i):  # Another process is encoding chunk i.
        if enc.claimed and not pool:
          enc.finish(min(enc.claimed))  # A later chunk meanwhile.
        else:
          time.sleep(0.02)


def _hash_file(h, path: str, size: int | None = None) -> None:
  """Feeds the first `size` bytes (all if None) of the file at `path` to hash `h`."""
  with open(path, "rb") as f:
    while block := f.read(1 << 20 if size is None else min(1 << 20, size - f.tell())):
      h.update(block)


def _append(shard, path: str, h, size: int = 0) -> None:
  """Appends the file at `path` to the open file `shard`, feeding its bytes to hash `h`; a
  missing file: `size` zero bytes (the weights of a part without any)."""
  if not os.path.exists(path):
    block = bytes(size)
    h.update(block)
    shard.write(block)
    return
  with open(path, "rb") as f:
    while block := f.read(1 << 20):
      h.update(block)
      shard.write(block)


def _remove_part(directory: str, i: int) -> None:
  for suffix in ("json", "lock", "weights", *(np.dtype(d).name for d in (np.uint16, np.uint32))):
    with contextlib.suppress(FileNotFoundError):
      os.remove(_part(directory, i, suffix))


def _remove_parts(directory: str) -> None:
  """Deletes every part file and claim left (the shards hold the chunks now)."""
  for name in os.listdir(directory):
    if name.startswith("part-"):
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, name))


def _reopen(directory: str, done: list[dict], dtype, h, hw=None):
  """The open shard an interrupted build left (and, with weights hash `hw`, its weights), cut
  back to the chunks `appended.json` records, and that record; (None, None, None) to start the
  next shard afresh. Feeds `h` (and `hw`) the complete shards and the part of the open one kept."""
  paths = [(lambda i: _shard_path(directory, i, dtype), np.dtype(dtype).itemsize, h)]
  if hw is not None:
    paths.append((functools.partial(_weights_path, directory), 1, hw))
  for i in range(len(done)):
    for path, _, hash_ in paths:
      _hash_file(hash_, path(i))
  mark = _read_json(_appended_path(directory))
  tmp = [
    (f"{path(len(done))}.tmp", mark and mark["shard_tokens"] * size) for path, size, _ in paths
  ]
  if not mark or mark.get("shard") != len(done):
    return None, None, None
  if not all(os.path.exists(p) and os.path.getsize(p) >= size for p, size in tmp):
    return None, None, None
  files = []
  for (path, size), (_, _, hash_) in zip(tmp, paths):
    _hash_file(hash_, path, size)
    files.append(open(path, "r+b"))  # noqa: SIM115 - closed by build.
    files[-1].truncate(size)
    files[-1].seek(size)
  return files[0], files[1] if hw is not None else None, mark


def build(
  directory: str,
  chunk_iter: Callable[[], Iterable],
  tokenizer,
  num_workers: int,
  shard_tokens: int,
  desc: str,
  weighted: bool = False,
) -> dict:
  """Tokenizes the chunks into shards in `directory`, resuming where a build stopped; the index.

  `chunk_iter()` gives the chunks: lists of pieces (see `chunks`), or objects that read their
  own pieces (text_files.Span); the same chunks for every call. The caller holds the
  directory's lock (`cached`): this process is the assembler. After each chunk it appends,
  `appended.json` records how far the open shard reaches, so an interrupted build resumes at
  the next chunk; a chunk's part file is deleted once appended. `weighted`: the pieces carry
  loss weights, kept in weights shards beside the token shards (index 'weights'); the
  fingerprint then covers both.
  """
  t = time.perf_counter()
  os.makedirs(directory, exist_ok=True)
  dtype = _dtype(tokenizer)
  done = _completed(directory, dtype, weighted)
  h = hashlib.sha256()  # The fingerprint: sha256 of the token ids as written.
  hw = hashlib.sha256() if weighted else None  # And of the weights, if any.
  keys = ("tokens", "bytes", "documents", "chunks")
  shard, wshard, mark = _reopen(directory, done, dtype, h, hw)
  totals = {k: (mark or (done[-1] if done else {}) or {}).get(k, 0) for k in keys}
  shard_size = mark["shard_tokens"] if mark else 0
  resumed = {"resumed_shards": len(done), "resumed_chunks": totals["chunks"]}
  terminal = console.is_terminal()  # Elsewhere (a job's log), one line when done.
  bar = tqdm.tqdm(
    desc=desc, unit="B", unit_scale=True, unit_divisor=1024, mininterval=1.0, disable=not terminal
  )
  bar.update(totals["bytes"])
  todo = itertools.islice(enumerate(chunk_iter()), totals["chunks"], None)
  used = {"workers": 1, "reused": 0}

  def close(size):
    i = len(done)
    for f, path in (
      (shard, _shard_path(directory, i, dtype)),
      (wshard, _weights_path(directory, i)),
    ):
      if f is not None:
        f.close()
        os.replace(f.name, path)
    done.append({**totals, "shard_tokens": size})
    _write_json(_meta_path(directory, i), done[-1])  # Last: the shard is complete.

  parts = _in_order(directory, todo, totals["chunks"], tokenizer, num_workers, dtype, used)
  try:
    for path, stats in parts:
      if shard is None:
        # One name: the next build (under the lock) truncates what an interrupted one left.
        shard = open(f"{_shard_path(directory, len(done), dtype)}.tmp", "wb")  # noqa: SIM115
        if weighted:
          wshard = open(f"{_weights_path(directory, len(done))}.tmp", "wb")  # noqa: SIM115
        shard_size = 0
      _append(shard, path, h)
      shard.flush()
      if weighted:
        _append(wshard, _part(directory, totals["chunks"], "weights"), hw, stats["tokens"])
        wshard.flush()
      shard_size += stats["tokens"]
      for k in ("tokens", "bytes", "documents"):
        totals[k] += stats[k]
      totals["chunks"] += 1
      mark = {**totals, "shard": len(done), "shard_tokens": shard_size}
      _write_json(_appended_path(directory), mark)  # Before the part goes: see _claim.
      _remove_part(directory, totals["chunks"] - 1)
      bar.update(stats["bytes"])
      if shard_size >= shard_tokens:
        close(shard_size)
        shard = wshard = None
    if shard is not None:
      close(shard_size)
      shard = wshard = None
  finally:
    parts.close()
    bar.close()
    for f in (shard, wshard):
      if f is not None and not f.closed:
        f.close()  # Kept, with appended.json: the next build resumes it.
  _remove_parts(directory)
  seconds = time.perf_counter() - t
  if not terminal:
    print(f"{desc}: {totals['bytes'] / 1e6:,.1f} MB in {seconds:.1f} s", file=sys.stderr)
  paths = [_shard_path(directory, i, dtype) for i in range(len(done))]
  fingerprint = h.hexdigest()
  if weighted:
    fingerprint = hashlib.sha256(f"{fingerprint} {hw.hexdigest()}".encode()).hexdigest()
  return {
    "tokens": totals["tokens"],
    "bytes": totals["bytes"],
    "documents": totals["documents"] + (totals["tokens"] > 0),
    "dtype": np.dtype(dtype).name,
    "shards": [os.path.basename(p) for p in paths],
    "shard_sizes": [d["shard_tokens"] for d in done],
    **(
      {"weights": [os.path.basename(_weights_path(directory, i)) for i in range(len(done))]}
      if weighted
      else {}
    ),
    "fingerprint": fingerprint,
    "seconds": seconds,
    "workers": used["workers"],
    **resumed,
    "chunks": totals["chunks"],
    "parts_reused": used["reused"],
  }


def _progress(directory: str) -> float:
  """The newest modification time of anything in `directory` (a writer's heartbeat)."""
  times = []
  for e in os.scandir(directory) if os.path.isdir(directory) else ():
    with contextlib.suppress(FileNotFoundError):  # Parts come and go.
      times.append(e.stat().st_mtime)
  return max(times, default=0.0)


def cached(
  directory: str,
  make_index: Callable[[], dict],
  wait_sec: float,
  contribute: Callable[[], object] | None = None,
) -> dict:
  """The index in `directory`, built by `make_index` under a lock, or awaited from the builder.

  A process that finds the lock held runs `contribute` (encoding the chunks nobody has claimed),
  then waits for the index while the builder makes progress, and for at most `wait_sec` without
  any; if the builder dies, the lock frees and the next process resumes its build.
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
        if contribute is not None:
          contribute()
          contribute = None
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
