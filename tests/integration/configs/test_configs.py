"""Every shipped config's smoke preset trains on a small text: the recipe as shipped, shrunk."""

import glob
import math
import os

import pytest
from conftest import ROOT
from corpora import CONVERSATIONS, write_chats
from helpers import hf
from helpers.data import write_pairs

from lm_jax import config as config_lib
from lm_jax import records, train

CONFIGS = sorted(
  os.path.basename(p)
  for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  if not p.endswith("__init__.py")
)
# Configs whose argument names the model they start from: a small chat model made here.
FROM_A_MODEL = ("dpo.py", "finetune_hf.py", "grpo.py", "sft_hf.py")


def smoke(name: str, corpus: dict, workdir: str, source: str = ""):
  """The config's smoke preset, reading `corpus`; trains it in `workdir`."""
  arg = f"{source},smoke" if source else "smoke"
  config = config_lib.load(os.path.join(ROOT, "configs", f"{name}:{arg}"))
  config.data.update(dataset="text" if config.data.format == "text" else "jsonl")
  if config.data.format == "preference":
    config.data.seq_len = 32  # Room for a prompt and a reply.
  if config.train.objective == "grpo":
    config.train.grpo.reward = "helpers.rewards:shorter"
  config.data.text_files.update(corpus)
  for key, source_config in config.data.mixture.items():  # Each source reads the text too.
    config.data.mixture[key] = {"weight": source_config.weight, "dataset": "text"}
    config.data.mixture[key]["text_files"] = corpus
  return train.train_and_evaluate(config, workdir)


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_preset_trains(name, corpus, tmp_path):
  source = ""
  if name in FROM_A_MODEL:
    texts = [str(m) for m in CONVERSATIONS] + [open(corpus["train"]).read()]
    source = hf.chat_model(tmp_path / "model", texts)
  if name == "sft_hf.py":
    corpus = {"train": write_chats(tmp_path / "chats.jsonl"), "validation": "", "test": ""}
  if name == "dpo.py":
    corpus = {"train": write_pairs(tmp_path / "pairs.jsonl"), "validation": "", "test": ""}
  if name == "grpo.py":  # The pairs' records hold a prompt too.
    corpus = {"train": write_pairs(tmp_path / "prompts.jsonl"), "validation": "", "test": ""}
  workdir = str(tmp_path / "run")
  _, final = smoke(name, corpus, workdir, source)
  assert math.isfinite(final["loss"])
  logged = [r for r in records.read_metrics(workdir) if "train_loss" in r]
  assert [r["step"] for r in logged] == [1, 2]
  assert all(math.isfinite(r["train_loss"]) for r in logged)
