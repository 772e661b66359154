"""Hugging Face datasets as sources: saved folders, local files and the Hub's cache, offline."""

import os
import shutil
import socket

import pytest
from corpora import DOCS, config, write_records

from lm_jax import UserError, data
from lm_jax.data import chunks

datasets = pytest.importorskip("datasets")


def saved(tmp_path, docs, key="text"):
  """A DatasetDict written by save_to_disk: train and validation."""
  folder = str(tmp_path / "saved")
  rows = lambda ds: {key: ds, "id": list(range(len(ds)))}
  datasets.DatasetDict(
    {
      "train": datasets.Dataset.from_dict(rows(docs)),
      "validation": datasets.Dataset.from_dict(rows(docs[:8])),
    }
  ).save_to_disk(folder, max_shard_size="20KB")
  return folder


@pytest.fixture
def want(tmp_path):
  """The fingerprints of DOCS as JSON Lines (train) and its first 8 (validation)."""
  c = config(
    "jsonl",
    write_records(tmp_path / "t.jsonl", DOCS),
    write_records(tmp_path / "v.jsonl", DOCS[:8]),
  )
  return {s: v["fingerprint"] for s, v in data.prepare_cache(c).items()}


def fingerprints(c):
  return {s: v["fingerprint"] for s, v in data.prepare_cache(c).items()}


def test_a_saved_folder_gives_the_record_files_fingerprints(tmp_path, want, monkeypatch):
  monkeypatch.setattr(chunks, "CHUNK_CHARS", 3000)  # Several row ranges, several files.
  c = config(f"hf:{saved(tmp_path, DOCS)}", "", "")
  assert fingerprints(c) == want
  _, [named] = data.sources.resolve(c)
  spans = list(named.splits["train"].chunks())
  assert len({s.files for s in spans}) == 1 and len(spans[0].files) > 1 and len(spans) > 3
  c.update(train_split="train[:50%]+validation", cache_dir=str(tmp_path / "c2"))
  half = c.to_dict()
  flat = config(
    "jsonl",
    write_records(tmp_path / "h.jsonl", DOCS[:30] + DOCS[:8]),
    "",
    cache_dir=half["cache_dir"],
  )
  flat.text_files.validation = write_records(tmp_path / "v2.jsonl", DOCS[:8])
  assert fingerprints(c)["train"] == fingerprints(flat)["train"]  # Slices, joined.


def test_local_files_through_a_datasets_builder(tmp_path, want):
  c = config(
    "hf:json",
    write_records(tmp_path / "t.json.jsonl", DOCS),
    write_records(tmp_path / "v.json.jsonl", DOCS[:8]),
    data_dir=str(tmp_path / "hf_cache"),
  )
  assert fingerprints(c) == want
  assert os.listdir(tmp_path / "hf_cache")  # Prepared under data.data_dir.


def test_missing_field_and_split_are_refused(tmp_path):
  folder = saved(tmp_path, DOCS, key="body")
  with pytest.raises(UserError, match=r"has no field 'text' \(its records have \['body', 'id'\]\)"):
    data.prepare(config(f"hf:{folder}", "", ""), "")
  c = config(f"hf:{folder}", "", "", text_key="body", eval_split="test")
  with pytest.raises(UserError, match=r"no split 'test' \(it has \['train', 'validation'\]\)"):
    data.prepare(c, "")


def no_network(monkeypatch) -> list:
  """Refuses every connection; returns the list of addresses tried, as they are tried."""
  tried = []

  def refuse(address, timeout=None, *args, **kwargs):
    tried.append(address)
    raise OSError("Name or service not known")

  monkeypatch.setattr(socket, "create_connection", refuse)
  return tried


def test_offline_hub_dataset_fails_without_retries_naming_local_files(tmp_path, monkeypatch):
  tried = no_network(monkeypatch)
  real, offline = datasets.load_dataset, []

  def load_dataset(*args, **kwargs):
    offline.append(datasets.config.HF_HUB_OFFLINE)
    return real(*args, **kwargs)

  monkeypatch.setattr(datasets, "load_dataset", load_dataset)
  c = config("hf:someone/corpus", "", "", data_dir=str(tmp_path / "hf_cache"))
  with pytest.raises(UserError, match=r"'someone/corpus' is not in the datasets cache .*hf:FOLDER"):
    data.prepare(c, "")
  assert len(tried) == 1 and offline == [True]  # One probe, then the cache alone: no retries.


def test_offline_hub_dataset_is_read_from_the_datasets_cache(tmp_path, monkeypatch, want):
  """A Hub dataset `datasets` prepared earlier (laid out here as its cache holds one)."""
  from datasets.packaged_modules.json.json import Json

  cache = tmp_path / "hf_cache"
  files = {
    "train": write_records(tmp_path / "t.jsonl", DOCS),
    "validation": write_records(tmp_path / "v.jsonl", DOCS[:8]),
  }
  Json(
    cache_dir=str(cache), dataset_name="corpus", data_files=files, hash="0"
  ).download_and_prepare()
  [config_dir] = os.listdir(cache / "corpus")
  os.makedirs(cache / "someone___corpus")
  shutil.move(cache / "corpus" / config_dir, cache / "someone___corpus" / "default")
  no_network(monkeypatch)
  c = config("hf:someone/corpus", "", "", data_dir=str(cache))
  assert fingerprints(c) == want
