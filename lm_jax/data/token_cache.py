"""A split's chunks of text -> token ids in numbered shard files, built once by one process.

Each chunk (chunks.py) is claimed by an flock on its part's lock file, encoded (by a pool of
worker processes, or by this one) into a part file, and appended to the shards in order by one
process, the assembler, which holds the directory's lock (`cached`); so the tokens are the same
for any number of workers. Processes that share the directory (hosts on one file system) encode
the chunks nobody has claimed, then wait for the assembler's index. An interrupted build resumes
after the last chunk it appended and keeps the parts already encoded. shards.py holds the
directory's files and how a resumed build reopens them; streams.TokenStream reads the shards.
"""

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tqdm

from lm_jax import UserError, console
from lm_jax.data import chunks, shards

FORMAT = 4  # Bump when the cached token layout changes: it is part of every cache key.
MIN_POOL_CHUNKS = 4  # Fewer chunks than this are encoded in the calling process.
AHEAD = 64  # The assembler claims chunks at most this far past the next one it appends.


def root(data_config) -> str:
  """Where caches live: data.cache_dir, else $XDG_CACHE_HOME/lm_jax or ~/.cache/lm_jax."""
  default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "lm_jax")
  return os.path.expanduser(data_config.cache_dir or default)


def key(*parts) -> str:
  """A short hash of JSON-able parts: a cache entry's name."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def encode_part(tokenizer, directory: str, i: int, chunk, dtype) -> dict:
  """Encodes chunk i into its part file, then writes the stats that mark it complete."""
  name = np.dtype(dtype).name
  path, weights = shards.part_path(directory, i, name), shards.part_path(directory, i, "weights")
  stats = chunks.encode_file(tokenizer, path, weights, chunk, dtype)
  shards.write_json(shards.part_path(directory, i, "json"), stats)
  return stats


def _claim(directory: str, i: int):
  """An open lock file holding chunk i for this process, or None if another process holds it
  or its part is already complete."""
  path = shards.part_path(directory, i, "lock")
  lock = open(path, "a")  # noqa: SIM115 - held until the part is done.
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.close()
    return None
  # Finished while this process looked: its part is complete, or appended and deleted
  # (appended.json is updated before a part is deleted).
  if shards.part_stats(directory, i) is not None or i < shards.appended(directory):
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
      if i >= floor and shards.part_stats(self.directory, i) is None:
        self._take(i, chunk)

  def _take(self, i, chunk) -> bool:
    lock = _claim(self.directory, i)
    if lock is None:
      self.held[i] = chunk
    else:
      args = (self.directory, i, chunk, self.dtype)
      job = self.pool.apply_async(chunks.in_worker, (encode_part, *args)) if self.pool else chunk
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


def _dtype(tokenizer):
  return np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32


def contribute(directory: str, chunk_iter: Callable[[], Iterable], tokenizer, num_workers: int):
  """Encodes into parts every chunk of the build in `directory` that no process has claimed.

  What a process sharing the directory with the assembler does; returns how many it encoded.
  """
  dtype = _dtype(tokenizer)
  start = max(shards.start(directory, dtype), shards.appended(directory))
  todo = itertools.islice(enumerate(chunk_iter()), start, None)
  with chunks.pool(tokenizer, num_workers) as pool:
    enc = _Encoder(directory, todo, start, tokenizer, dtype, pool, max(2 * num_workers, 1))
    while not os.path.exists(os.path.join(directory, "index.json")):
      enc.fill(floor=shards.appended(directory))
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
  with chunks.pool(tokenizer, used["workers"]) as pool:
    capacity = 2 * used["workers"] if pool else 1
    enc = _Encoder(directory, itertools.chain(head, todo), start, tokenizer, dtype, pool, capacity)
    i = start
    while True:
      enc.fill(limit=i + AHEAD)
      if enc.count is not None and i >= enc.count:
        return
      if i in enc.claimed:
        enc.finish(i)
      elif (stats := shards.part_stats(directory, i)) is not None:
        used["reused"] += i not in enc.mine
        enc.held.pop(i, None)
        yield shards.part_path(directory, i, np.dtype(dtype).name), stats
        i += 1
      elif not enc.retake(i):  # Another process is encoding chunk i.
        if enc.claimed and not pool:
          enc.finish(min(enc.claimed))  # A later chunk meanwhile.
        else:
          time.sleep(0.02)


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

  `chunk_iter()` gives the chunks: lists of pieces (see chunks.chunks), or objects that read their
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
  done = shards.completed(directory, dtype, weighted)
  h = hashlib.sha256()  # The fingerprint: sha256 of the token ids as written.
  hw = hashlib.sha256() if weighted else None  # And of the weights, if any.
  keys = ("tokens", "bytes", "documents", "chunks")
  shard, wshard, mark = shards.reopen(directory, done, dtype, h, hw)
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
      (shard, shards.shard_path(directory, i, dtype)),
      (wshard, shards.weights_path(directory, i)),
    ):
      if f is not None:
        f.close()
        os.replace(f.name, path)
    done.append({**totals, "shard_tokens": size})
    shards.write_json(shards.meta_path(directory, i), done[-1])  # Last: the shard is complete.

  parts = _in_order(directory, todo, totals["chunks"], tokenizer, num_workers, dtype, used)
  try:
    for path, stats in parts:
      if shard is None:
        # One name: the next build (under the lock) truncates what an interrupted one left.
        shard = open(f"{shards.shard_path(directory, len(done), dtype)}.tmp", "wb")  # noqa: SIM115
        if weighted:
          wshard = open(f"{shards.weights_path(directory, len(done))}.tmp", "wb")  # noqa: SIM115
        shard_size = 0
      shards.append(shard, path, h)
      shard.flush()
      if weighted:
        weights = shards.part_path(directory, totals["chunks"], "weights")
        shards.append(wshard, weights, hw, stats["tokens"])
        wshard.flush()
      shard_size += stats["tokens"]
      for k in ("tokens", "bytes", "documents"):
        totals[k] += stats[k]
      totals["chunks"] += 1
      mark = {**totals, "shard": len(done), "shard_tokens": shard_size}
      shards.write_json(shards.appended_path(directory), mark)  # Before the part goes: see _claim.
      shards.remove_part(directory, totals["chunks"] - 1)
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
  shards.remove_parts(directory)
  seconds = time.perf_counter() - t
  if not terminal:
    print(f"{desc}: {totals['bytes'] / 1e6:,.1f} MB in {seconds:.1f} s", file=sys.stderr)
  paths = [shards.shard_path(directory, i, dtype) for i in range(len(done))]
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
      {"weights": [os.path.basename(shards.weights_path(directory, i)) for i in range(len(done))]}
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
  index = shards.read_json(path)
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
        if (index := shards.read_json(path)) is not None:
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
      if (index := shards.read_json(path)) is None:
        index = make_index()
        shards.write_json(path, index)
      return index
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
