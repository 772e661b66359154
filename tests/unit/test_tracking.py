"""Weights & Biases without starting it: the keys refused, the offline fallback, the kept id,
and the writer handing its rows to a tracker on process 0 only."""

import json
import os

import jax
import pytest

from configs import tiny
from lm_jax import UserError, checks, network, records, tracking
from lm_jax import config as config_lib
from lm_jax.experiments import sweep


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("train.wandb.project", 3, r"train.wandb.project=3 is not a string"),
    ("train.wandb.mode", "cloud", r"train.wandb.mode='cloud' is not one of \['online', 'offl"),
    ("train.wandb.tags", "a,b", r"train.wandb.tags='a,b' is not a list of strings"),
    ("train.wandb.tags", ["a", 1], r"train.wandb.tags=\['a', 1\] is not a list of strings"),
  ],
)
def test_wandb_keys_of_the_wrong_type_are_refused(key, value, message):
  config = tiny.get_config()
  with config.train.wandb.ignore_type():
    config.train.wandb[key.rpartition(".")[2]] = value
  with pytest.raises(UserError, match=message):
    checks.check_config(config)


def test_a_project_without_wandb_installed_is_refused_with_the_install_command(monkeypatch):
  real = tracking.importlib.util.find_spec
  monkeypatch.setattr(
    tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name)
  )
  config = tiny.get_config()
  checks.check_config(config)  # Off: nothing to install.
  config.train.wandb.project = "p"
  with pytest.raises(UserError, match=r'not installed: pip install -e "\.\[wandb\]"'):
    checks.check_config(config)
  config.train.wandb.mode = "disabled"
  checks.check_config(config)
  del config.train["wandb"]  # A config from before the section: off.
  checks.check_config(config)


def test_online_falls_back_to_offline_with_one_warning_when_the_server_is_unreachable(
  monkeypatch, capsys
):
  probed = []

  def unreachable(urls, timeout=5.0):
    probed.append((list(urls), timeout))
    return "https://api.example.com"

  monkeypatch.setattr(network, "unreachable_host", unreachable)
  assert tracking.resolve_mode("online", "https://api.example.com", "runs/a") == "offline"
  assert probed == [(["https://api.example.com"], 5.0)]
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("warning: W&B's server https://api.example.com")
  assert "`wandb sync runs/a/wandb/offline-run-*`" in err
  monkeypatch.setattr(network, "unreachable_host", lambda urls, timeout=5.0: None)
  assert tracking.resolve_mode("online", "https://api.example.com", "runs/a") == "online"
  monkeypatch.setattr(network, "unreachable_host", lambda *a: pytest.fail("probed"))
  for mode in ("offline", "disabled"):  # Chosen: never probed.
    assert tracking.resolve_mode(mode, "https://api.example.com", "runs/a") == mode
  assert capsys.readouterr().err == ""


def test_the_run_id_is_kept_in_the_workdir(tmp_path):
  assert tracking.kept_id(str(tmp_path)) == "" and not os.listdir(tmp_path)
  first = tracking.run_id(str(tmp_path))
  assert tracking.kept_id(str(tmp_path)) == first
  assert len(first) == 8 and tracking.run_id(str(tmp_path)) == first
  assert sorted(os.listdir(tmp_path / "wandb")) == [tracking.ID_FILE]  # No temporary file left.
  assert tracking.run_id(str(tmp_path / "other")) != first


class FakeTracker:
  """Records what the writer hands a tracker."""

  made = []

  def __init__(self, config, workdir):
    self.calls, self.started = [], False
    FakeTracker.made.append(self)

  def start(self, history):
    self.calls.append(("start", history))
    self.started = True

  def log(self, row):
    self.calls.append(("log", row))

  def finish(self):
    self.calls.append(("finish",))


@pytest.fixture
def fake_tracker(monkeypatch):
  FakeTracker.made = []
  monkeypatch.setattr(tracking, "Tracker", FakeTracker)
  return FakeTracker.made


def test_the_writer_hands_each_row_to_the_tracker_after_its_history(tmp_path, fake_tracker):
  with open(tmp_path / "metrics.jsonl", "w") as f:  # What a resumed run kept.
    f.write(json.dumps({"step": 2, "train_loss": 3.0}) + "\n")
  config = config_lib.override(tiny.get_config(), {"train.wandb.project": "p"})
  writer = records.MetricWriter(str(tmp_path), config)
  writer.write(3, train_loss=2.5)
  writer.write(3, val_loss=2.75)
  writer.close()
  (tracker,) = fake_tracker
  assert tracker.calls == [
    ("start", [{"step": 2, "train_loss": 3.0}]),
    ("log", {"step": 3, "train_loss": 2.5}),
    ("log", {"step": 3, "val_loss": 2.75}),
    ("finish",),
  ]
  off = records.MetricWriter(str(tmp_path / "off"), tiny.get_config())  # No project: none made.
  assert len(fake_tracker) == 1 and off._tracker is None


def test_only_the_first_process_logs_to_wandb(tmp_path, monkeypatch, fake_tracker):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  config = config_lib.override(tiny.get_config(), {"train.wandb.project": "p"})
  writer = records.MetricWriter(str(tmp_path), config)
  writer.write(1, train_loss=2.5)
  writer.close()
  assert fake_tracker == [] and not os.path.exists(tmp_path / "metrics.jsonl")


def test_a_sweep_groups_its_runs_under_the_roots_name(tmp_path):
  spec = str(tmp_path / "c.json")
  with open(spec, "w") as f:
    f.write(tiny.get_config().to_json_best_effort())
  root = str(tmp_path / "lr_sweep")
  runs = sweep.expand([spec], {"optim.learning_rate": ["1e-3", "3e-3"]}, [0], {}, root)
  assert {r.group for r in runs} == {"lr_sweep"}
  assert "--config.train.wandb.group=lr_sweep" in sweep.command(runs[0], "train.py")
  fixed = sweep.expand([spec], {}, [0], {"train.wandb.group": "mine"}, root)
  assert fixed[0].group == "" and "--config.train.wandb.group=mine" in sweep.command(fixed[0], "t")
