"""The workdir lock: one trainer at a time."""

import os

import pytest

from lm_jax import UserError, runs
from lm_jax.hf import architectures


def test_lock_refuses_a_second_holder_and_is_free_after_release(tmp_path):
  workdir = str(tmp_path)
  with runs.lock_workdir(workdir):
    with pytest.raises(
      UserError, match=rf"in use by a live training run \(host .*, pid {os.getpid()}\)"
    ):
      with runs.lock_workdir(workdir):
        pass
  with runs.lock_workdir(workdir):  # Released: the next trainer takes it.
    pass


@pytest.fixture
def dirs(tmp_path):
  """A file, an empty folder, a run (config.json, checkpoints/) and a Hugging Face folder."""
  (tmp_path / "file").write_text("x")
  (tmp_path / "empty").mkdir()
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  (tmp_path / "run" / "config.json").write_text('{"train": {}}')
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "config.json").write_text('{"model_type": "gpt2"}')
  return {name: str(tmp_path / name) for name in ("file", "empty", "run", "hf", "missing")}


@pytest.mark.parametrize(
  "name, message",
  [
    ("file", r"^--workdir .*file is a file: check --workdir\.$"),
    ("empty", r"^--workdir .*empty holds no training run \(no config.json\): check --workdir\.$"),
    ("missing", r"^--workdir .*missing does not exist: check --workdir\.$"),
    ("hf", r"is a Hugging Face model directory, not a training run: import it first "),
  ],
)
def test_a_workdir_that_holds_no_run_says_what_it_holds(dirs, name, message):
  with pytest.raises(UserError, match=message):
    runs.check_run(dirs[name])
  with pytest.raises(UserError, match=message):
    runs.load_run(dirs[name])


def test_a_run_passes(dirs):
  runs.check_run(dirs["run"])
  runs.check_source(dirs["run"], "train.init_from")
  runs.check_source(dirs["hf"], "train.init_from")


def test_a_workdir_that_is_a_file_is_not_made(dirs):
  with pytest.raises(UserError, match=r"^--workdir .*file is a file, not a directory: pass a"):
    runs.make_workdir(dirs["file"])
  with open(dirs["file"]) as f:
    assert f.read() == "x"  # Nothing lost.
  runs.make_workdir(os.path.join(dirs["empty"], "new"))
  assert os.path.isdir(os.path.join(dirs["empty"], "new"))


def test_an_import_pointed_at_a_run_or_a_broken_folder_says_so(dirs):
  with pytest.raises(UserError, match=r"is an lm_jax training run, not a Hugging Face model"):
    architectures.read_config(dirs["run"])
  with open(os.path.join(dirs["hf"], "config.json"), "w") as f:
    f.write('{"model_type": ')
  with pytest.raises(UserError, match=r"config.json is not JSON \(.*\): is the directory whole"):
    architectures.read_config(dirs["hf"])
  with pytest.raises(UserError, match=r"no directory at .*file: pass a local Hugging Face"):
    architectures.read_config(dirs["file"])
