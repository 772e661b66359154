"""Tokenization throughput (MB/s) by tokenizer and worker count, and peak memory of the whole
process tree (this process, its pool workers and their server), on a generated corpus."""

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

import ml_collections
import numpy as np

from lm_jax.data import sources, streams, tokenizers

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
  config, kinds: list[str], worker_counts: list[int], corpus_mb: float, resume_after: float = 0
) -> Iterator[dict]:
  """One row per (tokenizer, workers): tokenizing the train split, timed without training.

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
    for kind in kinds:
      c.update(tokenizer=kind, cache_dir=os.path.join(tmp, kind))
      c, named = sources.resolve(c)
      train = named[0].splits["train"]
      tokenizer = tokenizers.obtain(c, "", named)
      for workers in worker_counts:
        c.update(workers=workers, cache_dir=os.path.join(tmp, kind, str(workers)))
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
