"""Conversations (data.format='chat'): rendered turns, weight on the assistant's tokens only,
kept beside the tokens in the cache and carried into training and evaluation batches."""

import json

import numpy as np
import pytest
from corpora import CONVERSATIONS, config, write_chats
from helpers import hf

from lm_jax import UserError, data
from lm_jax.data import batches, chat, chunks, streams, tokenizers


def chat_config(path, **kwargs):
  return config(
    "parquet" if path.endswith(".parquet") else "jsonl",
    path,
    path,
    **{"format": "chat", "tokenizer": "byte", **kwargs},
  )


def weighted_text(tok, stream) -> str:
  ids, w = np.asarray(stream), np.asarray(stream.weights)
  return tok.decode(ids[w > 0])


def replies(conversations=CONVERSATIONS, end=chat.END) -> str:
  return "".join(t["content"] + end for m in conversations for t in m if t["role"] == "assistant")


def test_only_the_assistants_tokens_carry_weight(tmp_path, monkeypatch):
  monkeypatch.setattr(chunks, "CHUNK_CHARS", 2000)
  tok, corpus = data.prepare(chat_config(write_chats(tmp_path / "c.jsonl")), "")
  stream = corpus["train"].streams[""]
  assert stream.weights is not None and len(stream.weights) == len(stream)
  assert weighted_text(tok, stream) == replies()
  rendered = ["".join(t for t, _ in chat.pieces(None, m)) for m in CONVERSATIONS]
  assert tok.decode(stream).split(tokenizers.EOD) == rendered
  assert rendered[0].startswith("<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 0 + 0?")
  assert set(np.unique(np.asarray(stream.weights))) == {0, 1}


def test_a_chat_template_marks_each_reply_and_its_end_of_turn():
  template = chat.ChatTemplate(hf.CHATML)
  for turns in CONVERSATIONS[:6]:
    pieces = chat.pieces(template, turns)
    assert "".join(t for t, _ in pieces) == template.render(turns)
    want = [t["content"] + "<|im_end|>\n" for t in turns if t["role"] == "assistant"]
    assert [t for t, w in pieces if w] == want
    assert pieces[-1][1] == 1 and pieces[0][1] == 0


def test_a_template_that_rewrites_earlier_turns_is_refused():
  rewrites = chat.ChatTemplate(
    "{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}"
  )
  with pytest.raises(UserError, match="assistant's tokens cannot be found"):
    chat.pieces(rewrites, CONVERSATIONS[1])


def test_parquet_conversations_give_the_json_lines_fingerprint(tmp_path):
  jsonl = data.prepare_cache(chat_config(write_chats(tmp_path / "c.jsonl")))
  parquet = data.prepare_cache(chat_config(write_chats(tmp_path / "c.parquet")))
  assert parquet["train"]["fingerprint"] == jsonl["train"]["fingerprint"]
  text = config("jsonl", write_chats(tmp_path / "c.jsonl"), write_chats(tmp_path / "c.jsonl"))
  text.update(tokenizer="byte", text_key="id")
  with pytest.raises(UserError, match="has a int in field 'id'"):  # Format text: not a chat.
    data.prepare(text, "")


@pytest.mark.parametrize(
  "record, match",
  [
    ({"text": "hi"}, r"c.jsonl line 3 has no 'messages' list \(its fields: \['text'\]\)"),
    ({"messages": [{"role": "robot", "content": "x"}]}, r"c.jsonl line 3 has a message .*robot"),
    ({"messages": [{"role": "user"}]}, r"c.jsonl line 3 has a message"),
  ],
)
def test_bad_conversations_are_refused_naming_file_and_record(tmp_path, record, match):
  path = tmp_path / "c.jsonl"
  write_chats(path, CONVERSATIONS[:2])
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
  with pytest.raises(UserError, match=match):
    data.prepare(chat_config(str(path)), "")


def test_batches_carry_the_streams_weights(tmp_path):
  _, corpus = data.prepare(chat_config(write_chats(tmp_path / "c.jsonl"), seq_len=16), "")
  stream = corpus["train"].streams[""]
  ids, w = np.asarray(stream), np.asarray(stream.weights, np.float32)
  for step in range(3):
    for order in batches.ORDERS:
      batch = batches.train_batch(corpus["train"], 0, step, 8, 16, order=order)
      for b, (inputs, weights) in enumerate(zip(batch["inputs"], batch["weights"], strict=True)):
        if order == "sequential":  # Row b reads contiguous stream b, window after window.
          length = len(ids) // 8
          start = b * length + step % ((length - 1) // 16) * 16
        else:
          windows = np.lib.stride_tricks.sliding_window_view(ids, 16)
          start = int(np.flatnonzero((windows == inputs).all(1))[0])
        np.testing.assert_array_equal(inputs, ids[start : start + 16])
        np.testing.assert_array_equal(weights, w[start + 1 : start + 17])
  evals = list(batches.eval_batches(stream, 16, 4))
  got = np.concatenate([b["weights"].reshape(-1) for b in evals])[: len(ids) - 1]
  np.testing.assert_array_equal(got, w[1:])
  plain = batches.train_batch(streams.Mixture.single(ids), 0, 0, 4, 16)
  assert (plain["weights"] == 1).all()  # Text: every target counts.


class Killed(Exception):
  pass


def test_an_interrupted_build_resumes_tokens_and_weights(tmp_path, monkeypatch):
  monkeypatch.setattr(chunks, "CHUNK_CHARS", 1000)
  c = chat_config(write_chats(tmp_path / "c.jsonl"), shard_tokens=3000)
  full = data.prepare_cache(c)["train"]
  real, calls = chunks.encode_chunk, []

  def dies(*args):
    calls.append(1)
    if len(calls) == 8:
      raise Killed
    return real(*args)

  c.cache_dir = str(tmp_path / "cut")
  with monkeypatch.context() as m:
    m.setattr(chunks, "encode_chunk", dies)
    with pytest.raises(Killed):
      data.prepare_cache(c)
  resumed = data.prepare_cache(c)
  _, [named] = data.sources.resolve(c)
  assert resumed["train"]["fingerprint"] == full["fingerprint"]
  index = streams.cached_tokens(c, tokenizers.ByteTokenizer(), "train", named.splits["train"]).index
  assert index["resumed_chunks"] == 7 and len(index["weights"]) == len(index["shards"]) > 2
