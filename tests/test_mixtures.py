"""Mixtures of sources: exact proportions, per-source windows, exact resume, per-source losses."""

import fractions
import hashlib
import json
import os
import signal

import jax
import numpy as np
import pytest
from conftest import make_text

from lm_jax import UserError, data, evaluate, records, runs, train
from lm_jax import config as config_lib
from lm_jax.data import batches, sources, streams

F = fractions.Fraction


@pytest.mark.parametrize(
  "weights, batch_size",
  [({"a": 0.7, "b": 0.3}, 8), ({"x": 1.0, "y": 1.0, "z": 1.0}, 16), ({"a": 0.9, "b": 0.1}, 12)],
)
def test_rows_follow_the_weights_exactly_over_steps(weights, batch_size):
  total = sum(F(w) for w in weights.values())
  w = {n: F(x) / total for n, x in weights.items()}
  seen = dict.fromkeys(w, 0)
  for step in range(500):
    counts = batches.row_counts(w, step, batch_size)
    assert sum(counts.values()) == batch_size and min(counts.values()) >= 0
    for n in w:
      seen[n] += counts[n]
      assert abs(seen[n] - (step + 1) * batch_size * w[n]) < 1  # Never a whole row off.
  if batch_size == 8:  # 0.7 * 8 = 5.6 rows: 5 or 6 per batch, exactly 70% every 5 steps.
    assert seen == {"a": 2800, "b": 1200}


def test_a_source_needs_a_row_per_batch():
  with pytest.raises(UserError, match=r"mixture.b.weight .* raise its weight or train.batch"):
    batches.row_counts({"a": F(15, 16), "b": F(1, 16)}, 0, 8)


def two_streams():
  return {"a": np.arange(5000), "b": 10_000 + np.arange(3000)}


# 'sequential' reads one stream as contiguous rows; a mixture is refused (test_sequential_batches).
@pytest.mark.parametrize("order", [o for o in batches.ORDERS if o != "sequential"])
def test_each_source_gives_its_rows_from_its_own_stream(order):
  mix = streams.Mixture(two_streams(), {"a": F(3, 4), "b": F(1, 4)})
  for step in range(6):
    full = batches.train_batch(mix, 7, step, 8, 16, order=order)
    assert (full["inputs"][:6] < 10_000).all() and (full["inputs"][6:] >= 10_000).all()
    np.testing.assert_array_equal(full["inputs"][:, 1:], full["targets"][:, :-1])
    for rows in (slice(0, 4), slice(4, 8), slice(6, 8)):  # A process builds only its rows.
      part = batches.train_batch(mix, 7, step, 8, 16, rows, order)
      np.testing.assert_array_equal(part["inputs"], full["inputs"][rows])
    alone = batches.train_batch(
      streams.Mixture.single(mix.streams["b"]), batches.source_seed(7, "b"), step, 2, 16
    )
    if order == "random_windows":  # The source's own scheme, with its own seed.
      np.testing.assert_array_equal(full["inputs"][6:], alone["inputs"])


def test_epochs_visit_each_sources_windows_once():
  mix = streams.Mixture(two_streams(), {"a": F(1, 2), "b": F(1, 2)})
  starts = {"a": [], "b": []}
  for step in range(20):  # 80 windows of each, fewer than an epoch (187 of b): no repeats.
    batch = batches.train_batch(mix, 3, step, 8, 16, order="epochs")
    starts["a"] += [int(r[0]) for r in batch["inputs"][:4]]
    starts["b"] += [int(r[0]) for r in batch["inputs"][4:]]
  assert all(s % 16 == 0 for s in starts["a"]) and len(set(starts["a"])) == 80
  assert all(s % 16 == 0 for s in starts["b"]) and len(set(starts["b"])) == 80


@pytest.fixture
def mixed(config, tmp_path):
  """The tiny config on two local sources; 'b' has characters that 'a' lacks."""
  b_text = make_text(3000, 7).upper() + "0123456789é\n"
  for split, text in (("train", b_text), ("validation", b_text[-3000:])):
    (tmp_path / f"b_{split}.txt").write_text(text, encoding="utf-8")
  config.data.mixture = {
    "a": {"weight": 0.7, "dataset": "text"},  # data.text_files: the corpus fixture.
    "b": {
      "weight": 0.3,
      "dataset": "text",
      "text_files": {
        "train": str(tmp_path / "b_train.txt"),
        "validation": str(tmp_path / "b_validation.txt"),
      },
    },
  }
  config.data.update(dataset="tiny_shakespeare", tokenizer="char")  # Sources set their own.
  config.train.update(num_steps=8, log_every=1, eval_every=4, checkpoint_every=4)
  config.model.dropout = 0.1
  return config


def test_mixture_keys_are_overridable_and_checked(mixed):
  c = config_lib.override(mixed, {"data.mixture.b.weight": "0.5"})
  _, named = sources.resolve(c.data)
  assert {n.name: n.weight for n in named} == {"a": F(7, 12), "b": F(5, 12)}
  assert named[1].config.text_files.test == ""
  assert named[0].config.text_files.train == mixed.data.text_files.train
  c.data.mixture.b.seq_len = 8
  with pytest.raises(UserError, match=r"mixture.b sets \['seq_len'\].*shared by every source"):
    data.prepare(c.data, "")
  del c.data.mixture.b["seq_len"]
  c.data.mixture.b.text_files.train = "/nowhere/*.txt"
  with pytest.raises(UserError, match=r"^data.mixture.b: data.text_files.train='/nowhere"):
    data.prepare(c.data, "")


def record_batches(monkeypatch, seen: dict):
  real = batches.train_batch

  def recording(tokens, seed, step, *args, **kwargs):
    batch = real(tokens, seed, step, *args, **kwargs)
    seen[step] = hashlib.sha256(batch["inputs"].tobytes()).hexdigest()
    return batch

  monkeypatch.setattr(batches, "train_batch", recording)


def stop_at(monkeypatch, at_step):
  real = records.MetricWriter.write

  def write(self, step, **metrics):
    if step == at_step and "train_loss" in metrics:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(self, step, **metrics)

  monkeypatch.setattr(records.MetricWriter, "write", write)


@pytest.mark.slow
def test_resumed_mixture_run_sees_the_same_batches_and_ends_the_same(mixed, tmp_path, monkeypatch):
  straight, resumed = {}, {}
  record_batches(monkeypatch, straight)
  train.train_and_evaluate(mixed, str(tmp_path / "straight"))
  record_batches(monkeypatch, resumed)
  with monkeypatch.context() as m:
    stop_at(m, 4)
    with pytest.raises(train.Preempted, match="saved a checkpoint at step 5"):
      train.train_and_evaluate(mixed, str(tmp_path / "resumed"))
  train.train_and_evaluate(mixed, str(tmp_path / "resumed"))
  assert resumed == straight and sorted(straight) == list(range(8))

  a, b = runs.load_run(str(tmp_path / "straight")), runs.load_run(str(tmp_path / "resumed"))
  for x, y in zip(jax.tree_util.tree_leaves(a[3].params), jax.tree_util.tree_leaves(b[3].params)):
    np.testing.assert_array_equal(x, y)

  evals = [r for r in records.read_metrics(str(tmp_path / "straight")) if "val_loss" in r]
  assert [r["step"] for r in evals] == [4, 8]
  for r in evals:
    assert r["val_loss"] == pytest.approx(0.7 * r["val_loss/a"] + 0.3 * r["val_loss/b"])
  run_json = json.loads((tmp_path / "straight" / "run.json").read_text())
  assert sorted(run_json["data_fingerprints"]) == [
    "train/a",
    "train/b",
    "validation/a",
    "validation/b",
  ]

  result = evaluate.evaluate_run(str(tmp_path / "straight"), batch_size=4, parallel_mode="jit")
  assert sorted(result["sources"]) == ["a", "b"]
  assert result["sources"]["b"]["loss"] == pytest.approx(evals[-1]["val_loss/b"], rel=1e-5)
  assert result["loss"] == pytest.approx(evals[-1]["val_loss"], rel=1e-5)
  assert result["tokens"] == sum(s["tokens"] for s in result["sources"].values())


def test_one_tokenizer_learns_every_sources_text(mixed, tmp_path):
  tokenizer, tokens = data.prepare(mixed.data, str(tmp_path / "run"))
  assert "é" in tokenizer.decode(tokens["train"].streams["b"][-20:])
  assert "test" not in tokens  # Source b has no test split.
  summary = data.prepare_cache(mixed.data)
  assert sorted(summary) == ["train/a", "train/b", "validation/a", "validation/b"]
  assert summary["train/b"]["tokens"] == len(tokens["train"].streams["b"])
