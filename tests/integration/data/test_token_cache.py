"""The token cache across processes: the same tokens for any worker count, a directory
shared by processes, memory that does not grow with the corpus."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_text
from helpers.data import (
  assert_memory_does_not_grow,
  build_cache,
  peak_rss_growth,
  spans_of,
  train_tokenizer,
)

from lm_jax.data import streams, token_cache


@pytest.mark.parametrize("kind", ["char", "byte", "sentencepiece", "word"])
def test_any_worker_count_writes_the_same_tokens(tmp_path, text_path, kind, small_chunks):
  tok = train_tokenizer(kind, text_path)
  one = build_cache(tmp_path / "one", text_path, tok, workers=1)
  two = build_cache(tmp_path / "two", text_path, tok, workers=2, shard_tokens=2000)
  assert (one["workers"], two["workers"]) == (1, 2)
  assert len(two["shards"]) > 3
  assert min(two["shard_sizes"][:-1]) >= 2000  # Shards end at the first chunk end past 2000.
  assert one["fingerprint"] == two["fingerprint"] and one["tokens"] == two["tokens"]
  sent = build_cache(tmp_path / "sent", text_path, tok, workers=2, read_by_workers=False)
  assert sent["fingerprint"] == one["fingerprint"]  # Text sent to workers (TFDS) or read there.
  stream = streams.TokenStream(str(tmp_path / "two"), two)
  whole = [tok.encode(d) for d in open(text_path).read().split("\n\n")]
  expected = np.concatenate([x for d in whole for x in (tok.eod_ids, d)][1:])
  np.testing.assert_array_equal(np.asarray(stream), expected)
  assert one["documents"] == 40 and one["bytes"] == os.path.getsize(text_path) - 39 * 2


SHARE = """
import json, sys, time
from configs import tiny
from lm_jax import data
from lm_jax.data import chunks
real, calls = chunks.encode_chunk, []
def slow(*args):
  calls.append(1)
  time.sleep(0.1)  # Long enough that both processes meet while chunks remain.
  return real(*args)
chunks.encode_chunk = slow
chunks.CHUNK_CHARS = 2000
c = tiny.get_config().data
c.update(dataset="text", tokenizer="byte", cache_dir=sys.argv[1], workers=1)
c.text_files.update(train=sys.argv[2], validation=sys.argv[2])
print(json.dumps(data.prepare_cache(c)))
print(len(calls), file=sys.stderr)
"""


def test_processes_sharing_a_cache_directory_split_the_chunks(tmp_path, text_path):
  args = [sys.executable, "-c", SHARE, str(tmp_path / "cache"), text_path]
  procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  assert outs[0][0] == outs[1][0]
  summary = json.loads(outs[0][0])
  assert summary["train"]["fingerprint"] == summary["validation"]["fingerprint"]
  indexes = [
    json.loads(open(os.path.join(d, n)).read())
    for d, _, files in os.walk(tmp_path / "cache")
    for n in files
    if n == "index.json"
  ]
  assert len(indexes) == 2
  encoded = [int(err.split()[-1]) for _, err in outs]
  assert sum(encoded) == sum(i["chunks"] for i in indexes) > 20  # Each chunk encoded once,
  assert min(encoded) > 0  # by one process or the other,
  assert sum(i["parts_reused"] for i in indexes) > 0  # and appended by the index's writer.
  for d, _, files in os.walk(tmp_path / "cache"):
    assert not [n for n in files if n.startswith("part-")], d  # Parts are gone once indexed.


def test_build_uses_parts_another_process_encoded(tmp_path, text_path, small_chunks):
  tok = train_tokenizer("char", text_path)
  alone = build_cache(tmp_path / "alone", text_path, tok)
  helped = str(tmp_path / "helped")
  os.makedirs(helped)
  assert token_cache.contribute(helped, spans_of(text_path), tok, 1) == alone["chunks"]
  index = build_cache(helped, text_path, tok, workers=2)
  assert index["parts_reused"] == index["chunks"] == alone["chunks"]
  assert index["fingerprint"] == alone["fingerprint"]


MEMORY = """
import resource, sys
from lm_jax.data import text_files, token_cache, tokenizers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
chunks = lambda: text_files.spans(text_files.whole([sys.argv[1]]), sys.argv[3], 2**20)
index = token_cache.build(sys.argv[2], chunks, tokenizers.ByteTokenizer(), 1, 10**9, "t")
print(index["tokens"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def tokenize_text(tmp_path, documents, mib):
  """Tokenizes `mib` MiB of text in a fresh process; (tokens, growth of its peak RSS in KiB)."""
  path = tmp_path / f"{mib}.txt"
  paragraph = (make_text(2000, 0) + "\n").encode()
  with open(path, "wb") as f:
    for _ in range(mib * 2**20 // len(paragraph)):
      f.write(paragraph)
  return peak_rss_growth(MEMORY, str(path), str(tmp_path / f"cache{mib}"), documents)


@pytest.mark.parametrize("documents", ["file", "blank_line"])
def test_memory_does_not_grow_with_the_corpus(tmp_path, documents):
  assert_memory_does_not_grow(lambda mib: tokenize_text(tmp_path, documents, mib))
