"""Tokenizers: round trips, the saved file, refusals, bytes counted without decoding."""

import json

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import make_text
from helpers import hf
from helpers.data import data_config

from configs import tiny
from lm_jax import UserError
from lm_jax.data import tokenizers

SETTINGS = hypothesis.settings(max_examples=60, deadline=None)


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
    for got, text in zip(tok.encode_batch(texts), texts, strict=True):
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


@SETTINGS
@hypothesis.given(st.text())
def test_sentencepiece_bytes_counted_without_decoding(sentencepiece, text):
  ids = np.concatenate([sentencepiece.encode(text), sentencepiece.eod_ids])
  assert sentencepiece.num_bytes(ids) == len(text.encode("utf-8")) + 1


def test_word_tokenizer_keeps_the_most_frequent_words(tmp_path):
  c = data_config(vocab_size=3)
  tok = tokenizers.train("word", ["b a c a\nb a <unk> d", "a b  e"], c)
  assert tok.words == ["a", "b", "c"] and tok.vocab_size == 5  # Ties in code-point order.
  assert tok.encode(" a\tzz b\n<unk> c ").tolist() == [2, 0, 3, 0, 4]
  assert tok.decode([2, 0, 1, 3]) == "a <unk> <|endoftext|> b"
  assert tok.num_bytes([2, 3]) is None  # Not comparable: reported as such.


TEXT = make_text(200, 1) + "naïve 日本 ∑ — ✓\n"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A Hugging Face tokenizer directory: a small byte-level BPE, end of text its eos_token."""
  tok = hf.byte_level_bpe(special_tokens=[tokenizers.EOD])
  return hf.save_tokenizer(tok, tmp_path_factory.mktemp("hf"), eos_token=tokenizers.EOD)


def trained(kind, tmp_path, sentencepiece, hf_dir):
  """(tokenizer of `kind`, the data config that trained it); sentencepiece: the fixture's."""
  if kind == "sentencepiece":
    c = data_config(tokenizer=kind, vocab_size=400, sentencepiece_type="bpe")
    return sentencepiece, c
  c = data_config(tokenizer=kind, vocab_size=400, hf_tokenizer=hf_dir)
  return tokenizers.train(kind, [TEXT], c), c


RECORDED = {  # What each kind is trained from, as data_config sets it.
  "char": {},
  "byte": {},
  "word": {"vocab_size": 400},
  "ids": {"vocab_size": 400},
  "hf": {},
  "sentencepiece": {
    "vocab_size": 400,
    "sentencepiece_type": "bpe",
    "tokenizer_train_bytes": 10_000_000,
  },
}


@pytest.mark.parametrize("kind", sorted(RECORDED))
def test_every_kind_records_its_settings_in_the_saved_file(kind, tmp_path, sentencepiece, hf_dir):
  tok, c = trained(kind, tmp_path, sentencepiece, hf_dir)
  path = str(tmp_path / "tokenizer.json")
  tokenizers.save(tok, path)
  with open(path) as f:
    saved = json.load(f)
  assert saved["kind"] == kind and saved["settings"] == RECORDED[kind]
  loaded = tokenizers.load(path)
  assert type(loaded) is type(tok) and loaded.recorded == RECORDED[kind]
  assert loaded.fingerprint() == tok.fingerprint() and loaded.vocab_size == tok.vocab_size
  tokenizers.check_matches(loaded, c, path)  # The config that trained it takes it back.


def test_a_saved_word_tokenizer_of_another_vocab_size_is_refused(tmp_path):
  c = data_config(tokenizer="word", vocab_size=5)
  path = str(tmp_path / "tokenizer.json")
  tokenizers.save(tokenizers.train("word", [TEXT], c), path)
  loaded = tokenizers.load(path)
  tokenizers.check_matches(loaded, c, path)
  c.vocab_size = 6
  with pytest.raises(
    UserError, match=r"is word, vocab_size 5 but the config asks for word, vocab_size 6: use a new"
  ):
    tokenizers.check_matches(loaded, c, path)


@pytest.mark.parametrize(
  "change", [{"vocab_size": 500}, {"sentencepiece_type": "unigram"}, {"tokenizer_train_bytes": 9}]
)
def test_a_saved_sentencepiece_of_other_settings_is_refused(change, sentencepiece, tmp_path):
  path = str(tmp_path / "tokenizer.json")
  tokenizers.save(sentencepiece, path)
  c = data_config(tokenizer="sentencepiece", vocab_size=400, sentencepiece_type="bpe")
  tokenizers.check_matches(tokenizers.load(path), c, path)
  ((key, value),) = change.items()
  c[key] = value
  with pytest.raises(UserError, match=rf"is sentencepiece, .*{key} .* asks for .*{key} {value}"):
    tokenizers.check_matches(tokenizers.load(path), c, path)


def test_a_file_without_settings_is_checked_on_what_it_shows(sentencepiece, tmp_path):
  path = tmp_path / "tokenizer.json"
  tokenizers.save(sentencepiece, str(path))
  saved = json.loads(path.read_text())
  del saved["settings"]  # As runs saved before tokenizers recorded their settings.
  path.write_text(json.dumps(saved))
  loaded = tokenizers.load(str(path))
  assert loaded.recorded == {"vocab_size": 400}  # Its vocabulary shows this much.
  c = data_config(tokenizer="sentencepiece", vocab_size=400, sentencepiece_type="unigram")
  tokenizers.check_matches(loaded, c, str(path))
  c.vocab_size = 500
  with pytest.raises(UserError, match="vocab_size 500"):
    tokenizers.check_matches(loaded, c, str(path))


def test_fingerprint_names_the_vocabulary_not_the_recorded_settings(tmp_path):
  c = data_config(tokenizer="word", vocab_size=5)
  tok = tokenizers.train("word", [TEXT], c)
  before = tok.fingerprint()
  tok.recorded = {"vocab_size": 99}
  assert tok.fingerprint() == before
  path = str(tmp_path / "tokenizer.json")
  tokenizers.save(tok, path)
  assert tokenizers.load(path).fingerprint() == before
  c.vocab_size = 3
  assert tokenizers.train("word", [TEXT], c).fingerprint() != before  # Fewer words kept.


@pytest.mark.parametrize("kind", sorted(RECORDED))
def test_bytes_are_the_utf8_length_for_lossless_kinds_and_none_for_word(
  kind, tmp_path, sentencepiece, hf_dir
):
  tok, _ = trained(kind, tmp_path, sentencepiece, hf_dir)
  text = "3 14 15 92 65" if kind == "ids" else TEXT
  ids = tok.encode(text)
  if kind == "word":
    assert not tok.lossless and tok.num_bytes(ids) is None
    return
  assert tok.lossless and tok.decode(ids) == text
  assert tok.num_bytes(ids) == len(text.encode("utf-8"))
  if kind != "ids":  # Synthetic ids have no end of document.
    two = np.concatenate([ids, tok.eod_ids, ids])  # An end of document counts as one byte.
    assert tok.num_bytes(two) == 2 * len(text.encode("utf-8")) + 1
    assert tok.num_bytes(two, start=len(ids) + len(tok.eod_ids)) == len(text.encode("utf-8"))
