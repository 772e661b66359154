"""JSON Lines and Parquet records: the same documents, tokens and fingerprints as text files."""

import itertools

import numpy as np
import pytest
from corpora import DOCS, config, write_records, write_texts

from configs import tiny
from lm_jax import UserError, data
from lm_jax.data import chunks, record_files, tokenizers

SUFFIXES = [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"]


@pytest.fixture
def small_chunks(monkeypatch):
  monkeypatch.setattr(chunks, "CHUNK_CHARS", 3000)  # Spans of byte ranges and row groups.


def test_every_format_gives_the_text_files_fingerprints(tmp_path, small_chunks):
  val = DOCS[:8]
  texts = config(
    "text", write_texts(tmp_path / "t", DOCS), write_texts(tmp_path / "v", val), documents="file"
  )
  want = data.prepare_cache(texts)
  for suffix in SUFFIXES:
    halves = [
      write_records(tmp_path / f"{suffix[1:]}{i}{suffix}", DOCS[i * 30 : i * 30 + 30])
      for i in (0, 1)
    ]
    dataset = "parquet" if suffix == ".parquet" else "jsonl"
    c = config(
      dataset,
      str(tmp_path / f"{suffix[1:]}[01]{suffix}"),
      write_records(tmp_path / f"v{suffix}", val),
    )
    got = data.prepare_cache(c)
    assert {s: got[s]["fingerprint"] for s in got} == {s: want[s]["fingerprint"] for s in want}, (
      suffix
    )
    assert got["train"]["tokens"] == want["train"]["tokens"] and len(halves) == 2
  c.tokenizer = "byte"  # Its end of document decodes as EOD (char's is a newline).
  tok, corpus = data.prepare(c, "")
  assert tok.decode(corpus["train"].streams[""]).split(tokenizers.EOD) == DOCS


def test_parquet_spans_are_runs_of_row_groups(tmp_path, small_chunks):
  path = write_records(tmp_path / "a.parquet", DOCS, row_group=5)
  spans = list(record_files._file_ranges([(path, 0, None)], "text", chunks.CHUNK_CHARS))
  bounds = [r for (r,) in spans]
  assert bounds[0][1] == 0 and bounds[-1][2] == len(DOCS) and len(bounds) > 3
  assert all(a[2] == b[1] for a, b in itertools.pairwise(bounds))
  assert all(stop % 5 == 0 or stop == len(DOCS) for _, _, stop in bounds)  # Whole row groups.


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_holdout_is_the_last_records(tmp_path, suffix):
  path = write_records(tmp_path / f"a{suffix}", DOCS)
  c = config("parquet" if suffix == ".parquet" else "jsonl", path, "", holdout_fraction=0.1)
  c.tokenizer = "byte"
  tok, corpus = data.prepare(c, "")
  train, val = (
    tok.decode(corpus[s].streams[""]).split(tokenizers.EOD) for s in ("train", "validation")
  )
  assert train + val == DOCS and len(val) == 6


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_record_without_the_field_names_the_file_record_and_fields(tmp_path, suffix):
  path = write_records(tmp_path / f"a{suffix}", DOCS[:5], key="body")
  c = config("parquet" if suffix == ".parquet" else "jsonl", path, path)
  where = "row" if suffix == ".parquet" else "line 1"
  with pytest.raises(
    UserError, match=rf"a{suffix}.*{where}.* has no field 'text'.*'body'.*data.text_key"
  ):
    data.prepare(c, "")


def test_bad_records_are_located(tmp_path):
  path = tmp_path / "a.jsonl"
  path.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": 3}\n')
  c = config("jsonl", str(path), str(path), tokenizer="byte")
  with pytest.raises(UserError, match=r"a.jsonl line 4 has a int in field 'text'"):
    data.prepare(c, "")
  path.write_text('{"text": "one"}\n{"text": "tw\n')
  with pytest.raises(UserError, match=r"a.jsonl line 2 is not a JSON record"):
    data.prepare(c, "")
  path.write_text('{"text": "one"}\n["two"]\n')
  with pytest.raises(UserError, match=r"a.jsonl line 2 is not a JSON object"):
    data.prepare(c, "")


def test_files_of_another_format_are_refused(tmp_path):
  path = write_records(tmp_path / "a.parquet", DOCS[:3])
  with pytest.raises(
    UserError,
    match=r"a.parquet, which data.dataset='jsonl' cannot read: set data.dataset='parquet'",
  ):
    data.prepare(config("jsonl", path, path), "")
  with pytest.raises(UserError, match=r"data.format='chat' with data.dataset='text'"):
    data.prepare(config("text", path, path, format="chat"), "")


def test_a_mixture_takes_record_sources(tmp_path):
  c = config("text", "", "", tokenizer="byte")
  c.mixture = {
    "web": {
      "weight": 0.5,
      "dataset": "parquet",
      "text_files": {
        "train": write_records(tmp_path / "a.parquet", DOCS),
        "validation": write_records(tmp_path / "v.parquet", DOCS[:5]),
      },
    },
    "code": {
      "weight": 0.5,
      "dataset": "jsonl",
      "text_files": {
        "train": write_records(tmp_path / "a.jsonl.zst", DOCS[::-1]),
        "validation": write_records(tmp_path / "v.jsonl", DOCS[:5]),
      },
    },
  }
  summary = data.prepare_cache(c)
  assert sorted(summary) == ["train/code", "train/web", "validation/code", "validation/web"]
  assert summary["validation/code"]["fingerprint"] == summary["validation/web"]["fingerprint"]
  assert summary["train/code"]["tokens"] == summary["train/web"]["tokens"]
  assert summary["train/code"]["fingerprint"] != summary["train/web"]["fingerprint"]


def test_a_changed_file_is_tokenized_again(tmp_path):
  path = tmp_path / "a.jsonl"
  write_records(path, DOCS[:10])
  c = config("jsonl", str(path), str(path), tokenizer="byte")
  before = data.prepare_cache(c)["train"]
  write_records(path, DOCS[:11])
  after = data.prepare_cache(c)["train"]
  assert after["tokens"] == before["tokens"] + len(DOCS[10].encode()) + 1
  np.testing.assert_array_less(0, after["tokens"])


def test_the_tokenization_benchmark_gives_each_format_the_text_fingerprint(monkeypatch):
  from lm_jax.data import benchmark

  monkeypatch.setattr(benchmark, "SHARDS", 3)
  rows = list(benchmark.run(tiny.get_config(), ["byte"], [1], 0.3, formats=list(benchmark.FORMATS)))
  assert [r["format"] for r in rows] == list(benchmark.FORMATS)
  assert len({r["fingerprint"] for r in rows}) == 1 and len({r["bytes"] for r in rows}) == 1
  assert all(r["mb_per_sec"] > 0 and r["file_mb"] > 0 for r in rows)
