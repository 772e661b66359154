"""The scripts as a new user runs them: --help is quick and lists --verbose; each mistake ends in
one `error:` line, a non-zero exit and no traceback, and changes nothing on disk."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from lm_jax import train

SCRIPTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "scripts", "*.py")))
# Runs a script's --help, then says whether it imported JAX (what makes a start slow).
HELP = (
  "import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
  "try:\n  runpy.run_path(sys.argv[0], run_name='__main__')\n"
  "except SystemExit:\n  pass\n"
  "print('jax imported' if 'jax' in sys.modules else 'no jax')\n"
)


def script(*args, timeout=300):
  return subprocess.run(
    [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
  )


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_verbose_and_imports_no_jax(name):
  r = script("-c", HELP, f"scripts/{name}")
  assert "--[no]verbose: Show the libraries' own logging" in r.stdout, r.stderr[-2000:]
  assert r.stdout.strip().endswith("no jax"), r.stderr[-2000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished tiny run, trained once for the module, and a file beside it."""
  from conftest import make_text  # pylint: disable=g-import-not-at-top

  from configs import tiny  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("trained")
  config = tiny.get_config()
  for i, split in enumerate(("train", "validation", "test")):
    (root / f"{split}.txt").write_text(make_text(4000 if split == "train" else 400, seed=i))
    config.data.text_files[split] = str(root / f"{split}.txt")
  config.data.update(dataset="text", cache_dir=str(root / "cache"), seq_len=16)
  config.model.update(d_model=16, max_len=16)
  config.train.update(batch_size=8, num_steps=4, eval_every=4, checkpoint_every=2, parallel="jit")
  train.train_and_evaluate(config, str(root / "run"))
  (root / "file").write_text("not a directory\n")
  return {"run": str(root / "run"), "file": str(root / "file"), "root": str(root)}


def test_a_damaged_newest_checkpoint_is_skipped_by_a_script_without_tracebacks(trained, tmp_path):
  copy = str(tmp_path / "run")
  shutil.copytree(trained["run"], copy)
  data = glob.glob(os.path.join(copy, "checkpoints", "4", "state", "ocdbt.process_0", "d", "*"))
  for path in data:  # Random bytes over every array file, as a disk returning garbage.
    with open(path, "r+b") as f:
      f.write(np.random.default_rng(0).bytes(os.path.getsize(path)))
  before = snapshot(copy)
  r = script("scripts/evaluate.py", "--workdir", copy)
  assert r.returncode == 0, r.stderr[-3000:]
  assert '"step": 2' in r.stdout
  assert "checkpoint 4 in" in r.stderr and "using step 2; nothing moved (read-only)" in r.stderr
  assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-3000:]
  after = snapshot(copy)
  assert {k: v for k, v in after.items() if "eval_validation" not in k} == before


def snapshot(path):
  files = (
    glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isdir(path) else [path]
  )
  out = {}
  for p in files:
    if os.path.isfile(p) and os.path.basename(p) != "lock":
      with open(p, "rb") as f:
        out[p] = f.read()
  return out


TRAIN = ["scripts/train.py", "--config", "configs/tiny.py"]
MISTAKES = {
  "batch_size=0": (
    [*TRAIN, "--workdir", "{root}/new", "--config.train.batch_size=0"],
    "error: train.batch_size=0 is not an integer >= 1: change it in the config or with "
    "--config.train.batch_size=VALUE.",
  ),
  "--config DIR": (
    ["scripts/train.py", "--config", "configs", "--workdir", "{root}/new"],
    "error: --config configs is a directory: name a config file in it (configs/",
  ),
  "--workdir FILE": (
    [*TRAIN, "--workdir", "{file}"],
    "error: --workdir {file} is a file, not a directory: pass a directory.",
  ),
  "learning_rate=-1": (
    [*TRAIN, "--workdir", "{root}/new", "--config.optim.learning_rate=-1"],
    "error: optim.learning_rate=-1.0 is not a number >= 0: change it in the config or with "
    "--config.optim.learning_rate=VALUE.",
  ),
  "sample --temperature -1": (
    ["scripts/sample.py", "--workdir", "{run}", "--temperature", "-1"],
    "error: --temperature=-1.0: use a finite temperature >= 0 (0 is greedy, 1 samples the "
    "model's own distribution).",
  ),
  "sample --top_p 1.5": (
    ["scripts/sample.py", "--workdir", "{run}", "--top_p", "1.5"],
    "error: --top_p=1.5: use a probability in (0, 1] (1 keeps every token).",
  ),
  "resume a finished run with a config that does not fit": (
    ["scripts/train.py", "--workdir", "{run}", "--config.model.d_model=32"],
    "error: {run} holds a run with a different config; keys that differ: model.d_model.",
  ),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_a_mistake_ends_in_one_error_line_and_changes_nothing(trained, name):
  argv, expected = MISTAKES[name]
  before = {k: snapshot(trained[k]) for k in ("run", "file")}
  r = script(*[a.format(**trained) for a in argv])
  assert r.returncode == 1, r.stderr[-2000:]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1].startswith(expected.format(**trained)), r.stderr
  assert {k: snapshot(trained[k]) for k in ("run", "file")} == before
  assert not os.path.exists(os.path.join(trained["root"], "new", "config.json"))
