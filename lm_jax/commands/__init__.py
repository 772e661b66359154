"""The `lm-jax` program: `lm-jax import-hf [flags]` is `python scripts/import_hf.py [flags]`.

Each command is a module here: its docstring, its absl flags and `run(argv)`; the script of
the same name only calls `run`. absl flags are global and commands share names (--config,
--workdir), so importing this package defines none: `main` imports the chosen command alone.
"""

import ast
import difflib
import importlib
import importlib.util
import sys

PROGRAM = "lm-jax"
# Command -> its module in this package, in the order `lm-jax --help` lists them.
COMMANDS = {
  "train": "train",
  "sample": "sample",
  "evaluate": "evaluate",
  "eval-harness": "eval_harness",
  "import-hf": "import_hf",
  "export-hf": "export_hf",
  "prepare-data": "prepare_data",
  "sweep": "sweep",
  "compare": "compare",
  "plot": "plot",
  "benchmark": "benchmark",
  "compile-check": "compile_check",
  "device-check": "device_check",
}


def summary(name: str) -> str:
  """The first line of a command's docstring, read without importing it (and its flags)."""
  with open(importlib.util.find_spec(f"{__name__}.{COMMANDS[name]}").origin) as f:
    return ast.get_docstring(ast.parse(f.read())).splitlines()[0]


def usage() -> str:
  """The usage line and each command with its summary."""
  width = max(map(len, COMMANDS))
  lines = [f"  {name:<{width}}  {summary(name)}" for name in COMMANDS]
  return "\n".join(
    [f"usage: {PROGRAM} COMMAND [flags]  ({PROGRAM} COMMAND --help: its flags)", "", *lines]
  )


def main(argv: list[str] | None = None) -> int:
  """Runs the command that argv[1] names with the rest of argv; the exit status."""
  args = (sys.argv if argv is None else argv)[1:]
  if args[:1] == ["help"] and len(args) > 1:  # lm-jax help train
    args = [args[1], "--help"]
  if args[:1] in (["-h"], ["--help"], ["help"]):
    print(usage())
    return 0
  if not args:
    print(usage(), file=sys.stderr)
    return 2
  name, rest = args[0], args[1:]
  if name not in COMMANDS:
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f"did you mean {PROGRAM} {close[0]}?" if close else f"{PROGRAM} --help lists them."
    print(f"error: {PROGRAM} has no command {name!r}: {hint}", file=sys.stderr)
    return 2
  # What absl's --help and errors name, set before the module defines its flags under it.
  sys.argv = [f"{PROGRAM} {name}", *rest]
  command = importlib.import_module(f"{__name__}.{COMMANDS[name]}")
  sys.modules["__main__"].__doc__ = command.__doc__  # Its --help shows the command's usage.
  command.run(sys.argv)
  return 0
