"""Optimizers and schedules in training: the plateau schedule resumes exactly, z-loss is
reported apart from the cross-entropy."""

from helpers.trees import assert_trees_equal

from lm_jax import records, runs, train


def learning_rates(workdir):
  return [
    (r["step"], r["learning_rate"]) for r in records.read_metrics(workdir) if "learning_rate" in r
  ]


def test_plateau_resumed_equals_unbroken(config, tmp_path):
  config.optim.update(schedule="plateau", learning_rate=0.03, warmup_steps=0, plateau_factor=4.0)
  config.train.update(num_steps=16, log_every=1, eval_every=2, checkpoint_every=4, parallel="pmap")
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)
  lrs = dict(learning_rates(straight))
  # The rule acted before and after the step the resumed run stops at.
  assert lrs[10] < lrs[1] and lrs[16] < lrs[11], lrs
  resumed = str(tmp_path / "resumed")
  config.train.num_steps = 10  # A constant schedule: the step count changes nothing else.
  train.train_and_evaluate(config, resumed)
  config.train.num_steps = 16
  train.train_and_evaluate(config, resumed)
  rows = lambda w: [r for r in records.read_metrics(w) if "train_loss" in r or "val_loss" in r]
  strip = lambda rs: [
    {k: v for k, v in r.items() if "sec" not in k and "per_s" not in k and k != "input_wait_share"}
    for r in rs
  ]
  assert strip(rows(resumed)) == strip(rows(straight))
  a, b = runs.load_run(straight)[3], runs.load_run(resumed)[3]
  assert_trees_equal(a, b)
  assert float(b.schedule_state["lr_scale"]) <= lrs[16] / 0.03 < 1  # Saved and restored.


def test_z_loss_is_logged_apart_and_pulls_log_z_to_zero(config, tmp_path):
  config.train.update(num_steps=30, log_every=10, eval_every=30)
  config.optim.learning_rate = 3e-3
  train.train_and_evaluate(config, str(tmp_path / "plain"))
  config.optim.z_loss = 1.0
  train.train_and_evaluate(config, str(tmp_path / "z"))
  plain = [r for r in records.read_metrics(str(tmp_path / "plain")) if "train_loss" in r]
  z = [r for r in records.read_metrics(str(tmp_path / "z")) if "train_loss" in r]
  assert "z_loss" not in plain[0] and z[0]["z_loss"] > 0
  assert z[-1]["z_loss"] < 0.8 * z[0]["z_loss"]  # A strong z-loss shrinks mean log(Z)^2...
  assert abs(z[-1]["train_loss"] - plain[-1]["train_loss"]) < 0.5  # ...and the CE still falls.
  assert z[-1]["train_loss"] < z[0]["train_loss"]
