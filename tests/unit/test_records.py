"""metrics.jsonl read and cut back as a resume needs it, and the config a run writes."""

import json
import os

from lm_jax import config as config_lib
from lm_jax import records


def write_lines(workdir, *lines: str) -> None:
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write("".join(lines))


def row(step, **metrics) -> str:
  return json.dumps({"step": step, **metrics}) + "\n"


def test_read_metrics_skips_a_line_cut_short(tmp_path):
  write_lines(tmp_path, row(1, train_loss=2.5), row(2, train_loss=2.0), '{"step": 3, "train_lo')
  assert records.read_metrics(str(tmp_path)) == [
    {"step": 1, "train_loss": 2.5},
    {"step": 2, "train_loss": 2.0},
  ]
  assert records.read_metrics(str(tmp_path / "nowhere")) == []


def test_truncate_metrics_keeps_the_lines_up_to_the_resumed_step(tmp_path):
  lines = [row(s, train_loss=3.0 - s / 10) for s in range(1, 7)] + [row(6, val_loss=2.2)]
  write_lines(tmp_path, *lines, '{"step": 7, "train')  # Logged after the checkpoint at 4.
  records.truncate_metrics(str(tmp_path), 4)
  with open(tmp_path / "metrics.jsonl") as f:
    assert f.read() == "".join(lines[:4])  # Whole lines, the cut one gone.
  assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]  # No temporary file left.
  records.truncate_metrics(str(tmp_path), 10)  # Nothing past the step: the same lines.
  assert [r["step"] for r in records.read_metrics(str(tmp_path))] == [1, 2, 3, 4]
  records.truncate_metrics(str(tmp_path / "nowhere"), 4)  # No metrics yet: nothing to do.
  assert not os.path.exists(tmp_path / "nowhere")


def test_the_written_config_loads_back_equal(config, tmp_path):
  records.write_config(config, str(tmp_path))
  assert config_lib.load(str(tmp_path / "config.json")) == config
