"""Compiles a run's train step for a TPU slice on any machine with libtpu; prints one JSON object.

  lm-jax compile-check --config configs/llama_1b_tpu.py --topology v5e:4x4
  lm-jax compile-check --config CONFIG --topology v5p:2x2x2 --config.mesh.tensor=4
  lm-jax compile-check --workdir runs/x --topology v5e:2x4  # a run's config, vocabulary

Fields: topology, chips, device_kind, mesh, per_chip_bytes (arguments, outputs,
temporaries, total: arguments + outputs - donated + temporaries), hbm_bytes, fits,
flops_per_step (XLA's count for the slice), collectives (each collective's count in the
compiled HLO), compile_seconds, and the vocabulary used. Exits 1 with one sentence when the
step does not fit a chip. Needs libtpu: pip install -e .[tpu-compile].
"""

import json
import os
import sys

from absl import flags

from lm_jax import UserError, cli
from lm_jax import config as config_lib

flags.DEFINE_string("config", None, "Config file: path.py[:arg] or path.json.")
flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:2x4 or v5p:2x2x2.", required=True)
flags.DEFINE_string("workdir", None, "A run whose config (without --config) and tokenizer to use.")
FLAGS = flags.FLAGS


def main(argv, overrides):
  del argv
  # Everything but the TPU compiler runs on this host's CPU: no TPU backend, no accelerator.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from lm_jax import compile_check  # pylint: disable=g-import-not-at-top

  if FLAGS.config:
    config = config_lib.override(config_lib.load(FLAGS.config), overrides)
  elif FLAGS.workdir:
    config = config_lib.for_workdir(FLAGS.workdir, None, overrides, list(overrides))
  else:
    raise UserError("pass --config CONFIG.py (or --workdir of a run).")
  result = compile_check.compile_step(config, FLAGS.topology, FLAGS.workdir or "")
  print(json.dumps({"config": FLAGS.config or FLAGS.workdir, **result}))
  if result["fits"] is False:
    sys.exit(f"error: {compile_check.shortfall(result)}")


def run(argv: list[str] | None = None) -> None:
  cli.run_with_overrides(main, argv)
