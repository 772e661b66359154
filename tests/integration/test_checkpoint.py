"""Checkpoints, exact resume, preemption, damaged and failed saves."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, make_text
from helpers.runs import kill_once, sigterm_at, train_losses, write_config
from helpers.trees import assert_trees_close, assert_trees_equal

from configs import tiny
from lm_jax import UserError, checkpoint, records, runs, train
from lm_jax import config as config_lib
from lm_jax.experiments import sweep


def run_script(*args, wait=True):
  cmd = [sys.executable, "scripts/train.py", *args]
  if not wait:
    return subprocess.Popen(
      cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def resumable(config):
  config.train.update(num_steps=12, log_every=1, eval_every=4, checkpoint_every=4)
  config.model.dropout = 0.1  # The resumed run must also draw the same dropout masks.
  return config


@pytest.mark.slow
def test_sigterm_saves_and_a_new_process_resumes_exactly(resumable, tmp_path, monkeypatch):
  spec = write_config(resumable, tmp_path / "config.json")
  r = run_script("--config", spec, "--workdir", str(tmp_path / "straight"))
  assert r.returncode == 0, r.stderr[-2000:]

  sigterm_at(monkeypatch, 6)
  with pytest.raises(train.Preempted, match="SIGTERM: saved a checkpoint at step 7"):
    train.train_and_evaluate(resumable, str(tmp_path / "resumed"))
  assert checkpoint.Checkpointer(str(tmp_path / "resumed"), read_only=True).steps() == [4, 7]
  r = run_script("--workdir", str(tmp_path / "resumed"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed" in r.stderr

  assert train_losses(str(tmp_path / "resumed")) == train_losses(str(tmp_path / "straight"))
  a = runs.load_run(str(tmp_path / "straight"))
  b = runs.load_run(str(tmp_path / "resumed"))
  assert a[4] == b[4] == 12
  assert_trees_equal(a[3].params, b[3].params)
  assert_trees_equal(a[3].opt_state, b[3].opt_state)


@pytest.mark.slow
def test_sigkill_at_any_moment_resumes_to_the_same_result(resumable, tmp_path):
  resumable.train.update(num_steps=40, checkpoint_every=2)
  spec = write_config(resumable, tmp_path / "config.json")
  assert run_script("--config", spec, "--workdir", str(tmp_path / "straight")).returncode == 0
  killed = str(tmp_path / "killed")
  for delay in (0.0, 0.05, 0.2):  # Kill soon after checkpoints start appearing.
    kill_once(spec, killed, "checkpoints/*", delay)
  r = run_script("--workdir", killed)
  assert r.returncode == 0, r.stderr[-2000:]
  assert train_losses(killed) == train_losses(str(tmp_path / "straight"))
  assert_trees_equal(
    runs.load_run(killed)[3].params, runs.load_run(str(tmp_path / "straight"))[3].params
  )


def test_unfinished_and_corrupt_checkpoints_are_skipped(config, tmp_path, capsys):
  config.train.update(num_steps=6, checkpoint_every=2, keep_checkpoints=3)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4", "6"]
  os.makedirs(os.path.join(ckpt_dir, "8.orbax-checkpoint-tmp"))  # A save cut short.
  for path in glob.glob(os.path.join(ckpt_dir, "6", "state", "**", "*"), recursive=True):
    if os.path.isfile(path) and "metadata" not in path.lower():
      with open(path, "r+b") as f:
        f.truncate(3)
  *_, state, step, _ = runs.load_run(workdir)
  assert step == 4 and int(state.step) == 4
  assert "checkpoint 6 in" in capsys.readouterr().err
  assert sorted(os.listdir(ckpt_dir))[:3] == ["2", "4", "6"]  # Read-only: nothing moved.


def damage(workdir, step):
  """Truncates the array files of a checkpoint, as a write cut short on a full disk would."""
  for path in glob.glob(
    os.path.join(workdir, "checkpoints", str(step), "state", "**", "*"), recursive=True
  ):
    if os.path.isfile(path) and "metadata" not in path.lower():
      with open(path, "r+b") as f:
        f.truncate(3)


def snapshot(workdir):
  """Every file a run wrote (the lock aside), by path, as bytes."""
  out = {}
  for path in glob.glob(os.path.join(workdir, "**", "*"), recursive=True):
    if os.path.isfile(path) and os.path.basename(path) != "lock":
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def test_no_readable_checkpoint_stops_the_script_and_changes_nothing(config, tmp_path):
  config.train.update(num_steps=6, checkpoint_every=2, keep_checkpoints=3)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  for step in (2, 4, 6):
    damage(workdir, step)
  before = snapshot(workdir)
  assert "metrics.jsonl" in before and "run.json" in before
  r = run_script("--workdir", workdir)
  assert r.returncode != 0
  assert "Traceback" not in r.stderr
  assert "error: no checkpoint in" in r.stderr
  assert all(f"step {s}: ValueError: DATA_LOSS" in r.stderr for s in (2, 4, 6)), r.stderr
  assert "pass a new --workdir" in r.stderr
  assert snapshot(workdir) == before


def test_a_restore_failing_for_another_reason_is_refused(config, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  before = snapshot(workdir)

  def restore(*args, **kwargs):
    raise RuntimeError("an unrelated failure")

  monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
  with pytest.raises(UserError, match=r"(?s)no checkpoint.*step 6: RuntimeError: an unrelated"):
    train.train_and_evaluate(config, workdir)
  assert snapshot(workdir) == before


def test_damaged_newest_is_moved_aside_and_the_run_finishes(config, tmp_path, capsys):
  config.train.update(num_steps=6, checkpoint_every=2, keep_checkpoints=3)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  straight = train_losses(workdir)
  damage(workdir, 6)
  capsys.readouterr()
  train.train_and_evaluate(config, workdir)
  err = capsys.readouterr().err
  assert "checkpoint 6 in" in err and "resuming from step 4" in err
  assert "moved damaged checkpoint 6 aside" in err
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6", "6.damaged"]
  assert runs.load_run(workdir)[4] == 6
  assert train_losses(workdir) == straight


def test_a_failed_save_stops_the_run_and_keeps_earlier_checkpoints(config, tmp_path, monkeypatch):
  config.train.update(num_steps=6, checkpoint_every=2, keep_checkpoints=3)
  real = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(28, "No space left on device")
    return real(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  workdir = str(tmp_path / "run")
  with pytest.raises(UserError, match=r"could not write checkpoint 4 to .*checkpoints.*No space"):
    train.train_and_evaluate(config, workdir)
  assert checkpoint.Checkpointer(workdir, read_only=True).steps() == [2]
  assert runs.load_run(workdir)[4] == 2


def test_checkpoint_that_does_not_fit_is_refused(config, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  stored = (tmp_path / "run" / "config.json").read_text()
  config.model.d_model = 32
  with pytest.raises(
    UserError,
    match=r"(?s)does not fit.*\n  params/block_0/attn/qkv/kernel: "
    r"checkpoint \(\(16, 3, 2, 8\), 'float32'\), config \(\(32, 3, 2, 16\)",
  ):
    train.train_and_evaluate(config, workdir)
  assert (tmp_path / "run" / "config.json").read_text() == stored


@pytest.mark.slow
def test_checkpoints_move_between_layouts(config, tmp_path):
  config.train.update(num_steps=9, checkpoint_every=2, parallel="jit")
  _, _ = train.train_and_evaluate(config, str(tmp_path / "jit"))
  straight = runs.load_run(str(tmp_path / "jit"))[3]
  # Stopping early via num_steps keeps the schedule: all 9 steps lie in the 10-step warmup.
  assert config.optim.warmup_steps >= 9
  # 8 pmap replicas -> tensor parallel over 2 -> FSDP over 4 -> both and data over 2 x 2 x 2
  # -> 1 device.
  for num_steps, mode, mesh in (
    (2, "pmap", {}),
    (4, "sharded", dict(data=4, fsdp=1, tensor=2)),
    (6, "sharded", dict(data=2, fsdp=4, tensor=1)),
    (8, "sharded", dict(data=2, fsdp=2, tensor=2)),
    (9, "jit", {}),
  ):
    config.train.update(num_steps=num_steps, parallel=mode)
    config.mesh.update(mesh or dict(data=-1, fsdp=1, tensor=1))
    train.train_and_evaluate(config, str(tmp_path / "moved"))
  moved = runs.load_run(str(tmp_path / "moved"))[3]
  assert_trees_close(straight.params, moved.params, atol=1e-5)


def test_non_finite_loss_stops_the_run(config, tmp_path):
  config.optim.update(learning_rate=1e30, grad_clip=0.0, warmup_steps=0)
  config.train.update(num_steps=20, checkpoint_every=2, log_every=1)
  with pytest.raises(UserError, match=r"the run diverged: .* not finite at step \d+"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  steps = checkpoint.Checkpointer(str(tmp_path / "run"), read_only=True).steps()
  rows = records.read_metrics(str(tmp_path / "run"))
  assert all(np.isfinite(r["train_loss"]) for r in rows if "train_loss" in r)
  assert max(steps, default=0) <= max((r["step"] for r in rows if "train_loss" in r), default=0)


def test_keep_best_keeps_the_lowest_val_loss(config, tmp_path):
  config.train.update(
    num_steps=8, checkpoint_every=2, eval_every=100, keep_checkpoints=1, keep_best=True
  )
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  evals = {r["step"]: r["val_loss"] for r in records.read_metrics(workdir) if "val_loss" in r}
  assert sorted(evals) == [2, 4, 6, 8]
  best = min(evals, key=evals.get)
  assert checkpoint.Checkpointer(workdir, read_only=True).steps() == sorted({best, 8})


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
  """A tiny run trained once for the module (checkpoints 2, 4, 6), and its final parameters."""
  root = tmp_path_factory.mktemp("unbroken")
  files = {}
  for i, split in enumerate(("train", "validation", "test")):
    files[split] = str(root / f"{split}.txt")
    with open(files[split], "w") as f:
      f.write(make_text(4000 if split == "train" else 400, seed=i))
  config = tiny.get_config()
  config.data.update(dataset="text", cache_dir=str(root / "cache"))
  config.data.text_files.update(files)
  config.model.update(d_model=16, max_len=16, dropout=0.1)  # Resume must redraw the same masks.
  config.data.seq_len = 16
  config.train.update(
    batch_size=8, num_steps=6, log_every=1, eval_every=6, checkpoint_every=2, keep_checkpoints=3
  )
  config.train.parallel = "jit"
  workdir = str(root / "run")
  state, _ = train.train_and_evaluate(config, workdir)
  return config, workdir, state


def losses(workdir):
  """(step, train or validation loss) rows: what a resumed run must reproduce exactly."""
  keys = ("train_loss", "val_loss")
  return [(r["step"], k, r[k]) for r in records.read_metrics(workdir) for k in keys if k in r]


def largest(pattern):
  return os.path.normpath(max(glob.glob(pattern), key=os.path.getsize))


def scramble(path):
  """Random bytes over the whole file, as a disk that returns garbage would leave it."""
  with open(path, "r+b") as f:
    f.write(np.random.default_rng(0).bytes(os.path.getsize(path)))


def empty(path):
  shutil.rmtree(path)
  os.mkdir(path)


def remove(path):
  shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


# What Orbax 0.12.8 writes for a step (checkpoints/<step>/), and the damage each case does.
# `d/` files are OCDBT's data: under ocdbt.process_0/ the array chunks and that process's
# b-tree nodes; state/d/ the b-tree that merges the processes' trees (OCDBT's index).
DAMAGED = {
  "array data": ("state/ocdbt.process_0/d/*", scramble),
  "array data lost": ("state/ocdbt.process_0/d/*", remove),
  "OCDBT manifest": ("state/manifest.ocdbt", scramble),
  "OCDBT manifest lost": ("state/manifest.ocdbt", remove),
  "OCDBT index": ("state/d/*", scramble),
  "_sharding": ("state/_sharding", scramble),
  "_METADATA": ("state/_METADATA", scramble),
  "_METADATA lost": ("state/_METADATA", remove),
  "array_metadatas": ("state/array_metadatas/process_0", scramble),
  "meta item": ("meta/metadata", scramble),
  "meta item lost": ("meta", remove),
  "state item lost": ("state", remove),
  "empty step directory": (".", empty),
}
# Files a restore does not read: step timestamps and metrics, commit markers, and the
# per-process manifest, superseded once Orbax merges the processes' trees into state/.
UNREAD = {
  "_CHECKPOINT_METADATA": ("_CHECKPOINT_METADATA", scramble),
  "_CHECKPOINT_METADATA lost": ("_CHECKPOINT_METADATA", remove),
  "commit_success.txt": ("commit_success.txt", scramble),
  "process manifest": ("state/ocdbt.process_0/manifest.ocdbt", scramble),
  "_sharding lost": ("state/_sharding", remove),  # The target's shardings are used.
}


def damaged_copy(unbroken, tmp_path, step, kind, cases=DAMAGED):
  _, workdir, _ = unbroken
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  pattern, damage = cases[kind]
  damage(largest(os.path.join(copy, "checkpoints", str(step), pattern)))
  return copy


@pytest.mark.parametrize("kind", sorted(DAMAGED))
def test_a_damaged_newest_step_falls_back_and_the_run_ends_bit_exact(
  unbroken, tmp_path, capsys, kind
):
  config, workdir, final = unbroken
  copy = damaged_copy(unbroken, tmp_path, 6, kind)
  damaged = {k: v for k, v in snapshot(copy).items() if k.startswith("checkpoints/6/")}
  capsys.readouterr()

  before = snapshot(copy)  # Evaluation, sampling and export take step 4 and move nothing.
  assert runs.load_run(copy)[4] == 4
  err = capsys.readouterr().err
  assert "checkpoint 6 in" in err and "using step 4; nothing moved (read-only)" in err
  assert snapshot(copy) == before

  state, _ = train.train_and_evaluate(config, copy)
  err = capsys.readouterr().err
  assert "checkpoint 6 in" in err and "fails to restore while step 4 restores" in err
  assert "resuming from step 4" in err and "\n  step 6: " in err
  assert "moved damaged checkpoint 6 aside" in err and "Traceback" not in err
  names = sorted(os.listdir(os.path.join(copy, "checkpoints")))
  assert names == ["2", "4", "6", "6.damaged"]
  moved = {
    k.replace("checkpoints/6.damaged/", "checkpoints/6/"): v
    for k, v in snapshot(copy).items()
    if k.startswith("checkpoints/6.damaged/")
  }
  assert moved == damaged  # Set aside as it was, never deleted.
  assert losses(copy) == losses(workdir)
  assert_trees_equal(state, final)
  assert runs.load_run(copy)[4] == 6
  assert sweep.is_finished(copy)


@pytest.mark.parametrize("kind", sorted(UNREAD))
def test_damage_to_files_a_restore_does_not_read_changes_nothing(unbroken, tmp_path, capsys, kind):
  _, workdir, _ = unbroken
  copy = damaged_copy(unbroken, tmp_path, 6, kind, UNREAD)
  capsys.readouterr()
  config, _, _, state, step, _ = runs.load_run(copy)
  assert step == 6 and "warning" not in capsys.readouterr().err
  assert_trees_equal(state, runs.load_run(workdir)[3])


def test_several_damaged_steps_are_all_named_and_set_aside(unbroken, tmp_path, capsys):
  config, workdir, final = unbroken
  copy = damaged_copy(unbroken, tmp_path, 6, "_sharding")
  DAMAGED["meta item"][1](os.path.join(copy, "checkpoints", "4", "meta", "metadata"))
  capsys.readouterr()
  state, _ = train.train_and_evaluate(config, copy)
  err = capsys.readouterr().err
  assert "checkpoint 6, 4 in" in err and "resuming from step 2" in err
  assert "\n  step 6: ValueError: FAILED_PRECONDITION" in err and "\n  step 4: " in err
  assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == [
    "2",
    "4",
    "4.damaged",
    "6",
    "6.damaged",
  ]
  assert losses(copy) == losses(workdir)
  assert_trees_equal(state, final)


def test_every_step_damaged_is_refused_listing_each_and_nothing_changes(unbroken, tmp_path):
  config, _, _ = unbroken
  copy = damaged_copy(unbroken, tmp_path, 6, "_sharding")
  scramble(os.path.join(copy, "checkpoints", "4", "meta", "metadata"))
  empty(os.path.join(copy, "checkpoints", "2"))
  before = snapshot(copy)
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(config, copy)
  message = str(e.value)
  assert message.startswith(f"no checkpoint in {copy}/checkpoints could be restored:\n")
  assert "\n  step 6: ValueError: FAILED_PRECONDITION: Error reading local file" in message
  assert "\n  step 4: UnicodeDecodeError: " in message
  assert f"\n  step 2: FileNotFoundError: no readable metadata in {copy}/checkpoints/2/state\n" in (
    message
  )
  assert "Nothing in the run's directory was changed" in message
  assert snapshot(copy) == before
  with pytest.raises(UserError, match="no checkpoint in .* could be restored"):
    runs.load_run(copy)


def test_a_config_that_does_not_fit_keeps_its_own_message_past_a_damaged_step(unbroken, tmp_path):
  config, _, _ = unbroken
  copy = damaged_copy(unbroken, tmp_path, 6, "_METADATA")
  before = snapshot(copy)
  wider = config_lib.override(config, {"model.d_model": "32"})
  with pytest.raises(UserError, match=r"(?s)checkpoint 4 in .* does not fit the model"):
    train.train_and_evaluate(wider, copy)
  assert snapshot(copy) == before


def test_a_step_that_is_not_there_is_named_with_those_that_are(unbroken):
  _, workdir, _ = unbroken
  with pytest.raises(UserError, match=r"holds no checkpoint 5 \(it holds steps 2, 4, 6\)"):
    runs.load_run(workdir, 5)
