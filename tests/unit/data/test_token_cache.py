"""The token cache in one process: resumed builds, reads across shards, another process's chunk."""

import fcntl
import json
import os
import threading

import numpy as np
import pytest
from helpers.data import build_cache, spans_of, train_tokenizer

from lm_jax.data import batches, chunks, streams, token_cache


class Killed(Exception):
  pass


def test_interrupted_build_resumes_to_the_same_tokens(
  tmp_path, text_path, small_chunks, monkeypatch
):
  tok = train_tokenizer("byte", text_path)
  real, calls = chunks.encode_chunk, []

  def dies_at_the_tenth_chunk(*args):
    calls.append(1)
    if len(calls) == 10 and die:
      raise Killed
    return real(*args)

  monkeypatch.setattr(chunks, "encode_chunk", dies_at_the_tenth_chunk)
  die = False
  full = build_cache(tmp_path / "full", text_path, tok, shard_tokens=5000)
  num_chunks, die = len(calls), True
  calls.clear()
  with pytest.raises(Killed):
    build_cache(tmp_path / "cut", text_path, tok, shard_tokens=5000)
  kept = {n: os.stat(tmp_path / "cut" / n).st_mtime_ns for n in os.listdir(tmp_path / "cut")}
  assert "shard-00001.json" in kept and any(n.endswith(".tmp") for n in kept)
  calls.clear()
  die = False
  resumed = build_cache(tmp_path / "cut", text_path, tok, shard_tokens=5000)
  last = json.loads(
    (tmp_path / "cut" / f"shard-{resumed['resumed_shards'] - 1:05d}.json").read_text()
  )
  assert resumed["resumed_shards"] >= 2 and resumed["resumed_chunks"] == 9  # Chunk by chunk,
  assert resumed["resumed_chunks"] > last["chunks"]  # inside the shard it had not finished,
  assert len(calls) == num_chunks - 9  # and nothing encoded twice.
  assert resumed["fingerprint"] == full["fingerprint"] and resumed["shards"] == full["shards"]
  for name, mtime in kept.items():  # Complete shards are kept as they were.
    if name.startswith("shard-") and name.endswith(".json"):
      assert os.stat(tmp_path / "cut" / name).st_mtime_ns == mtime


def test_windows_and_evaluation_cross_shard_boundaries(tmp_path, text_path, small_chunks):
  tok = train_tokenizer("byte", text_path)
  index = build_cache(tmp_path, text_path, tok, shard_tokens=1000)
  stream = streams.TokenStream(str(tmp_path), index)
  flat = np.asarray(stream)
  assert len(index["shards"]) > 10 and len(stream) == len(flat) == index["tokens"]
  for a, b in [(0, 5), (1990, 2010), (0, len(flat)), (5, 5 + 3 * 2000), (len(flat) - 3, None)]:
    np.testing.assert_array_equal(stream[a:b], flat[a:b])
  assert stream[-1] == flat[-1] and stream[2000] == flat[2000]
  for step in range(5):
    got = batches.train_batch(streams.Mixture.single(stream), 1, step, 16, 300, order="epochs")
    want = batches.train_batch(streams.Mixture.single(flat), 1, step, 16, 300, order="epochs")
    np.testing.assert_array_equal(got["inputs"], want["inputs"])
  for got, want in zip(
    batches.eval_batches(stream, 300, 8), batches.eval_batches(flat, 300, 8), strict=True
  ):
    for k in got:
      np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("finishes", [True, False])
def test_build_waits_for_a_chunk_another_process_holds(
  tmp_path, text_path, small_chunks, finishes, monkeypatch
):
  tok = train_tokenizer("byte", text_path)
  alone = build_cache(tmp_path / "alone", text_path, tok)
  directory = str(tmp_path / "shared")
  os.makedirs(directory)
  lock = open(os.path.join(directory, "part-0000003.lock"), "a")
  fcntl.flock(lock, fcntl.LOCK_EX)  # Another process is encoding chunk 3.
  waiting, retake = threading.Event(), token_cache._Encoder.retake

  def refused(enc, i):
    took = retake(enc, i)
    if i == 3 and not took:  # The builder has come to chunk 3 and found it still held.
      waiting.set()
    return took

  monkeypatch.setattr(token_cache._Encoder, "retake", refused)
  result = {}
  thread = threading.Thread(target=lambda: result.update(build_cache(directory, text_path, tok)))
  thread.start()
  assert waiting.wait(timeout=60)
  assert thread.is_alive() and not result  # Waiting for chunk 3.
  if finishes:
    token_cache.encode_part(tok, directory, 3, list(spans_of(text_path)())[3], np.uint16)
  lock.close()  # Finished, or let go unfinished (it died): then the build encodes chunk 3.
  thread.join(timeout=60)
  assert result["fingerprint"] == alone["fingerprint"]
  assert result["parts_reused"] == int(finishes)
