"""A damaged checkpoint, whichever file Orbax wrote for it the damage hit: the run falls back to
the newest step that restores and ends bit-exact as if nothing had happened; when no step
restores, the refusal lists each one and nothing on disk changes."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import make_text

from configs import tiny
from lm_jax import UserError, records, runs, train
from lm_jax import config as config_lib
from lm_jax.experiments import sweep


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


def snapshot(workdir):
  """Every file of a run (the lock aside), by path, as bytes."""
  out = {}
  for path in glob.glob(os.path.join(workdir, "**", "*"), recursive=True):
    if os.path.isfile(path) and os.path.basename(path) != "lock":
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


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
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(final)):
    np.testing.assert_array_equal(a, b)
  assert runs.load_run(copy)[4] == 6
  assert sweep.is_finished(copy)


@pytest.mark.parametrize("kind", sorted(UNREAD))
def test_damage_to_files_a_restore_does_not_read_changes_nothing(unbroken, tmp_path, capsys, kind):
  _, workdir, _ = unbroken
  copy = damaged_copy(unbroken, tmp_path, 6, kind, UNREAD)
  capsys.readouterr()
  config, _, _, state, step = runs.load_run(copy)
  assert step == 6 and "warning" not in capsys.readouterr().err
  for a, b in zip(
    jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(runs.load_run(workdir)[3])
  ):
    np.testing.assert_array_equal(a, b)


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
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(final)):
    np.testing.assert_array_equal(a, b)


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
