"""Tokenization throughput (MB/s) by tokenizer, file format and worker count, and peak memory of
the whole process tree (this process, its pool workers and their server), on a generated corpus."""

import glob
import gzip
import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

import ml_collections
import numpy as np

from lm_jax import UserError
from lm_jax.data import sources, streams, text_files, tokenizers

FORMATS = ("text", "jsonl", "jsonl.gz", "jsonl.zst", "parquet")
SHARDS = 8  # Compressed JSON Lines are written as this many files.

_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
  """Bytes resident in `root` and all its descendants (sum of RSS, read from /proc)."""
  parents = {}
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/stat") as f:
          parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        pass  # Gone meanwhile.
  tree, frontier = {root}, [root]
  while frontier:
    frontier = [p for p, parent in parents.items() if parent in frontier and p not in tree]
    tree.update(frontier)
  total = 0
  for pid in tree:
    try:
      with open(f"/proc/{pid}/statm") as f:
        total += int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
      pass
  return total


class PeakMemory:
  """Samples tree_rss of this process every `every` seconds in a thread; `.peak` in bytes."""

  def __init__(self, every: float = 0.05):
    self.peak = tree_rss(os.getpid())
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
    self._thread.start()

  def _run(self, every):
    while not self._stop.wait(every):
      self.peak = max(self.peak, tree_rss(os.getpid()))

  def stop(self) -> int:
    self._stop.set()
    self._thread.join()
    return self.peak


def generate_corpus(path: str, num_bytes: int, seed: int = 0) -> None:
  """Seeded text: Zipf-distributed pseudo-words in lines, paragraphs between blank lines."""
  rng = np.random.default_rng(seed)
  letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
  vocab = ["".join(rng.choice(letters, rng.integers(1, 10))) for _ in range(20_000)]
  vocab[:4] = ["naïve", "café", "日本", "λόγος"]  # Some non-ASCII text too.
  vocab = np.array(vocab)
  written = 0
  with open(path, "wb") as f:
    while written < num_bytes:
      ids = np.minimum(rng.zipf(1.2, 1 << 20), len(vocab)) - 1
      words = vocab[ids].tolist()
      lines, i = [], 0
      for n in rng.integers(4, 20, len(words) // 4):
        lines.append(" ".join(words[i : i + n]) + (".\n\n" if n % 5 == 0 else ".\n"))
        i += n
        if i >= len(words):
          break
      raw = "".join(lines).encode("utf-8")[: num_bytes - written]
      written += f.write(raw.decode("utf-8", errors="ignore").encode("utf-8"))


def write_records(text_path: str, fmt: str) -> str:
  """The blank-line documents of a text file as records {'text': document} in format `fmt`;
  the same documents, so the same tokens and fingerprint."""
  if fmt == "text":
    return text_path
  path = f"{text_path}.{fmt}"
  docs, doc = [], None  # Parquet rows waiting for their row group; the document being read.
  pieces = text_files.pieces(text_files.whole([text_path]), "blank_line")

  def documents():
    nonlocal doc
    for text, new in pieces:
      if new and doc is not None:
        yield doc
        doc = None
      doc = text if doc is None else doc + text
    if doc is not None:
      yield doc

  if fmt == "parquet":
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    schema = pa.schema([("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
      for d in documents():
        docs.append(d)
        if len(docs) == 20_000:  # A row group.
          writer.write_table(pa.table({"text": docs}, schema=schema))
          docs = []
      if docs:
        writer.write_table(pa.table({"text": docs}, schema=schema))
    return path
  if fmt == "jsonl":
    with open(path, "wb") as f:
      for d in documents():
        f.write(json.dumps({"text": d}, ensure_ascii=False).encode() + b"\n")
    return path
  # Compressed files are read from their start, one chunk each: shards, as corpora ship.
  shard_bytes, written, shards, f = os.path.getsize(text_path) // SHARDS + 1, 0, 0, None
  try:
    for d in documents():
      if f is None or written >= shard_bytes:
        if f is not None:
          f.close()
        f, written, shards = _compressed(f"{text_path}-{shards:02d}.{fmt}"), 0, shards + 1
      raw = json.dumps({"text": d}, ensure_ascii=False).encode() + b"\n"
      f.write(raw)
      written += len(raw)
  finally:
    if f is not None:
      f.close()
  return f"{text_path}-*.{fmt}"


def _compressed(path: str):
  if path.endswith(".zst"):
    import zstandard  # pylint: disable=g-import-not-at-top

    return zstandard.open(path, "wb")
  return gzip.open(path, "wb", compresslevel=6)


def _tokenize(data_dict: dict, tokenizer_dict: dict) -> None:
  """Tokenizes the train split (in a process that the benchmark kills part way)."""
  c, [source] = sources.resolve(ml_collections.ConfigDict(data_dict))
  streams.cached_tokens(c, tokenizers.from_dict(tokenizer_dict), "train", source.splits["train"])


def _interrupted(c, tokenizer, source, after: float) -> dict:
  """Tokenizing the train split is killed (SIGKILL) `after` seconds in, then resumed here."""
  c = ml_collections.ConfigDict(c.to_dict())
  c.cache_dir += "-resumed"
  proc = multiprocessing.get_context("spawn").Process(
    target=_tokenize, args=(c.to_dict(), {**tokenizer.to_dict(), "settings": tokenizer.recorded})
  )
  proc.start()
  proc.join(after)
  if proc.exitcode is not None:
    return {"resume": f"finished within {after} s: nothing to resume"}
  proc.kill()
  proc.join()
  t = time.perf_counter()
  index = streams.cached_tokens(c, tokenizer, "train", source).index
  return {
    "resume_seconds": time.perf_counter() - t,
    "resumed_shards": index["resumed_shards"],
    "resumed_chunks": index["resumed_chunks"],
    "chunks": index["chunks"],
    "parts_reused": index["parts_reused"],
    "resume_fingerprint": index["fingerprint"],
  }


def run(
  config,
  kinds: list[str],
  worker_counts: list[int],
  corpus_mb: float,
  resume_after: float = 0,
  formats: tuple[str, ...] = ("text",),
) -> Iterator[dict]:
  """One row per (tokenizer, format, workers): tokenizing the train split, timed without
  training.

  `formats`: the generated corpus as text, or as records with the same documents (FORMATS).
  With `resume_after`, each row also times a build killed that many seconds in and resumed.
  """
  with tempfile.TemporaryDirectory() as tmp:
    c = ml_collections.ConfigDict(config.data.to_dict())
    if corpus_mb:
      corpus = os.path.join(tmp, "corpus.txt")
      generate_corpus(corpus, int(corpus_mb * 2**20))
      c.update(dataset="text", documents="blank_line", holdout_fraction=0.0)
      c.mixture = ml_collections.ConfigDict()  # One source: the generated corpus.
      c.text_files.update(train=corpus, validation=corpus, test="")
    bad = sorted(set(formats) - set(FORMATS))
    if bad or (not corpus_mb and tuple(formats) != ("text",)):
      raise UserError(
        f"--formats {bad or list(formats)}: use {list(FORMATS)}, with a generated corpus "
        "(--corpus_mb above 0)."
      )
    paths = {f: write_records(c.text_files.train, f) for f in formats} if corpus_mb else {}
    for kind, fmt, workers in itertools.product(kinds, formats, worker_counts):
      c.update(tokenizer=kind, cache_dir=os.path.join(tmp, kind))
      if corpus_mb:
        c.dataset = {"text": "text", "parquet": "parquet"}.get(fmt, "jsonl")
        c.text_files.update(train=paths[fmt], validation=paths[fmt])
      c, named = sources.resolve(c)
      train = named[0].splits["train"]
      tokenizer = tokenizers.obtain(c, "", named)
      c.update(workers=workers, cache_dir=os.path.join(tmp, kind, fmt, str(workers)))
      os.sync()  # Each row starts with nothing left to write back from the ones before.
      before = tree_rss(os.getpid())
      memory, t = PeakMemory(), time.perf_counter()
      index = streams.cached_tokens(c, tokenizer, "train", train).index
      seconds, peak = time.perf_counter() - t, memory.stop()
      resumed = {}
      if resume_after:
        resumed = _interrupted(c, tokenizer, train, resume_after)
      for cache in (c.cache_dir, c.cache_dir + "-resumed"):
        shutil.rmtree(cache, ignore_errors=True)  # Gigabytes a row needs no more.
      yield (
        {
          "tokenizer": kind,
          "format": fmt,
          "file_mb": sum(map(os.path.getsize, glob.glob(c.text_files.train))) / 1e6,
          "workers": index["workers"],
          "mb_per_sec": index["bytes"] / 1e6 / seconds,
          "seconds": seconds,
          "bytes": index["bytes"],
          "tokens": index["tokens"],
          "peak_memory_mib": peak / 2**20,
          "memory_growth_mib": (peak - before) / 2**20,
          "fingerprint": index["fingerprint"],
          **resumed,
        }
      )
