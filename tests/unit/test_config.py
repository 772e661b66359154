"""Configs: loading, `--config.a.b=value` overrides parsed by the type they replace, unknown
keys and bad values refused, and a workdir's stored config guarded against changes."""

import json
import os

import pytest

from lm_jax import UserError
from lm_jax import config as config_lib


def test_unknown_config_key_is_refused(config):
  with pytest.raises(
    UserError, match=r"unknown config key 'model.depth'; valid keys: .*model.num_layers"
  ):
    config_lib.override(config, {"model.depth": "3"})


def test_overrides_keep_types(config):
  c = config_lib.override(
    config,
    {
      "model.num_layers": "3",
      "optim.learning_rate": "0.1",
      "model.use_bias": "true",
      "data.tokenizer": "char",
    },
  )
  assert (c.model.num_layers, c.optim.learning_rate, c.model.use_bias) == (3, 0.1, True)
  with pytest.raises(UserError, match="not a valid int"):
    config_lib.override(config, {"model.num_layers": "four"})


@pytest.mark.parametrize(
  "key, text, value",
  [
    ("model.num_layers", "-2", -2),
    ("optim.learning_rate", "3e-4", 3e-4),
    ("optim.learning_rate", "1", 1.0),  # A float stays a float.
    ("model.use_bias", "1", True),
    ("model.use_bias", "False", False),
    ("data.tokenizer", "3", "3"),  # A string stays a string.
    ("train.profile_steps", "[2, 3]", [2, 3]),  # Lists and others: Python literals.
  ],
)
def test_overrides_parse_by_the_type_they_replace(config, key, text, value):
  c = config_lib.override(config, {key: text})
  assert config_lib.get(c, key) == value and type(config_lib.get(c, key)) is type(value)
  assert config_lib.differences(config, c) == (
    [] if config_lib.get(config, key) == value else [key]
  )


@pytest.mark.parametrize(
  "key, text, kind",
  [
    ("model.use_bias", "yes", "bool"),
    ("optim.learning_rate", "fast", "float"),
    ("model.num_layers", "2.5", "int"),
    ("train.profile_steps", "[2,", "list"),
  ],
)
def test_a_bad_value_is_refused_with_what_it_replaces(config, key, text, kind):
  with pytest.raises(UserError, match=rf"--config.{key}='.*' is not a valid {kind}: it replaces"):
    config_lib.override(config, {key: text})


def test_override_leaves_the_config_it_was_given_alone(config):
  before = config.to_dict()
  config_lib.override(config, {"model.num_layers": "7", "train.num_steps": "1"})
  assert config.to_dict() == before


def test_split_overrides_takes_config_flags_out_of_argv():
  argv = ["--workdir", "w", "--config.model.num_layers=3", "--config.seed", "5", "--verbose"]
  overrides, rest = config_lib.split_overrides(argv)
  assert overrides == {"model.num_layers": "3", "seed": "5"}
  assert rest == ["--workdir", "w", "--verbose"]
  assert config_lib.split_overrides(["--config.data.tokenizer="]) == ({"data.tokenizer": ""}, [])


def test_load_reads_python_presets_and_json_and_explains_failures(tmp_path):
  spec = tmp_path / "c.py"
  spec.write_text(
    "import ml_collections\n"
    "def get_config(arg='a'):\n"
    "  return ml_collections.ConfigDict({'name': arg, 'n': 1})\n"
  )
  assert config_lib.load(str(spec)).to_dict() == {"name": "a", "n": 1}
  assert config_lib.load(f"{spec}:b").name == "b"  # 'path.py:arg' is get_config(arg).
  (tmp_path / "c.json").write_text(json.dumps({"x": {"y": 2}}))
  assert config_lib.load(str(tmp_path / "c.json")).x.y == 2
  with pytest.raises(UserError, match="no config file at .*nope.py: check --config"):
    config_lib.load(str(tmp_path / "nope.py"))
  (tmp_path / "bare.py").write_text("X = 1\n")
  with pytest.raises(UserError, match="defines no get_config()"):
    config_lib.load(str(tmp_path / "bare.py"))
  (tmp_path / "missing.py").write_text("import lm_jax_no_such_module\n")
  with pytest.raises(UserError, match="imports 'lm_jax_no_such_module', which is not installed"):
    config_lib.load(str(tmp_path / "missing.py"))


def stored_run(config, tmp_path) -> str:
  """A workdir holding config.json, as a started run leaves it."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  return str(workdir)


def test_a_workdirs_config_resumes_and_refuses_changed_keys(config, tmp_path):
  workdir = stored_run(config, tmp_path)
  assert config_lib.for_workdir(workdir, None, {}, []) == config
  assert config_lib.for_workdir(workdir, None, {"seed": str(config.seed)}, []) == config
  with pytest.raises(
    UserError,
    match=r"keys that differ: model.num_layers, seed\. .* --override=model.num_layers,seed",
  ):
    config_lib.for_workdir(workdir, None, {"seed": "9", "model.num_layers": "5"}, [])
  longer = config_lib.for_workdir(workdir, None, {"train.num_steps": "99"}, ["train.num_steps"])
  assert longer.train.num_steps == 99 and config_lib.differences(config, longer) == [
    "train.num_steps"
  ]
  spec = tmp_path / "other.json"  # A --config that changes the stored one is refused too.
  spec.write_text(config_lib.override(config, {"optim.learning_rate": "0.5"}).to_json())
  with pytest.raises(UserError, match="keys that differ: optim.learning_rate"):
    config_lib.for_workdir(workdir, str(spec), {}, [])


def test_a_new_workdir_needs_a_config(config, tmp_path):
  spec = tmp_path / "c.json"
  spec.write_text(config.to_json())
  new = str(tmp_path / "new")
  c = config_lib.for_workdir(new, str(spec), {"train.num_steps": "3"}, [])
  assert c.train.num_steps == 3 and not os.path.exists(new)
  with pytest.raises(UserError, match="holds no run to resume: pass --config"):
    config_lib.for_workdir(new, None, {}, [])
