"""Sources, tokenizers, the token cache, batches and prefetching."""

import json
import os
import socket
import threading
import time

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import make_text

from configs import tiny
from lm_jax import UserError, data, train
from lm_jax.data import batches, streams, tokenizers
from lm_jax.data.token_cache import TokenStream

SETTINGS = hypothesis.settings(max_examples=60, deadline=None)


def data_config(tmp_path, **kwargs):
  c = tiny.get_config().data
  c.update({"dataset": "text", "seq_len": 16, "vocab_size": 300, **kwargs})
  return c


def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def sentencepiece():
  c = tiny.get_config().data
  c.update(vocab_size=400, sentencepiece_type="bpe")
  return tokenizers.train("sentencepiece", [make_text(3000, 0) + "héllo wörld ∑ 日本\n"], c)


@SETTINGS
@hypothesis.given(st.text())
def test_byte_round_trip(text):
  tok = tokenizers.ByteTokenizer()
  assert tok.decode(tok.encode(text)) == text


@SETTINGS
@hypothesis.given(st.text())
def test_sentencepiece_round_trip(sentencepiece, text):
  # Byte fallback and identity normalization: any text, even never-seen scripts.
  assert sentencepiece.decode(sentencepiece.encode(text)) == text


@SETTINGS
@hypothesis.given(st.text(alphabet="abcdefgh \n.!é"))
def test_char_round_trip(text):
  tok = tokenizers.train("char", ["abcdefgh \n.!é"], None)
  assert tok.decode(tok.encode(text)) == text


def test_encode_batch_equals_encode(sentencepiece):
  texts = ["The king", "", "went down.\n", "日本"]
  for tok in (tokenizers.train("char", texts, None), tokenizers.ByteTokenizer(), sentencepiece):
    for got, text in zip(tok.encode_batch(texts), texts):
      np.testing.assert_array_equal(got, tok.encode(text))


def test_sentencepiece_compresses_and_saves(sentencepiece, tmp_path):
  text = make_text(400, 5)
  assert len(sentencepiece.encode(text)) < len(text) / 2
  tokenizers.save(sentencepiece, str(tmp_path / "t.json"))
  loaded = tokenizers.load(str(tmp_path / "t.json"))
  np.testing.assert_array_equal(loaded.encode(text), sentencepiece.encode(text))
  assert loaded.vocab_size == 400


@pytest.mark.parametrize("vocab_size, fix", [(50_000, "lower"), (200, "raise")])
def test_sentencepiece_vocab_size_the_corpus_cannot_support(vocab_size, fix):
  c = tiny.get_config().data
  c.update(vocab_size=vocab_size, sentencepiece_type="unigram")
  with pytest.raises(UserError, match=f"vocab_size={vocab_size} .*: {fix} data.vocab_size"):
    tokenizers.train("sentencepiece", ["a small text.\n" * 20], c)


def test_char_refuses_unseen_characters():
  tok = tokenizers.train("char", ["abc"], None)
  with pytest.raises(UserError, match="'z'.*data.tokenizer='byte'"):
    tok.encode("abz")


def test_documents_are_joined_by_end_of_document(tmp_path):
  train_path = write(tmp_path / "train.txt", "one doc\n\nsecond doc\n\n\nthird\n")
  c = data_config(tmp_path, tokenizer="byte", documents="blank_line", seq_len=2)
  c.text_files.update(train=train_path, validation=train_path)
  tok, tokens = data.prepare(c, str(tmp_path))
  assert (
    tok.decode(tokens["train"].streams[""]) == "one doc<|endoftext|>second doc<|endoftext|>third"
  )
  assert tok.num_bytes(tokens["train"].streams[""]) == len("one doc\nsecond doc\nthird")


def test_holdout_takes_the_end_of_the_train_text(tmp_path):
  text = make_text(2000, 0)
  c = data_config(tmp_path, holdout_fraction=0.1)
  c.text_files.train = write(tmp_path / "train.txt", text)
  tok, tokens = data.prepare(c, str(tmp_path))
  train_text, val_text = (
    tok.decode(tokens["train"].streams[""]),
    tok.decode(tokens["validation"].streams[""]),
  )
  assert train_text + val_text == text
  assert abs(len(val_text) - 0.1 * len(text)) < 100
  assert train_text.endswith("\n")  # Cut at a line end.


def test_token_cache_is_reused_and_keyed_by_tokenizer(tmp_path, corpus, token_cache, monkeypatch):
  c = data_config(tmp_path)
  c.text_files.update(corpus)
  _, first = data.prepare(c, str(tmp_path / "run1"))
  stream = first["train"].streams[""]
  assert stream.dtype == np.uint16 and isinstance(stream, TokenStream)
  files = sorted(os.listdir(token_cache / "tokens"))
  calls = []
  real = data.token_cache.build
  monkeypatch.setattr(data.token_cache, "build", lambda *a: calls.append(a) or real(*a))
  _, second = data.prepare(c, str(tmp_path / "run2"))
  assert not calls and sorted(os.listdir(token_cache / "tokens")) == files
  for split in first:
    np.testing.assert_array_equal(first[split].streams[""], second[split].streams[""])
  c.tokenizer = "byte"
  _, third = data.prepare(c, str(tmp_path / "run3"))
  assert len(calls) == 3 and len(os.listdir(token_cache / "tokens")) == 2 * len(files)
  assert len(third["train"].streams[""]) == len(open(corpus["train"], "rb").read())


def test_source_change_invalidates_the_cache(tmp_path, corpus):
  c = data_config(tmp_path)
  c.text_files.update(corpus)
  _, before = data.prepare(c, str(tmp_path / "run1"))
  with open(corpus["validation"], "a") as f:
    f.write("The end.\n")
  _, after = data.prepare(c, str(tmp_path / "run2"))
  grown = len(before["validation"].streams[""]) + len("The end.\n")
  assert len(after["validation"].streams[""]) == grown


def test_workdir_tokenizer_must_match_the_config(tmp_path, corpus):
  c = data_config(tmp_path)
  c.text_files.update(corpus)
  data.prepare(c, str(tmp_path))
  c.tokenizer = "byte"
  with pytest.raises(UserError, match="is char .* asks for byte: use a new --workdir"):
    data.prepare(c, str(tmp_path))


@pytest.mark.parametrize(
  "problem, match",
  [
    ("empty", "validation split .* is empty"),
    ("short", "fewer than data.seq_len \\+ 1"),
    ("not_utf8", "not UTF-8 at byte 3"),
    ("no_file", "matches no file"),
  ],
)
def test_bad_local_text_is_explained(tmp_path, corpus, problem, match):
  c = data_config(tmp_path)
  c.text_files.update(corpus)
  path = tmp_path / "validation.txt"
  if problem == "no_file":
    c.text_files.validation = str(tmp_path / "nope*.txt")
  else:
    path.write_bytes({"empty": b"", "short": b"the.", "not_utf8": b"abc\xff\xfe"}[problem])
  with pytest.raises(UserError, match=match):
    data.prepare(c, str(tmp_path / "run"))


def test_unknown_tfds_name_suggests_close_matches(tmp_path):
  c = data_config(tmp_path, dataset="tiny_shakespear")
  with pytest.raises(UserError, match=r"no dataset 'tiny_shakespear' \(close: .*tiny_shakespeare"):
    data.prepare(c, str(tmp_path))


def test_missing_manual_dir_is_refused(tmp_path):
  c = data_config(tmp_path, dataset="tiny_shakespeare", manual_dir=str(tmp_path / "empty"))
  with pytest.raises(UserError, match="holds no files"):
    data.prepare(c, str(tmp_path))


def test_failed_download_is_explained(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  def offline(*args, **kwargs):
    raise ConnectionError("network unreachable")

  monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
  c = data_config(tmp_path, dataset="tiny_shakespeare", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(UserError, match="--config.data.manual_dir"):
    data.prepare(c, str(tmp_path))


def test_any_tfds_text_dataset_by_name(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  # mock_data needs no network.
  monkeypatch.setattr(data.tfds, "_unreachable_host", lambda urls: None)

  c = data_config(
    tmp_path,
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
  c = data_config(tmp_path, dataset="local_texts", data_dir=str(tmp_path / "tfds"))
  c.update(tokenizer="byte", test_split="", train_split="train[5:55]+validation[:4]")
  _, [named] = data.sources.resolve(c)
  source = named.splits["train"]
  spans = list(source.chunks())
  shards = tfds.builder("local_texts", data_dir=str(tmp_path / "tfds")).info.splits
  assert shards["train"].shard_lengths == [10] * 6
  bounds = np.cumsum([0, *shards["validation"].shard_lengths])
  held = [(int(a), min(int(b), 4)) for a, b in zip(bounds, bounds[1:]) if a < 4]
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


def test_synthetic_data_needs_no_files(tmp_path):
  c = data_config(
    tmp_path, dataset="synthetic", synthetic="pattern", vocab_size=50, synthetic_tokens=5000
  )
  tok, tokens = data.prepare(c, str(tmp_path))
  assert tok.vocab_size == 50 and len(tokens["train"].streams[""]) == 5000
  assert np.mean(np.diff(tokens["train"].streams[""]) % 50 == 1) > 0.9
  assert tok.decode(tokens["train"].streams[""][:3]) == " ".join(
    map(str, tokens["train"].streams[""][:3])
  )


@pytest.mark.parametrize("order", batches.ORDERS)
def test_train_batch_is_a_pure_function_of_seed_and_step(order):
  tokens = streams.Mixture.single(np.arange(1000, dtype=np.int32))
  a = batches.train_batch(tokens, seed=3, step=7, batch_size=6, seq_len=10, order=order)
  b = batches.train_batch(tokens, seed=3, step=7, batch_size=6, seq_len=10, order=order)
  c = batches.train_batch(tokens, seed=3, step=8, batch_size=6, seq_len=10, order=order)
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert not np.array_equal(a["inputs"], c["inputs"])
  np.testing.assert_array_equal(a["targets"], a["inputs"] + 1)
  # Two processes, each reading only its half of the rows, together read the whole batch.
  halves = [
    batches.train_batch(tokens, 3, 7, 6, 10, rows=slice(i, i + 3), order=order) for i in (0, 3)
  ]
  for key in a:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), a[key])


def test_epochs_visit_every_window_once():
  tokens = streams.Mixture.single(np.arange(101, dtype=np.int32))  # 10 windows of 10 targets.
  seen = [batches.train_batch(tokens, 0, s, 5, 10, order="epochs")["targets"] for s in range(4)]
  first, second = np.concatenate(seen[:2]), np.concatenate(seen[2:])
  np.testing.assert_array_equal(np.sort(first.reshape(-1)), np.arange(1, 101))
  np.testing.assert_array_equal(np.sort(second.reshape(-1)), np.arange(1, 101))
  assert not np.array_equal(first, second)  # A new permutation each epoch.


def test_eval_batches_cover_every_token_once():
  tokens = np.arange(50, dtype=np.int32)
  got = list(batches.eval_batches(tokens, seq_len=4, batch_size=3))
  weights = np.concatenate([b["weights"] for b in got]).reshape(-1)
  targets = np.concatenate([b["targets"] for b in got]).reshape(-1)
  assert all(b["inputs"].shape == (3, 4) for b in got)
  np.testing.assert_array_equal(targets[weights > 0], np.arange(1, 50))


def test_prefetcher_keeps_order_and_raises_errors():
  fetched = batches.Prefetcher(lambda s: s * s, range(5))
  assert list(fetched) == [0, 1, 4, 9, 16]

  def fail(step):
    if step == 2:
      raise ValueError("bad step")
    return step

  fetched = batches.Prefetcher(fail, range(5))
  with pytest.raises(ValueError, match="bad step"):
    list(fetched)
  stopped = batches.Prefetcher(lambda s: s, range(10**9))
  assert next(iter(stopped)) == 0
  stopped.close()


def test_offline_tfds_fails_in_seconds_with_the_fix(tmp_path, monkeypatch):
  def no_network(address, timeout):
    raise OSError("Name or service not known")

  monkeypatch.setattr(socket, "create_connection", no_network)
  c = data_config(tmp_path, dataset="tiny_shakespeare", data_dir=str(tmp_path / "tfds"))
  # Refused by the connection check, before TFDS's own download retries (minutes) begin.
  with pytest.raises(UserError, match=r"raw.githubusercontent.com cannot be reached.*manual_dir"):
    data.prepare(c, str(tmp_path))


def closes_within_a_second(fetched):
  closing = threading.Thread(target=fetched.close, daemon=True)
  closing.start()
  closing.join(timeout=1.0)
  assert not closing.is_alive(), "Prefetcher.close() blocked"


def test_prefetcher_closes_at_once_on_error_end_and_mid_stream():
  def fail(step):
    if step == 1:
      raise ValueError("bad step")
    return step

  failed = batches.Prefetcher(fail, range(5), depth=1)  # The error comes with the queue full.
  time.sleep(0.2)
  closes_within_a_second(failed)
  ended = batches.Prefetcher(lambda s: s, range(1), depth=1)  # So does the end of the steps.
  time.sleep(0.2)
  closes_within_a_second(ended)
  mid = batches.Prefetcher(lambda s: s, range(10**9), depth=2)
  assert next(iter(mid)) == 0
  time.sleep(0.2)  # The queue fills up behind the reader.
  closes_within_a_second(mid)


def test_training_reads_the_configured_tokenizer(config, tmp_path):
  config.data.update(tokenizer="sentencepiece", vocab_size=320)
  train.train_and_evaluate(config, str(tmp_path))
  tok = tokenizers.load(str(tmp_path / "tokenizer.json"))
  assert tok.kind == "sentencepiece" and tok.vocab_size == 320
  recorded = json.loads((tmp_path / "run.json").read_text())["data_fingerprints"]
  prepared = data.prepare_cache(config.data)  # What scripts/prepare_data.py prints.
  assert recorded == {split: p["fingerprint"] for split, p in prepared.items()}
  assert len(set(recorded.values())) == 3


@SETTINGS
@hypothesis.given(st.text())
def test_sentencepiece_bytes_counted_without_decoding(sentencepiece, text):
  ids = np.concatenate([sentencepiece.encode(text), sentencepiece.eod_ids])
  assert sentencepiece.num_bytes(ids) == len(text.encode("utf-8")) + 1


def test_word_tokenizer_keeps_the_most_frequent_words(tmp_path):
  c = data_config(tmp_path, vocab_size=3)
  tok = tokenizers.train("word", ["b a c a\nb a <unk> d", "a b  e"], c)
  assert tok.words == ["a", "b", "c"] and tok.vocab_size == 5  # Ties in code-point order.
  assert tok.encode(" a\tzz b\n<unk> c ").tolist() == [2, 0, 3, 0, 4]
  assert tok.decode([2, 0, 1, 3]) == "a <unk> <|endoftext|> b"
  assert tok.num_bytes([2, 3]) is None  # Not comparable: reported as such.


def test_tokenization_benchmark_rows_agree_across_worker_counts(monkeypatch):
  from lm_jax.data import benchmark as data_benchmark
  from lm_jax.data import token_cache

  monkeypatch.setattr(token_cache, "CHUNK_CHARS", 50_000)  # Enough chunks for a pool.
  config = tiny.get_config()
  rows = list(data_benchmark.run(config, ["char", "byte"], [1, 2], corpus_mb=1))
  assert [(r["tokenizer"], r["workers"]) for r in rows] == [
    ("char", 1),
    ("char", 2),
    ("byte", 1),
    ("byte", 2),
  ]
  assert rows[0]["fingerprint"] == rows[1]["fingerprint"] != rows[2]["fingerprint"]
  assert rows[2]["fingerprint"] == rows[3]["fingerprint"]
  assert len({r["bytes"] for r in rows}) == 1 and 0.9 * 2**20 < rows[0]["bytes"] <= 2**20
  assert all(r["mb_per_sec"] > 0 and r["peak_memory_mib"] > 0 for r in rows)
