"""Record files and Hugging Face datasets with a pool of workers: the same tokens for any count,
and memory that does not grow with the corpus."""

import pytest
from corpora import DOCS, config, write_chats, write_records
from helpers.data import assert_memory_does_not_grow, peak_rss_growth

from lm_jax import data
from lm_jax.data import chunks


@pytest.fixture
def small_chunks(monkeypatch):
  monkeypatch.setattr(chunks, "CHUNK_CHARS", 2000)  # Enough chunks for a pool.


def summaries(c, tmp_path):
  out = {}
  for workers in (1, 2):
    c.update(workers=workers, cache_dir=str(tmp_path / f"cache{workers}"))
    out[workers] = data.prepare_cache(c)["train"]
  return out


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst", ".parquet", "hf", "chat"])
def test_any_worker_count_gives_the_same_tokens(tmp_path, small_chunks, suffix):
  if suffix == "hf":
    import datasets

    folder = str(tmp_path / "saved")
    datasets.Dataset.from_dict({"text": DOCS * 2}).save_to_disk(folder, max_shard_size="20KB")
    c = config(f"hf:{folder}", "", "", eval_split="train[:10%]")
  elif suffix == "chat":
    path = write_chats(tmp_path / "c.jsonl")
    c = config("jsonl", path, path, format="chat")
  else:  # Compressed files are one chunk each: several files.
    paths = [write_records(tmp_path / f"{i}{suffix}", DOCS[i::4] * 2) for i in range(4)]
    c = config(
      "parquet" if suffix == ".parquet" else "jsonl", str(tmp_path / f"*{suffix}"), paths[0]
    )
  one, two = summaries(c, tmp_path).values()
  assert (one["workers"], two["workers"]) == (1, 2)
  assert one["fingerprint"] == two["fingerprint"] and one["tokens"] == two["tokens"]


MEMORY = """
import resource, sys
from configs import tiny
from lm_jax import data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = tiny.get_config().data
c.update(dataset=sys.argv[1], tokenizer="byte", workers=1, cache_dir=sys.argv[3], test_split="")
c.text_files.update(train=sys.argv[2], validation=sys.argv[2], test="")
tokens = data.prepare_cache(c)["train"]["tokens"]
print(tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def tokenize_records(tmp_path, suffix, mib):
  """Tokenizes `mib` MiB of records in a fresh process; (tokens, growth of its peak RSS in KiB)."""
  doc = DOCS[5]
  path = write_records(
    tmp_path / f"{mib}{suffix}", [doc] * (mib * 2**20 // len(doc)), row_group=500
  )
  dataset = "parquet" if suffix == ".parquet" else "jsonl"
  return peak_rss_growth(MEMORY, dataset, path, str(tmp_path / f"cache{mib}"))


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".parquet"])
def test_memory_does_not_grow_with_the_corpus(tmp_path, suffix):
  assert_memory_does_not_grow(lambda mib: tokenize_records(tmp_path, suffix, mib))
