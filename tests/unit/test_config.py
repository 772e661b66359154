"""Loading configs and overriding keys the way a new user gets them wrong: each mistake is one
UserError sentence naming the cause and the fix."""

import math

import pytest

from configs import tiny
from lm_jax import UserError
from lm_jax import config as config_lib


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
    match=r"'optim.lr'; valid keys: optim.b1, .*optim.learning_rate, .*optim.weight_decay\.$",
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
