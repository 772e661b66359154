"""data.prepare: documents, the holdout, the token cache reused or rebuilt, bad text explained,
synthetic data, one tokenizer for every source."""

import os

import numpy as np
import pytest
from conftest import make_text
from helpers.data import data_config

from lm_jax import UserError, data
from lm_jax.data.streams import TokenStream


def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_documents_are_joined_by_end_of_document(tmp_path):
  train_path = write(tmp_path / "train.txt", "one doc\n\nsecond doc\n\n\nthird\n")
  c = data_config(tokenizer="byte", documents="blank_line", seq_len=2)
  c.text_files.update(train=train_path, validation=train_path)
  tok, tokens = data.prepare(c, str(tmp_path))
  assert (
    tok.decode(tokens["train"].streams[""]) == "one doc<|endoftext|>second doc<|endoftext|>third"
  )
  assert tok.num_bytes(tokens["train"].streams[""]) == len("one doc\nsecond doc\nthird")


def test_holdout_takes_the_end_of_the_train_text(tmp_path):
  text = make_text(2000, 0)
  c = data_config(holdout_fraction=0.1)
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
  c = data_config()
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
  c = data_config()
  c.text_files.update(corpus)
  _, before = data.prepare(c, str(tmp_path / "run1"))
  with open(corpus["validation"], "a") as f:
    f.write("The end.\n")
  _, after = data.prepare(c, str(tmp_path / "run2"))
  grown = len(before["validation"].streams[""]) + len("The end.\n")
  assert len(after["validation"].streams[""]) == grown


def test_workdir_tokenizer_must_match_the_config(tmp_path, corpus):
  c = data_config()
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
  c = data_config()
  c.text_files.update(corpus)
  path = tmp_path / "validation.txt"
  if problem == "no_file":
    c.text_files.validation = str(tmp_path / "nope*.txt")
  else:
    path.write_bytes({"empty": b"", "short": b"the.", "not_utf8": b"abc\xff\xfe"}[problem])
  with pytest.raises(UserError, match=match):
    data.prepare(c, str(tmp_path / "run"))


def test_synthetic_data_needs_no_files(tmp_path):
  c = data_config(dataset="synthetic", synthetic="pattern", vocab_size=50, synthetic_tokens=5000)
  tok, tokens = data.prepare(c, str(tmp_path))
  assert tok.vocab_size == 50 and len(tokens["train"].streams[""]) == 5000
  assert np.mean(np.diff(tokens["train"].streams[""]) % 50 == 1) > 0.9
  assert tok.decode(tokens["train"].streams[""][:3]) == " ".join(
    map(str, tokens["train"].streams[""][:3])
  )


def test_one_tokenizer_learns_every_sources_text(mixed, tmp_path):
  tokenizer, tokens = data.prepare(mixed.data, str(tmp_path / "run"))
  assert "é" in tokenizer.decode(tokens["train"].streams["b"][-20:])
  assert "test" not in tokens  # Source b has no test split.
  summary = data.prepare_cache(mixed.data)
  assert sorted(summary) == ["train/a", "train/b", "validation/a", "validation/b"]
  assert summary["train/b"]["tokens"] == len(tokens["train"].streams["b"])
