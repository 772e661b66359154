"""Configs: loading, `--config.a.b=value` overrides parsed by the type they replace, unknown
keys and bad values refused, and a workdir's stored config guarded against changes."""

import json
import math
import os

import pytest

from configs import tiny
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


def test_a_directory_as_config_names_a_file_in_it(tmp_path):
  (tmp_path / "mine.py").write_text("def get_config():\n  return {}\n")
  with pytest.raises(
    UserError, match=rf"--config {tmp_path} is a directory: .* \({tmp_path}/mine.py\)"
  ):
    config_lib.load(str(tmp_path))


@pytest.mark.parametrize(
  "name, text, message",
  [
    ("notes.md", "# not a config", r"is not a \.py or \.json config file"),
    (
      "bad.py",
      "def get_config(:\n",
      r"bad.py failed: SyntaxError: invalid syntax \(line 1\): fix the config file\.$",
    ),
    ("typo.py", "def get_config():\n  return undefined\n", r"NameError: .* \(line 2\)"),
    ("empty.py", "x = 1\n", r"defines no get_config\(\)"),
    ("bad.json", '{"a": ', r"bad.json is not a JSON config \(Expecting"),
    ("list.json", "[1, 2]", r"list.json holds a JSON list, not a config object"),
    ("none.py", "def get_config():\n  return None\n", r"returned a NoneType, not a ConfigDict"),
  ],
)
def test_a_config_file_that_cannot_load_is_named_with_its_error(tmp_path, name, text, message):
  (tmp_path / name).write_text(text)
  with pytest.raises(UserError, match=message):
    config_lib.load(str(tmp_path / name))


def test_a_preset_argument_the_config_does_not_take_is_refused(tmp_path):
  (tmp_path / "c.py").write_text("def get_config():\n  return {'a': 1}\n")
  with pytest.raises(UserError, match=r"c.py:x failed: TypeError: .*fix the config file"):
    config_lib.load(f"{tmp_path}/c.py:x")


def test_a_config_files_own_user_error_passes_unchanged(tmp_path):
  (tmp_path / "c.py").write_text(
    "from lm_jax import UserError\ndef get_config(a=None):\n  raise UserError('name a model.')\n"
  )
  with pytest.raises(UserError, match=r"^name a model\.$"):
    config_lib.load(str(tmp_path / "c.py"))


@pytest.mark.parametrize(
  "key, text, message",
  [
    ("train.batch_size", "abc", r"'abc' is not a valid int: it replaces 8"),
    ("train.batch_size", "1.5", r"is not a valid int"),
    ("model.use_bias", "maybe", r"is not a valid bool"),
    ("train.profile_steps", "5", r"is not a valid list"),
    ("train.profile_steps", "[1,", r"is not a valid list"),
  ],
)
def test_an_override_of_the_wrong_type_is_refused(key, text, message):
  with pytest.raises(UserError, match=message):
    config_lib.override(tiny.get_config(), {key: text})


def test_an_unknown_key_suggests_the_close_one_or_lists_its_section():
  with pytest.raises(
    UserError, match=r"'train.batchsize'; did you mean train.batch_size or train.eval_batch_size\?"
  ):
    config_lib.override(tiny.get_config(), {"train.batchsize": "8"})
  with pytest.raises(
    UserError,
    match=r"'optim.lr'; valid keys: optim.adam_learning_rate, optim.b1, .*optim.weight_decay\b",
  ):
    config_lib.override(tiny.get_config(), {"optim.lr": "0.1"})


@pytest.mark.parametrize(
  "check, value, message",
  [
    (lambda v: config_lib.check_int("k", v, 1), 0, r"k=0 is not an integer >= 1: change it"),
    (lambda v: config_lib.check_int("k", v, 1), 2.0, r"k=2.0 is not an integer >= 1"),
    (lambda v: config_lib.check_int("k", v, 1), True, r"k=True is not an integer"),
    (lambda v: config_lib.check_int("k", v, 0, 9), 10, r"k=10 is not an integer in \[0, 9\]"),
    (lambda v: config_lib.check_number("k", v, 0, above=True), 0, r"is not a number > 0"),
    (lambda v: config_lib.check_number("k", v, 0, above=True), math.nan, r"k=nan is not"),
    (lambda v: config_lib.check_number("k", v, 0, 1, below=True), 1, r"in \[0, 1\)"),
    (lambda v: config_lib.check_number("k", v), "1", r"k='1' is not a number"),
    (lambda v: config_lib.check_bool("k", v), 1, r"k=1 is not true or false"),
    (lambda v: config_lib.check_choice("k", v, ("a", "b")), "c", r"is not one of \['a', 'b'\]"),
    (lambda v: config_lib.check_choice("k", v, ("a", "b")), ["a"], r"is not one of"),
    (lambda v: config_lib.check_str("k", v), 3, r"k=3 is not a string"),
  ],
)
def test_value_checks_name_the_key_the_rule_and_the_flag(check, value, message):
  with pytest.raises(UserError, match=message):
    check(value)
  with pytest.raises(UserError, match=r"--config\.k=VALUE\.$"):
    check(value)


def test_value_checks_accept_what_is_in_range():
  config_lib.check_int("k", 1, 1)
  config_lib.check_number("k", 1, 0, above=True)  # An integer is a number.
  config_lib.check_number("k", 0.5, 0, 1, below=True)
  config_lib.check_bool("k", False)
  config_lib.check_choice("k", "a", ("a",))
  config_lib.check_str("k", "")


def test_resuming_a_folder_that_holds_another_kind_of_config_json_is_refused(tmp_path):
  (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
  with pytest.raises(UserError, match=r"holds a config.json that is not a training run's"):
    config_lib.for_workdir(str(tmp_path), None, {}, [])
