"""A newly registered model gets every property test the registry's models get."""

import os
import subprocess
import sys

from conftest import ROOT

PROPERTY_FILES = ["tests/integration/models/test_models.py", "tests/integration/test_sample.py"]


def pytest_run(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "LM_JAX_TEST_MODELS": "parallel=helpers.parallel_block:ParallelBlocks"}
  command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
  return subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)


def test_a_registered_plugin_gets_every_property_test():
  listed = pytest_run("--collect-only", *PROPERTY_FILES)
  assert listed.returncode == 0, listed.stdout[-2000:]
  ids = [line for line in listed.stdout.splitlines() if "::" in line]
  params = lambda i: i.partition("[")[2].rstrip("]").split("-")  # A test id's parameters.
  of = lambda name: {i.replace(name, "MODEL") for i in ids if name in params(i)}
  assert len(of("gpt")) >= 10 and of("parallel") == of("gpt")  # Each of GPT's, the plugin's too.
  ran = pytest_run(*PROPERTY_FILES, "-k", "parallel")
  assert ran.returncode == 0, ran.stdout[-3000:]
  assert f"{len(of('parallel'))} passed" in ran.stdout
