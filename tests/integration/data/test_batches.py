"""A mixture run: the same batches after a resume, the same end, per-source losses."""

import hashlib
import json
import os
import signal

import pytest
from helpers.trees import assert_trees_equal

from lm_jax import evaluate, records, runs, train
from lm_jax.data import batches


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
  assert_trees_equal(a[3].params, b[3].params)

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
