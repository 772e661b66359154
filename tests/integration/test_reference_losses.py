"""Fifty steps of each shipped CPU recipe, their logged losses pinned to a stored file.

A change that alters any of these numbers, a rounding included, fails here with the recipe and
the first step that differs. Remake the file only when a change is meant to alter them (a new
initialisation, a fix to the loss), never to make a refactoring pass; docs/development.md says
when, and the command is:

  LM_JAX_WRITE_REFERENCE=1 LM_JAX_MANUAL_DIR=FOLDER python -m pytest -q \
    tests/integration/test_reference_losses.py
"""

import json
import os

import pytest
from conftest import MANUAL_DIR, ROOT, make_text

from lm_jax import config as config_lib
from lm_jax import records, train

STORED = os.path.join(os.path.dirname(__file__), "reference_losses.json")
STEPS = 50
# Recipes as shipped, on one device (jit), for STEPS steps. Local text stands in for the files
# a recipe names on the command line (WikiText-2): a seeded text made here.
RECIPES = {
  "shakespeare_char_gpt_cpu.py": {},
  "shakespeare_char_llama.py": {},
  "shakespeare_char_lstm.py": {},
  "tiny.py": {},
  "mixture_gpt_cpu.py": {"data.mixture.wiki.text_files": "TEXT"},
  "word_lstm.py": {"data.text_files": "TEXT", "train.num_epochs": 0},
}


def losses(name: str, tmp_path) -> dict:
  """The recipe's logged train losses by step, and its validation loss at the end."""
  config = config_lib.load(os.path.join(ROOT, "configs", name))
  text = {}
  for i, split in enumerate(("train", "validation", "test")):
    text[split] = str(tmp_path / f"{split}.txt")
    with open(text[split], "w") as f:
      f.write(make_text(20_000 if split == "train" else 2_000, seed=i))
  for key, value in RECIPES[name].items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = dict(text) if value == "TEXT" else value
  config.data.manual_dir = MANUAL_DIR
  config.train.update(
    num_steps=STEPS, log_every=1, eval_every=STEPS, checkpoint_every=STEPS, parallel="jit"
  )
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  logged = records.read_metrics(workdir)
  return {
    "train_loss": [r["train_loss"] for r in logged if "train_loss" in r],
    "val_loss": [r["val_loss"] for r in logged if "val_loss" in r],
  }


@pytest.mark.slow
@pytest.mark.skipif(not MANUAL_DIR, reason="needs tiny-shakespeare: set LM_JAX_MANUAL_DIR")
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_logs_the_stored_losses(name, tmp_path):
  found = losses(name, tmp_path)
  if os.environ.get("LM_JAX_WRITE_REFERENCE"):
    stored = json.load(open(STORED)) if os.path.exists(STORED) else {}
    with open(STORED, "w") as f:
      json.dump({**stored, name: found}, f, indent=1, sort_keys=True)
      f.write("\n")
    return
  with open(STORED) as f:
    want = json.load(f)[name]
  assert len(found["train_loss"]) == STEPS
  for key in ("train_loss", "val_loss"):
    differ = [i for i, (a, b) in enumerate(zip(found[key], want[key], strict=True)) if a != b]
    first = differ[0] if differ else None
    assert not differ, (
      f"{name}: {key} differs from step {first + 1 if key == 'train_loss' else STEPS} on: "
      f"{found[key][first]!r} against the stored {want[key][first]!r}"
    )
