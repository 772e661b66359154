"""lm-jax, the installed command: `lm-jax X` is `python scripts/X.py`, flag for flag and run for
run; `lm-jax --help` lists every command; a misspelt one is refused in one line."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers.runs import train_losses

from lm_jax import commands

# The entry point `pip install -e .` puts beside this Python, else the first on PATH.
LM_JAX = shutil.which("lm-jax", path=os.path.dirname(sys.executable)) or "lm-jax"
# Runs `lm_jax.commands.main` on argv, then says whether it imported JAX (what makes a start slow).
HELP = (
  "import sys; from lm_jax.commands import main\n"
  "try:\n  main(sys.argv[1:])\n"
  "except SystemExit:\n  pass\n"
  "print('jax imported' if 'jax' in sys.modules else 'no jax')\n"
)


def run(*argv, timeout=300):
  return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def flags_section(help_text: str, program: str) -> str:
  """The flags a --help lists, their heading (the program's name) left out."""
  flags = help_text[help_text.index("\nflags:\n") :]
  return flags.replace(f"\n{program}:\n", "\n", 1)


def test_every_script_is_a_command():
  scripts = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "scripts", "*.py"))}
  assert set(commands.COMMANDS.values()) == scripts
  assert all("_" not in name for name in commands.COMMANDS)  # Hyphens: lm-jax eval-harness.


def test_help_lists_every_command_with_its_summary():
  r = run(LM_JAX, "--help")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.startswith("usage: lm-jax COMMAND [flags]")
  for name in commands.COMMANDS:
    assert f"  {name}  " in r.stdout
  assert "  train          Trains a language model, or resumes the run in --workdir." in r.stdout
  assert run(LM_JAX, "help").stdout == run(LM_JAX, "-h").stdout == r.stdout
  bare = run(LM_JAX)  # No command: the same list, as a usage error.
  assert bare.returncode == 2 and bare.stderr.strip() == r.stdout.strip() and not bare.stdout


@pytest.mark.parametrize("name", sorted(commands.COMMANDS))
def test_command_help_lists_the_flags_of_its_script_and_imports_no_jax(name):
  module = commands.COMMANDS[name]
  ours = run(sys.executable, "-c", HELP, "lm-jax", name, "--help")
  script = run(sys.executable, f"scripts/{module}.py", "--help")
  assert ours.stdout.strip().endswith("no jax"), ours.stderr[-2000:]
  assert (
    f"\nlm-jax {name}:\n" in ours.stdout and "--[no]verbose: Show the libraries'" in ours.stdout
  )
  assert (
    flags_section(ours.stdout, f"lm-jax {name}")
    == flags_section(script.stdout, f"scripts/{module}.py") + "no jax\n"
  )


def test_train_help_shows_trains_usage_and_flags():
  r = run(LM_JAX, "train", "--help")
  assert r.returncode == 0  # The help asked for is a success (absl alone exits 1).
  assert "lm-jax train --config CONFIG.py --workdir DIR" in r.stdout, r.stderr[-2000:]
  for flag in ("--workdir: Directory for the run's records", "--config: Config file", "--override"):
    assert flag in r.stdout
  assert "--topology" not in r.stdout  # Another command's flag.


@pytest.mark.parametrize(
  "argv, closest",
  [(["trian"], "lm-jax train"), (["eval_harness", "--workdir", "x"], "lm-jax eval-harness")],
)
def test_an_unknown_command_is_refused_in_one_line_naming_the_closest(argv, closest):
  r = run(LM_JAX, *argv)
  assert r.returncode == 2 and not r.stdout
  (line,) = r.stderr.strip().splitlines()
  assert line == f"error: lm-jax has no command {argv[0]!r}: did you mean {closest}?"


def test_a_command_like_nothing_points_to_the_list():
  r = run(LM_JAX, "xyzzy")
  assert r.returncode == 2
  assert r.stderr == "error: lm-jax has no command 'xyzzy': lm-jax --help lists them.\n"


def test_train_command_trains_as_its_script_does(config, tmp_path):
  config.train.update(num_steps=2, eval_every=2, log_every=1)
  spec = tmp_path / "config.json"
  spec.write_text(json.dumps(config.to_dict()))
  workdirs = {}
  for name, program in (
    ("lm-jax", [LM_JAX, "train"]),
    ("script", [sys.executable, "scripts/train.py"]),
  ):
    workdirs[name] = str(tmp_path / name)
    args = ["--config", str(spec), "--workdir", workdirs[name], "--config.seed=3"]
    r = run(*program, *args)
    assert r.returncode == 0, r.stderr[-3000:]
  losses = train_losses(workdirs["lm-jax"])
  assert [step for step, _ in losses] == [1, 2]
  assert losses == train_losses(workdirs["script"])


def test_compare_command_prints_what_its_script_prints(runs):
  root = str(runs[0])
  args = [root, "--group_by", "model.name", "--baseline", "gpt", "--json"]
  script = run(sys.executable, "scripts/compare.py", *args)
  assert script.returncode == 0, script.stderr[-2000:]
  assert json.loads(script.stdout)  # Something to compare.
  assert run(LM_JAX, "compare", *args).stdout == script.stdout
  assert run(sys.executable, "-m", "lm_jax.commands", "compare", *args).stdout == script.stdout
  error = run(LM_JAX, "compare")  # A UserError: one line, exit 1, as from the script.
  assert error.returncode == 1 and error.stderr == run(sys.executable, "scripts/compare.py").stderr
