"""Loading configs (Python or JSON) and applying `--config.a.b=value` overrides."""

import ast
import difflib
import importlib
import importlib.util
import json
import math
import numbers
import os
import traceback

import ml_collections

from lm_jax import UserError

PREFIX = "--config."


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path.py', 'path.py:arg' (get_config(arg)) or 'path.json'."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise UserError(f"no config file at {path}: check --config.")
  if os.path.isdir(path):
    raise UserError(f"--config {path} is a directory: name a config file in it ({_files(path)}).")
  if path.endswith(".json"):
    try:
      with open(path) as f:
        config = json.load(f)
    except ValueError as e:
      raise UserError(f"{path} is not a JSON config ({e}): fix it or pass a .py config.") from e
    if not isinstance(config, dict):
      raise UserError(f"{path} holds a JSON {type(config).__name__}, not a config object: fix it.")
    return ml_collections.ConfigDict(config)
  module_spec = importlib.util.spec_from_file_location("lm_jax_user_config", path)
  if module_spec is None or not path.endswith(".py"):
    raise UserError(
      f"--config {path} is not a .py or .json config file: name one, e.g. "
      "configs/shakespeare_char_gpt_cpu.py."
    )
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise UserError(
        f"{path} defines no get_config(): a config file returns its ConfigDict from get_config()."
      )
    config = module.get_config(arg) if arg else module.get_config()
  except ModuleNotFoundError as e:
    raise UserError(
      f"{path} imports {e.name!r}, which is not installed: install lm_jax with "
      "`pip install -e .` in its checkout (that makes `configs` importable), or put the "
      "module on PYTHONPATH."
    ) from e
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (the config file is the user's code)
    raise UserError(f"{spec} failed: {_where(e, path)}: fix the config file.") from e
  if not isinstance(config, dict | ml_collections.ConfigDict):
    raise UserError(f"{path}: get_config() returned a {type(config).__name__}, not a ConfigDict.")
  return ml_collections.ConfigDict(config)


def _files(directory: str) -> str:
  """The config files in `directory`, a few of them, for a message."""
  names = os.listdir(directory)
  found = sorted(f for f in names if f.endswith((".py", ".json")) and not f.startswith("_"))
  shown = ", ".join(os.path.join(directory, f) for f in found[:4])
  return (shown + (", ..." if len(found) > 4 else "")) or "it holds none"


def _where(e: Exception, path: str) -> str:
  """'Type: message (line N)' of an error raised by the code of the file at `path`."""
  if isinstance(e, SyntaxError):
    return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
  line = None
  for frame in traceback.extract_tb(e.__traceback__):
    if os.path.abspath(frame.filename) == os.path.abspath(path):
      line = frame.lineno
  message = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
  return message + (f" (line {line})" if line else "")


def import_object(name: str, registry: dict, kind: str, key: str, what: str):
  """A `registry` name, or 'package.module:name' imported: the `kind` (model, optimizer) that
  config key `key` names; `what` says what such a name must be, for the refusals."""
  target = registry.get(name, name)
  if not isinstance(target, str):  # The registry holds the object itself.
    return target
  if ":" not in target:
    raise UserError(
      f"unknown {kind} {name!r}: set {key} to one of {sorted(registry)} or name {what} as "
      "'package.module:name'."
    )
  module_name, object_name = target.split(":", 1)
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise UserError(
      f"cannot import {kind} module {module_name!r} ({e}): add the folder that holds it "
      "to PYTHONPATH (e.g. PYTHONPATH=. from that folder)."
    ) from e
  return getattr(module, object_name, None)


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
    value = ast.literal_eval(text)
    if isinstance(current, (list, tuple)) and not isinstance(value, (list, tuple)):
      raise ValueError
    return value
  except (ValueError, SyntaxError, TypeError) as e:
    raise UserError(
      f"--config.{key}={text!r} is not a valid {type(current).__name__}: it replaces {current!r}."
    ) from e


def override(config, overrides: dict[str, str]) -> ml_collections.ConfigDict:
  """Returns a copy of `config` with dotted keys set from their string values.

  Only keys that exist may be set; an unknown key is refused with the closest
  valid ones (else the valid keys of its section).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  valid = flat_keys(config)
  for key, text in overrides.items():
    if key not in valid:
      section = [k for k in valid if k.split(".")[0] == key.split(".")[0]] or valid
      close = difflib.get_close_matches(key, valid, n=3, cutoff=0.8)
      hint = (
        f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(section)}."
      )
      raise UserError(f"unknown config key {key!r}; {hint}")
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
  if not {"model", "data", "optim", "train"} <= set(stored.keys()):
    raise UserError(
      f"{workdir} holds a config.json that is not a training run's (a Hugging Face model "
      "directory?): import one with scripts/import_hf.py, or pass another --workdir."
    )
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


# Checking values: the code that reads a key checks it with these, before anything expensive.


def _refuse(key: str, value, rule: str) -> UserError:
  return UserError(
    f"{key}={value!r} is not {rule}: change it in the config or with --config.{key}=VALUE."
  )


def _rule(kind: str, low, high, above: bool = False, below: bool = False) -> str:
  if low is not None and high is not None:
    return f"{kind} in {'(' if above else '['}{low}, {high}{')' if below else ']'}"
  if low is not None:
    return f"{kind} {'>' if above else '>='} {low}"
  return f"{kind} {'<' if below else '<='} {high}" if high is not None else kind


def check_int(key: str, value, low: int | None = None, high: int | None = None) -> None:
  """Refuses anything but an integer from `low` to `high` (a bound may be None)."""
  integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if not integer or (low is not None and value < low) or (high is not None and value > high):
    raise _refuse(key, value, _rule("an integer", low, high))


def check_number(key: str, value, low=None, high=None, *, above=False, below=False) -> None:
  """Refuses anything but a finite number from `low` to `high`, excluded when `above`/`below`."""
  number = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if (
    not number
    or not math.isfinite(value)
    or (low is not None and (value <= low if above else value < low))
    or (high is not None and (value >= high if below else value > high))
  ):
    raise _refuse(key, value, _rule("a number", low, high, above, below))


def check_bool(key: str, value) -> None:
  if not isinstance(value, bool):
    raise _refuse(key, value, "true or false")


def check_choice(key: str, value, choices) -> None:
  if not isinstance(value, str | int) or value not in choices:
    raise _refuse(key, value, f"one of {list(choices)}")


def check_str(key: str, value) -> None:
  if not isinstance(value, str):
    raise _refuse(key, value, "a string")
