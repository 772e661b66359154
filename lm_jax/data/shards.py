"""The files of one token cache directory, CACHE/tokens/SPLIT-KEY/, and how a resumed build
reopens them.

`shard-00000.uint16`, ... hold the token ids, and for conversations `weights-00000.uint8`, ...
each token's loss weight; shard i is complete once `shard-00000.json` beside it gives the
running totals to its end. The open shard is `shard-00000.uint16.tmp` (and its weights'
`.tmp`), and `appended.json` records how many chunks it holds, so an interrupted build reopens
it cut back to that record. A chunk encoded and not yet appended is a part: `part-0000012.uint16`
(and `part-0000012.weights`), then its `.json`, written last, and its claim `part-0000012.lock`.
`index.json`, written last of all, marks the cache complete. token_cache.py writes these files;
streams.TokenStream reads the shards.
"""

import contextlib
import functools
import json
import os

import numpy as np


def write_json(path: str, obj: dict) -> None:
  """Writes `obj` to `path` whole, through a temporary file: a reader sees all of it or nothing."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def read_json(path: str) -> dict | None:
  """The JSON object at `path`; None if there is no such file."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def shard_path(directory: str, i: int, dtype) -> str:
  """Shard i's token ids."""
  return os.path.join(directory, f"shard-{i:05d}.{np.dtype(dtype).name}")


def meta_path(directory: str, i: int) -> str:
  """Shard i's running totals, whose presence marks it complete."""
  return os.path.join(directory, f"shard-{i:05d}.json")


def weights_path(directory: str, i: int) -> str:
  """Shard i's loss weights, one byte a token."""
  return os.path.join(directory, f"weights-{i:05d}.uint8")


def part_path(directory: str, i: int, suffix: str) -> str:
  """Chunk i's part file with this suffix (a dtype's name, 'weights', 'json' or 'lock')."""
  return os.path.join(directory, f"part-{i:07d}.{suffix}")


def appended_path(directory: str) -> str:
  """Where the assembler notes how many chunks it has appended, for the processes helping it."""
  return os.path.join(directory, "appended.json")


def appended(directory: str) -> int:
  """How many chunks the assembler has appended to the shards."""
  return (read_json(appended_path(directory)) or {"chunks": 0})["chunks"]


def part_stats(directory: str, i: int) -> dict | None:
  """A complete part's {tokens, bytes, documents}; None while it is missing or being written."""
  return read_json(part_path(directory, i, "json"))


def completed(directory: str, dtype, weighted: bool = False) -> list[dict]:
  """The shards a previous build finished, in order (each with its running totals)."""
  done = []
  while True:
    meta = read_json(meta_path(directory, len(done)))
    if meta is None or not os.path.exists(shard_path(directory, len(done), dtype)):
      return done
    if weighted and not os.path.exists(weights_path(directory, len(done))):
      return done
    done.append(meta)


def start(directory: str, dtype) -> int:
  """The first chunk that no complete shard holds."""
  done = completed(directory, dtype)
  return done[-1]["chunks"] if done else 0


def hash_file(h, path: str, size: int | None = None) -> None:
  """Feeds the first `size` bytes (all if None) of the file at `path` to hash `h`."""
  with open(path, "rb") as f:
    while block := f.read(1 << 20 if size is None else min(1 << 20, size - f.tell())):
      h.update(block)


def append(shard, path: str, h, size: int = 0) -> None:
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


def remove_part(directory: str, i: int) -> None:
  """Deletes chunk i's part files and claim (appended now)."""
  for suffix in ("json", "lock", "weights", *(np.dtype(d).name for d in (np.uint16, np.uint32))):
    with contextlib.suppress(FileNotFoundError):
      os.remove(part_path(directory, i, suffix))


def remove_parts(directory: str) -> None:
  """Deletes every part file and claim left (the shards hold the chunks now)."""
  for name in os.listdir(directory):
    if name.startswith("part-"):
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, name))


def reopen(directory: str, done: list[dict], dtype, h, hw=None):
  """The open shard an interrupted build left (and, with weights hash `hw`, its weights), cut
  back to the chunks `appended.json` records, and that record; (None, None, None) to start the
  next shard afresh. Feeds `h` (and `hw`) the complete shards and the part of the open one kept."""
  paths = [(lambda i: shard_path(directory, i, dtype), np.dtype(dtype).itemsize, h)]
  if hw is not None:
    paths.append((functools.partial(weights_path, directory), 1, hw))
  for i in range(len(done)):
    for path, _, hash_ in paths:
      hash_file(hash_, path(i))
  mark = read_json(appended_path(directory))
  tmp = [
    (f"{path(len(done))}.tmp", mark and mark["shard_tokens"] * size) for path, size, _ in paths
  ]
  if not mark or mark.get("shard") != len(done):
    return None, None, None
  if not all(os.path.exists(p) and os.path.getsize(p) >= size for p, size in tmp):
    return None, None, None
  files = []
  for (path, size), (_, _, hash_) in zip(tmp, paths, strict=True):
    hash_file(hash_, path, size)
    files.append(open(path, "r+b"))  # noqa: SIM115 - closed by token_cache.build.
    files[-1].truncate(size)
    files[-1].seek(size)
  return files[0], files[1] if hw is not None else None, mark
