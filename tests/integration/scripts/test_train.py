"""scripts/train.py: errors in one line, tiny-shakespeare, a device per CPU core."""

import hashlib
import json
import os
import shlex
import subprocess
import sys

import pytest
from conftest import MANUAL_DIR, ROOT
from helpers.runs import train_losses

from lm_jax import records


def run_script(*args):
  return subprocess.run(
    [sys.executable, "scripts/train.py", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_script_refuses_unknown_key_in_one_line(tmp_path):
  r = run_script(
    "--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.model.depth=2"
  )
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'model.depth'")
  assert "Traceback" not in r.stderr


@pytest.mark.skipif(not MANUAL_DIR, reason="set LM_JAX_MANUAL_DIR to tiny-shakespeare's folder")
@pytest.mark.slow
def test_script_trains_tiny_shakespeare(tmp_path):
  workdir = tmp_path / "run"
  r = run_script(
    "--config",
    "configs/tiny.py",
    "--workdir",
    str(workdir),
    f"--config.data.manual_dir={MANUAL_DIR}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.train.num_steps=40",
    "--config.train.eval_every=20",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  rows = records.read_metrics(str(workdir))
  evals = [r["val_loss"] for r in rows if "val_loss" in r]
  assert len(evals) == 2 and evals[1] < evals[0]
  with open(workdir / "tokenizer.json") as f:
    assert len(json.load(f)["chars"]) == 65


def test_script_makes_each_cpu_core_a_device(config, tmp_path):
  config.train.update(parallel="auto", num_steps=2, eval_every=2, log_every=1)
  spec = tmp_path / "config.json"
  spec.write_text(json.dumps(config.to_dict()))
  # As a user starts it: no simulated devices, no compilation cache named by the tests.
  unset = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
  env = {k: v for k, v in os.environ.items() if k not in unset}
  r = subprocess.run(
    [sys.executable, "scripts/train.py", "--config", str(spec), "--workdir", str(tmp_path / "run")],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  cores = len(os.sched_getaffinity(0))
  expected = max(d for d in range(1, cores + 1) if 8 % d == 0)  # Batch 8 splits evenly.
  info = json.loads((tmp_path / "run" / "run.json").read_text())
  assert info["device_count"] == expected
  if expected > 1:  # A tiny model: auto keeps a replica per core (parallel.resolve_mode).
    assert info["parallel"] == "pmap" and "GFLOP per core" in info["parallel_reason"]
  # The script turned on JAX's compilation cache beside the token cache.
  assert os.listdir(os.path.join(os.environ["XDG_CACHE_HOME"], "lm_jax", "jax_cache"))


@pytest.mark.skipif(not MANUAL_DIR, reason="set LM_JAX_MANUAL_DIR to tiny-shakespeare's folder")
@pytest.mark.slow
def test_readme_main_command_trains_with_an_empty_home_and_no_network(tmp_path):
  """The README's main command, shortened, with nothing in the home directory and TFDS's
  download host unreachable (as it is on these machines): the copy inside lm_jax serves, to the
  tokens and losses of TFDS's own file."""
  with open(os.path.join(ROOT, "README.md")) as f:
    line = next(line for line in f if line.startswith("python scripts/train.py"))
  main = shlex.split(line.split("#")[0])[2:]  # --config CONFIG --workdir DIR
  short = ["--config.train.num_steps=10", "--config.train.eval_every=10"]
  runs = {}
  for name, extra in (("packaged", []), ("manual_dir", [f"--config.data.manual_dir={MANUAL_DIR}"])):
    home = tmp_path / name
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LM_JAX_MANUAL_DIR")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))  # As a new user runs it.
    workdir = str(home / "run")
    command = [sys.executable, "scripts/train.py", *main[:3], workdir, *short, *extra]
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs[name] = (r.stderr, workdir)
  host = tfds_host()
  if host is not None:  # Offline: the copy inside lm_jax, said in one line.
    assert (
      f"{host} cannot be reached: TFDS prepares tiny_shakespeare from the copy"
      in (runs["packaged"][0])
    )
  fingerprints = lambda w: json.load(open(os.path.join(w, "run.json")))["data_fingerprints"]
  assert fingerprints(runs["packaged"][1]) == fingerprints(runs["manual_dir"][1])
  assert train_losses(runs["packaged"][1]) == train_losses(runs["manual_dir"][1])


def tfds_host():
  """TFDS's download host for tiny_shakespeare when it cannot be reached, else None."""
  from lm_jax import network
  from lm_jax.data import tfds

  builder = tfds._builder("tiny_shakespeare", "")
  return network.unreachable_host(builder.url_infos)


def test_the_packaged_corpus_is_the_file_tfds_records():
  from lm_jax.data import tfds

  path = os.path.join(os.path.dirname(tfds.__file__), "tiny_shakespeare", "input.txt")
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  (info,) = tfds._builder("tiny_shakespeare", "").url_infos.values()
  assert digest == info.checksum and os.path.getsize(path) == info.size
