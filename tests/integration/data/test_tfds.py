"""TFDS text datasets: any dataset by name, shard files read in parallel, offline failures."""

import itertools
import socket

import numpy as np
import pytest
from conftest import make_text
from helpers.data import data_config

from lm_jax import UserError, data
from lm_jax.data import tokenizers


def test_unknown_tfds_name_suggests_close_matches(tmp_path):
  c = data_config(dataset="tiny_shakespear")
  with pytest.raises(UserError, match=r"no dataset 'tiny_shakespear' \(close: .*tiny_shakespeare"):
    data.prepare(c, str(tmp_path))


def test_failed_download_is_explained(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  def offline(*args, **kwargs):
    raise ConnectionError("network unreachable")

  monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
  c = data_config(dataset="tiny_shakespeare", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(UserError, match="--config.data.manual_dir"):
    data.prepare(c, str(tmp_path))


def test_any_tfds_text_dataset_by_name(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  # mock_data needs no network.
  monkeypatch.setattr(data.tfds.network, "unreachable_host", lambda urls: None)

  c = data_config(
    dataset="lm1b",
    tokenizer="byte",
    eval_split="test",
    test_split="test[:50%]",
    data_dir=str(tmp_path / "tfds"),
    seq_len=8,
  )
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    tok, tokens = data.prepare(c, str(tmp_path))
  texts = tok.decode(tokens["train"].streams[""]).split(tokenizers.EOD)
  assert len(texts) == 6 and all(texts)  # Six sentences, joined into one stream.
  assert set(tokens) == {"train", "validation", "test"}


@pytest.mark.slow
def test_tfds_splits_are_read_by_shard_file_in_parallel_with_the_same_tokens(tmp_path):
  import tensorflow as tf
  import tensorflow_datasets as tfds

  texts = [f"{make_text(300, i)} {i}" for i in range(60)]
  split = lambda t: tf.data.Dataset.from_tensor_slices({"text": t})
  tfds.dataset_builders.TfDataBuilder(
    name="local_texts",
    version="1.0.0",
    data_dir=str(tmp_path / "tfds"),
    split_datasets={"train": split(texts), "validation": split(texts[:10])},
    features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
  ).download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=6))
  c = data_config(dataset="local_texts", data_dir=str(tmp_path / "tfds"))
  c.update(tokenizer="byte", test_split="", train_split="train[5:55]+validation[:4]")
  _, [named] = data.sources.resolve(c)
  source = named.splits["train"]
  spans = list(source.chunks())
  shards = tfds.builder("local_texts", data_dir=str(tmp_path / "tfds")).info.splits
  assert shards["train"].shard_lengths == [10] * 6
  bounds = np.cumsum([0, *shards["validation"].shard_lengths])
  held = [(int(a), min(int(b), 4)) for a, b in itertools.pairwise(bounds) if a < 4]
  assert [(s.part, s.start, s.stop) for s in spans] == [
    ("train", 5, 10),
    *(("train", a, a + 10) for a in range(10, 50, 10)),
    ("train", 50, 55),
    *(("validation", a, b) for a, b in held),
  ]  # One span per shard file that the slices cover.
  pieces = [p for s in spans for p in s.pieces()]
  in_order = [t for t, _ in source.pieces()]  # What the tokenizer trains on.
  assert [t for t, _ in pieces] == in_order and len(in_order) == 54
  assert [new for _, new in pieces] == [False] + [True] * 53  # Documents after the first.
  summaries = {}
  for workers in (1, 2):
    c.update(workers=workers, cache_dir=str(tmp_path / f"cache{workers}"))
    summaries[workers] = data.prepare_cache(c)["train"]
  assert (summaries[1]["workers"], summaries[2]["workers"]) == (1, 2)
  assert summaries[1]["fingerprint"] == summaries[2]["fingerprint"]
  _, tokens = data.prepare(c, str(tmp_path / "run"))
  assert tokenizers.ByteTokenizer().decode(tokens["train"].streams[""]) == tokenizers.EOD.join(
    in_order
  )


def test_offline_tfds_fails_in_seconds_with_the_fix(tmp_path, monkeypatch):
  def no_network(address, timeout):
    raise OSError("Name or service not known")

  monkeypatch.setattr(socket, "create_connection", no_network)
  monkeypatch.setattr(data.tfds, "PACKAGED", {})  # As a dataset lm_jax carries no copy of.
  c = data_config(dataset="tiny_shakespeare", data_dir=str(tmp_path / "tfds"))
  # Refused by the connection check, before TFDS's own download retries (minutes) begin.
  with pytest.raises(UserError, match=r"raw.githubusercontent.com cannot be reached.*manual_dir"):
    data.prepare(c, str(tmp_path))
