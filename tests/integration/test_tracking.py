"""Runs logged to Weights & Biases offline and read back from the run's W&B files: one W&B run
holding every step's metrics once, through a SIGKILL and a resume."""

import glob
import json
import os
import shutil

import pytest
from helpers.runs import kill_once, script, write_config

from lm_jax import network, records, tracking, train

pytest.importorskip("wandb", reason=f"needs wandb: {tracking.INSTALL}")


# Measured, not computed: a step W&B kept from a killed process has that process's timings.
TIMINGS = {"tokens_per_sec", "flops_per_sec", "input_wait_share", "elapsed_sec"}


def logged_once(workdir: str) -> dict:
  """The W&B run of `workdir`, checked to hold each step of metrics.jsonl once, with every
  metric, each equal to metrics.jsonl's but for the timings."""
  found = tracking.read_run(workdir)
  kept = tracking.kept_id(workdir)
  assert found["ids"] and set(found["ids"]) == {kept}  # Each process continued the same run.
  steps = [row["_step"] for row in found["history"]]
  expected = {}
  for row in records.read_metrics(workdir):
    expected.setdefault(row["step"], {}).update(row)
  assert steps == sorted(expected)  # Every step, once, in order.
  for row in found["history"]:
    want = {k: v for k, v in expected[row["_step"]].items() if k != "step"}
    assert want.keys() <= row.keys()
    assert {k: row[k] for k in want if k not in TIMINGS} == {
      k: v for k, v in want.items() if k not in TIMINGS
    }
  return found


@pytest.mark.slow
def test_a_killed_and_resumed_run_holds_every_step_once_in_one_wandb_run(config, tmp_path):
  config.train.update(num_steps=60, log_every=1, eval_every=5, checkpoint_every=2)
  config.train.wandb.update(project="lm_jax_test", mode="offline", tags=["test"])
  spec = write_config(config, tmp_path / "config.json")
  workdir = str(tmp_path / "run")
  kill_once(spec, workdir, "checkpoints/4", 0.2)
  assert not os.path.isdir(os.path.join(workdir, "checkpoints", "60"))  # Killed mid-run.
  r = script("train", "--config", spec, "--workdir", workdir)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "warning" not in r.stderr.lower()
  assert len(glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))) == 2  # Two processes.
  found = logged_once(workdir)
  assert [row["_step"] for row in found["history"]] == list(range(1, 61))
  assert found["config"]["train"]["num_steps"] == 60
  assert found["config"]["train"]["wandb"]["tags"] == ["test"]
  with open(os.path.join(workdir, "run.json")) as f:
    info = json.load(f)
  assert found["config"]["run"]["data_fingerprints"] == info["data_fingerprints"]
  assert found["config"]["run"]["versions"] == info["versions"]
  # A log cut short mid-record (a kill as W&B writes) reads back as its whole records.
  path = max(
    glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "*.wandb")), key=os.path.getsize
  )
  cut = tmp_path / "cut" / "wandb" / "offline-run-1-x" / "run-x.wandb"
  os.makedirs(cut.parent)
  shutil.copy(path, cut)
  whole = tracking.read_run(str(tmp_path / "cut"), "x")["history"]
  with open(cut, "r+b") as f:
    f.truncate(os.path.getsize(cut) * 2 // 3)
  rows = tracking.read_run(str(tmp_path / "cut"), "x")["history"]
  assert 0 < len(rows) < len(whole) and rows == whole[: len(rows)]


def test_an_unreachable_server_logs_offline_and_a_resume_skips_what_wandb_holds(
  config, tmp_path, monkeypatch, capsys
):
  monkeypatch.setattr(network, "unreachable_host", lambda urls, timeout=5.0: "https://w.example")
  config.train.update(num_steps=4, log_every=1, eval_every=2, checkpoint_every=2)
  config.train.wandb.update(project="lm_jax_test", mode="online")
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  warnings = [line for line in capsys.readouterr().err.splitlines() if "W&B" in line]
  assert len(warnings) == 1 and "wandb sync" in warnings[0]
  assert glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))
  # Resumed from step 2 while W&B holds steps 3 and 4: those are not logged again.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  config.train.num_steps = 6
  train.train_and_evaluate(config, workdir)
  found = logged_once(workdir)
  assert [row["_step"] for row in found["history"]] == list(range(1, 7))
