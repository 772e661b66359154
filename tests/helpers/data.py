"""Data configs, token caches of one text file, the memory a tokenizing process takes, and
preference pairs."""

import json
import subprocess
import sys

from conftest import make_text

from configs import tiny
from lm_jax.data import chunks, text_files, token_cache, tokenizers


def data_config(**kwargs):
  """configs/tiny.py's data config for local text (data.dataset='text'), `kwargs` set."""
  c = tiny.get_config().data
  c.update({"dataset": "text", "seq_len": 16, "vocab_size": 300, **kwargs})
  return c


def pieces_of(path):
  """The blank-line separated documents of the text file `path`, as text_files.pieces reads."""
  return lambda: text_files.pieces(text_files.whole([path]), "blank_line")


def train_tokenizer(kind, path):
  """A tokenizer of `kind` trained on the text file `path`."""
  c = tiny.get_config().data
  c.update(vocab_size=300 if kind == "sentencepiece" else 40)
  return tokenizers.train(kind, (t for t, _ in pieces_of(path)()), c)


def spans_of(path):
  """The chunks of the text file `path` as spans, which the cache's workers read themselves."""
  return lambda: text_files.spans(text_files.whole([path]), "blank_line", chunks.CHUNK_CHARS)


def build_cache(directory, path, tokenizer, workers=1, shard_tokens=10**9, read_by_workers=True):
  """The token cache of the text file `path` in `directory`; its index. read_by_workers=False:
  the text is read here and sent to the workers (as TFDS's is)."""
  chunk_iter = spans_of(path) if read_by_workers else lambda: chunks.chunks(pieces_of(path)())
  return token_cache.build(str(directory), chunk_iter, tokenizer, workers, shard_tokens, "t")


def peak_rss_growth(program: str, *args: str) -> tuple[int, int]:
  """Runs `program` (python -c) with `args` in a fresh process, which prints the tokens it
  wrote and the growth of its peak RSS in KiB; returns both."""
  cmd = [sys.executable, "-c", program, *args]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
  return int(out[0]), int(out[1])


def assert_memory_does_not_grow(tokenize_mib) -> None:
  """`tokenize_mib(mib)` tokenizes a corpus of `mib` MiB in a fresh process and returns
  peak_rss_growth's (tokens, KiB): four times the corpus gives four times the tokens in the
  same memory, within 8 MiB."""
  (small_tokens, small), (big_tokens, big) = [tokenize_mib(mib) for mib in (8, 32)]
  assert big_tokens > 3.9 * small_tokens
  assert big - small < 8 * 1024, (small, big)  # Reading whole files would add 24 MiB or more.


def pair(i: int, chat: bool) -> dict:
  """A prompt, a reply in the corpus's words (chosen) and one of repeated words (rejected)."""
  prompt = make_text(16, seed=100 + i).split("\n")[0]
  replies = {"chosen": " " + make_text(8, seed=200 + i).strip(), "rejected": " fox fox fox."}
  if chat:
    return {"messages": [{"role": "user", "content": prompt}], **replies}
  return {"prompt": prompt, **replies}


def write_pairs(path, n=48, chat=False) -> str:
  path.write_text("".join(json.dumps(pair(i, chat)) + "\n" for i in range(n)))
  return str(path)
