"""Sweeps: grid expansion and names, keys refused before anything runs, device shares."""

import os

import pytest
from conftest import ROOT
from helpers.runs import write_config

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.experiments import sweep


def test_grid_expands_every_combination_with_readable_names(config, tmp_path):
  gpt = write_config(config, tmp_path / "gpt.json")
  other = write_config(config, tmp_path / "wide.json")
  grid = sweep.parse_grid(["model.num_layers=1,2", "optim.learning_rate=1e-3,3e-3"])
  runs = sweep.expand([gpt, other], grid, [0, 1], {"train.num_steps": "4"}, "root")
  assert len(runs) == 2 * 2 * 2 * 2
  assert runs[0].name == "gpt-num_layers=1-learning_rate=1e-3-seed=0"
  assert runs[-1].name == "wide-num_layers=2-learning_rate=3e-3-seed=1"
  assert runs[1].workdir == os.path.join("root", "gpt-num_layers=1-learning_rate=1e-3-seed=1")
  assert runs[0].overrides == {
    "train.num_steps": "4",
    "model.num_layers": "1",
    "optim.learning_rate": "1e-3",
    "seed": "0",
  }
  assert len({r.name for r in runs}) == len(runs)
  # One config: names carry the values and seed only; clashing leaves keep more of their key.
  runs = sweep.expand(
    [gpt], sweep.parse_grid(["model.dropout=0.1", "data.order=epochs"]), None, {}, "r"
  )
  assert [r.name for r in runs] == ["dropout=0.1-order=epochs-seed=0"]
  assert sweep._shortest_suffixes(["model.dropout", "data.dropout", "seed2"]) == {
    "model.dropout": "model.dropout",
    "data.dropout": "data.dropout",
    "seed2": "seed2",
  }


def test_sweep_refuses_keys_a_config_lacks_before_anything_runs(config, tmp_path):
  gpt = write_config(config, tmp_path / "gpt.json")
  llama = config_lib.load(os.path.join(ROOT, "configs", "shakespeare_char_llama.py"))
  llama = write_config(llama, tmp_path / "llama.json")
  with pytest.raises(
    UserError, match=r"llama.json cannot take .* unknown config key 'model.use_bias'"
  ):
    sweep.expand([gpt, llama], sweep.parse_grid(["model.use_bias=true,false"]), [0], {}, "r")
  for bad in (["model.num_layers"], ["model.num_layers=1,1"], ["seed=1,2"], ["x=1,,2"]):
    with pytest.raises(UserError):
      sweep.parse_grid(bad)
  with pytest.raises(UserError, match="both swept and fixed"):
    sweep.expand([gpt], {"model.num_layers": ["1"]}, [0], {"model.num_layers": "2"}, "r")
  with pytest.raises(UserError, match="repeats a seed"):
    sweep.parse_seeds("0,1,0")


def test_device_shares_split_cores_or_gpus():
  assert sweep.device_shares(1, [0, 1, 2, 3], ["0", "1"]) == [sweep.Share()]
  assert [s.cores for s in sweep.device_shares(2, [0, 1, 2, 3, 4], [])] == [(0, 1), (2, 3, 4)]
  gpus = sweep.device_shares(4, [0, 1], ["0", "1", "2", "3"])
  assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "1", "2", "3"]
  assert all(s.cores is None for s in gpus)
  with pytest.raises(UserError, match="exceeds the 2 CPU cores"):
    sweep.device_shares(3, [0, 1], [])
  with pytest.raises(UserError, match="exceeds the 1 GPUs"):
    sweep.device_shares(2, [0, 1], ["0"])
