"""A split's text -> numbered chunks -> token ids: what the token cache encodes, and how.

A piece is `(text, starts_document[, weight])`; a chunk is a list of pieces of about
CHUNK_CHARS characters, or an object that reads its own pieces where it is encoded (a worker),
through `pieces()` (text_files.Span, record_files.RecordSpan, tfds.TfdsSpan). A chunk is encoded
a group of about PIECE_CHARS characters at a time, in this process or in a pool of worker
processes that each hold the tokenizer; token_cache.py decides which chunk goes where.
"""

import contextlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator

import numpy as np

CHUNK_CHARS = 4 << 20  # Text per chunk, the task a worker reads and encodes.
PIECE_CHARS = 1 << 20  # Long texts are cut in pieces of about this size, encoded a group at a time.
_WORKER = {}  # In a worker process only: the tokenizer, rebuilt once from its dict.


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
  for piece, new, ids in zip(chunk, starts, tokenizer.encode_batch(texts), strict=True):
    if new:
      pieces.append(tokenizer.eod_ids)
      weights.append(np.zeros(len(tokenizer.eod_ids), np.uint8))
    pieces.append(ids)
    weights.append(np.full(len(ids), piece[2] if weighted else 1, np.uint8))
  join = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)
  out = join(pieces, np.int32), stats
  return (*out, join(weights, np.uint8)) if weighted else out


def load(chunk) -> Iterable[tuple[str, bool]]:
  """A chunk's pieces: given as a list, or read now (an object with `pieces()`, such as a
  text_files.Span)."""
  return chunk.pieces() if hasattr(chunk, "pieces") else chunk


def groups(pieces: Iterable[tuple[str, bool]]) -> Iterator[list[tuple[str, bool]]]:
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


def encode_file(tokenizer, path: str, weights_path: str, chunk, dtype) -> dict:
  """Encodes a chunk into the file of `dtype` ids at `path` (and, if its pieces carry weights,
  theirs at `weights_path`), a group of pieces at a time; its {tokens, bytes, documents}.

  Each file appears whole: it is written under another name, then renamed.
  """
  stats = {"tokens": 0, "bytes": 0, "documents": 0}
  weights = None  # The weights' file, opened at the first group that has them.
  with open(f"{path}.tmp{os.getpid()}", "wb") as f:
    for group in groups(load(chunk)):
      ids, (num_bytes, docs), *w = encode_chunk(tokenizer, group)
      f.write(ids.astype(dtype).tobytes())
      if w:
        weights = weights or open(f"{weights_path}.tmp{os.getpid()}", "wb")  # noqa: SIM115
        weights.write(w[0].tobytes())
      stats["tokens"] += len(ids)
      stats["bytes"] += int(num_bytes)
      stats["documents"] += int(docs)
  if weights:
    weights.close()
    os.replace(weights.name, weights_path)
  os.replace(f.name, path)
  return stats


def workers(n: int) -> int:
  """data.workers: 0 means every core this process may use."""
  return n if n > 0 else len(os.sched_getaffinity(0))


@contextlib.contextmanager
def pool(tokenizer, num_workers: int):
  """A pool of `num_workers` processes that each hold the tokenizer (see `in_worker`), or None
  for one worker: chunks are then encoded in this process."""
  if num_workers <= 1:
    yield None
    return
  # forkserver: JAX and TensorFlow threads in this process make fork unsafe.
  context = multiprocessing.get_context("forkserver")
  args = (type(tokenizer), tokenizer.to_dict())  # The class pickles by name.
  with context.Pool(num_workers, _init_worker, args) as processes:
    yield processes


def _init_worker(tokenizer_class, tokenizer_dict: dict) -> None:
  _WORKER["tokenizer"] = tokenizer_class.from_dict(tokenizer_dict)


def in_worker(fn, *args):
  """`fn(tokenizer, *args)` in a process of a `pool`, with the tokenizer it holds."""
  return fn(_WORKER["tokenizer"], *args)
