"""Tokenizers: round trips, the saved file, refusals, bytes counted without decoding."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import make_text
from unit.data.test_data import data_config

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
