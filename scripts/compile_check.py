"""Compiles a run's train step for a TPU slice on any machine with libtpu; prints one JSON object.

  python scripts/compile_check.py --config configs/llama_1b_tpu.py --topology v5e:4x4
  python scripts/compile_check.py --config CONFIG --topology v5p:2x2x2 --config.mesh.tensor=4
  python scripts/compile_check.py --workdir runs/x --topology v5e:2x4  # a run's config, vocabulary

Fields: topology, chips, device_kind, mesh, per_chip_bytes (arguments, outputs,
temporaries, total: arguments + outputs - donated + temporaries), hbm_bytes, fits,
flops_per_step (XLA's count for the slice), collectives (each collective's count in the
compiled HLO), compile_seconds, and the vocabulary used. Exits 1 with one sentence when the
step does not fit a chip. Needs libtpu: pip install -e .[tpu-compile].
"""

import json
import os
import sys

from absl import app, flags

from lm_jax import UserError, console
from lm_jax import config as config_lib

flags.DEFINE_string("config", None, "Config file: path.py[:arg] or path.json.")
flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:2x4 or v5p:2x2x2.", required=True)
flags.DEFINE_string("workdir", None, "A run whose config (without --config) and tokenizer to use.")
flags.DEFINE_bool("verbose", False, "Show the libraries' own logging (also: LM_JAX_VERBOSE=1).")
FLAGS = flags.FLAGS
OVERRIDES, ARGV = config_lib.split_overrides(sys.argv)


def main(argv):
  del argv
  # Everything but the TPU compiler runs on this host's CPU: no TPU backend, no accelerator.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  console.setup(FLAGS.verbose)
  from lm_jax import compile_check  # pylint: disable=g-import-not-at-top

  try:
    if FLAGS.config:
      config = config_lib.override(config_lib.load(FLAGS.config), OVERRIDES)
    elif FLAGS.workdir:
      config = config_lib.for_workdir(FLAGS.workdir, None, OVERRIDES, list(OVERRIDES))
    else:
      raise UserError("pass --config CONFIG.py (or --workdir of a run).")
    result = compile_check.compile_step(config, FLAGS.topology, FLAGS.workdir or "")
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"config": FLAGS.config or FLAGS.workdir, **result}))
  if result["fits"] is False:
    sys.exit(f"error: {compile_check.shortfall(result)}")


if __name__ == "__main__":
  app.run(main, argv=ARGV)
