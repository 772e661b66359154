"""Loading configs (Python or JSON) and applying `--config.a.b=value` overrides."""

import ast
import importlib.util
import json
import os

import ml_collections

from lm_jax import UserError

PREFIX = "--config."


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path.py', 'path.py:arg' (get_config(arg)) or 'path.json'."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise UserError(f"no config file at {path}: check --config.")
  if path.endswith(".json"):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  module_spec = importlib.util.spec_from_file_location("lm_jax_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except ModuleNotFoundError as e:
    raise UserError(
      f"{path} imports {e.name!r}, which is not installed: install lm_jax with "
      "`pip install -e .` in its checkout (that makes `configs` importable), or put the "
      "module on PYTHONPATH."
    ) from e
  if not hasattr(module, "get_config"):
    raise UserError(
      f"{path} defines no get_config(): a config file returns its ConfigDict from get_config()."
    )
  config = module.get_config(arg) if arg else module.get_config()
  return ml_collections.ConfigDict(config)


def flat_keys(config, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += flat_keys(v, f"{prefix}{k}.")
    else:
      keys.append(f"{prefix}{k}")
  return keys


def _parse(key: str, text: str, current):
  """Parses `text` as the type of the value it replaces."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError
      return text.lower() in ("true", "1")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    return ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise UserError(
      f"--config.{key}={text!r} is not a valid {type(current).__name__}: it replaces {current!r}."
    ) from e


def override(config, overrides: dict[str, str]) -> ml_collections.ConfigDict:
  """Returns a copy of `config` with dotted keys set from their string values.

  Only keys that exist may be set; an unknown key is refused with the list of
  valid ones.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  valid = flat_keys(config)
  for key, text in overrides.items():
    if key not in valid:
      raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}.")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = _parse(key, text, node[leaf])
  return config


def split_overrides(argv: list[str]) -> tuple[dict[str, str], list[str]]:
  """Takes the `--config.KEY=VALUE` arguments out of argv."""
  overrides, rest = {}, []
  it = iter(argv)
  for a in it:
    if a.startswith(PREFIX):
      key, eq, value = a[len(PREFIX) :].partition("=")
      if not eq:
        value = next(it, "")
      overrides[key] = value
    else:
      rest.append(a)
  return overrides, rest


def differences(a, b) -> list[str]:
  """The dotted keys whose values differ between two configs (or exist in one only)."""
  fa = {k: get(a, k) for k in flat_keys(a)}
  fb = {k: get(b, k) for k in flat_keys(b)}
  return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, _MISSING) != fb.get(k, _MISSING))


_MISSING = object()


def get(config, key: str):
  """The value at a dotted key; tuples come back as lists (as JSON stores them)."""
  for part in key.split("."):
    config = config[part]
  return list(config) if isinstance(config, tuple) else config


EPOCH_KEYS = ("num_steps", "eval_every", "checkpoint_every")  # What train.num_epochs sets.


def with_epochs(config, steps_per_epoch: int) -> ml_collections.ConfigDict:
  """A copy of `config` with train.num_steps = train.num_epochs x `steps_per_epoch`, and
  eval_every and checkpoint_every of 0 set to one epoch."""
  config = override(config, {})
  config.train.num_steps = config.train.num_epochs * steps_per_epoch
  for key in EPOCH_KEYS[1:]:
    config.train[key] = config.train[key] or steps_per_epoch
  return config


def check_epoch_keys(config) -> None:
  """Refuses an eval_every or checkpoint_every of 0 (once per epoch) without epochs."""
  zero = [k for k in EPOCH_KEYS[1:] if not config.train[k]]
  if zero:
    raise UserError(f"train.{zero[0]}=0 means once per epoch: set train.num_epochs too.")


def for_workdir(
  workdir: str, spec: str | None, overrides: dict[str, str], may_change: list[str]
) -> ml_collections.ConfigDict:
  """The config of a run in `workdir`: new from `spec`, or the stored one to resume.

  A workdir that already holds config.json resumes with it; a `spec` or
  overrides that change it are refused, except for the keys in `may_change`.
  """
  stored_path = os.path.join(workdir, "config.json")
  if not os.path.exists(stored_path):
    if not spec:
      raise UserError(f"{workdir} holds no run to resume: pass --config CONFIG.py to start one.")
    return override(load(spec), overrides)
  stored = load(stored_path)
  config = override(load(spec) if spec else stored, overrides)
  epochs = stored.train.get("num_epochs")
  if epochs and config.train.get("num_epochs") == epochs:  # What they set, stored resolved.
    for key in EPOCH_KEYS:
      if key == "num_steps" or not config.train[key]:
        config.train[key] = stored.train[key]
  changed = [k for k in differences(stored, config) if k not in may_change]
  if changed:
    raise UserError(
      f"{workdir} holds a run with a different config; keys that differ: "
      f"{', '.join(changed)}. Resume without changing them, pass "
      f"--override={','.join(changed)} to allow it, or use a new --workdir."
    )
  return config
