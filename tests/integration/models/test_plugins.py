"""A newly registered model gets every property test the registry's models get."""

import os
import subprocess
import sys

from conftest import ROOT

PROPERTY_FILES = ["tests/integration/models/test_models.py", "tests/integration/test_sample.py"]


PLUGIN = {"LM_JAX_TEST_MODELS": "parallel=helpers.parallel_block:ParallelBlocks"}


def params(test_id: str) -> list[str]:
  """A test id's parameters: 'test_x[float32-gpt]' -> ['float32', 'gpt']."""
  return test_id.partition("[")[2].rstrip("]").split("-")


def pytest_run(*args: str, env=PLUGIN) -> subprocess.CompletedProcess:
  env = {**os.environ, **env}
  command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
  return subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)


def test_a_registered_plugin_gets_every_property_test():
  listed = pytest_run("--collect-only", *PROPERTY_FILES)
  assert listed.returncode == 0, listed.stdout[-2000:]
  ids = [line for line in listed.stdout.splitlines() if "::" in line]
  of = lambda name: {i.replace(name, "MODEL") for i in ids if name in params(i)}
  assert len(of("gpt")) >= 10 and of("parallel") == of("gpt")  # Each of GPT's, the plugin's too.
  ran = pytest_run(*PROPERTY_FILES, "-k", "parallel")
  assert ran.returncode == 0, ran.stdout[-3000:]
  assert f"{len(of('parallel'))} passed" in ran.stdout


def test_an_nnx_model_gets_every_property_test_a_linen_model_without_a_cache_gets():
  nnx = {"LM_JAX_TEST_MODELS": "nnx_gpt=helpers.nnx_gpt:GPT"}
  listed = pytest_run("--collect-only", *PROPERTY_FILES, env=nnx)
  ids = [line for line in listed.stdout.splitlines() if "::" in line]
  tests = lambda name: {i.split("[")[0] for i in ids if name in params(i)}
  assert tests("nnx_gpt") == tests("lstm")  # The LSTM is the other model without scan or remat.
  ran = pytest_run(*PROPERTY_FILES, "-k", "nnx_gpt", env=nnx)
  assert ran.returncode == 0, ran.stdout[-3000:]
