"""What every command shares: --verbose, a quiet console, the backend start, the error exit.

A command (lm_jax/commands/) defines its flags, then calls `cli.run(main)`; `main` catches
nothing: a UserError ends the command with one `error: ...` line on stderr and exit status 1,
no traceback. This module imports only absl and the console, so `--help` stays fast; commands
import JAX and the rest of lm_jax inside `main`.
"""

import sys

from absl import app, flags

from lm_jax import UserError, console

FLAGS = flags.FLAGS


def _define(define, name: str, *args, **kwargs) -> None:
  """Defines a flag as the program's own (listed by its --help), once."""
  if name not in FLAGS:
    define(name, *args, **kwargs, module_name=sys.argv[0])


def define_backend_flags() -> None:
  """The flags of a multi-host run, for scripts that call `start_backend`."""
  _define(flags.DEFINE_string, "coordinator_address", None, "HOST:PORT of process 0, multi-host.")
  _define(flags.DEFINE_integer, "num_processes", None, "Processes in a multi-host run.")
  _define(flags.DEFINE_integer, "process_id", None, "This process's index in [0, num_processes).")
  _define(
    flags.DEFINE_bool,
    "distributed",
    False,
    "Initialize jax.distributed from the cluster's own environment (TPU pod, SLURM, Open MPI) "
    "without --coordinator_address, --num_processes and --process_id.",
  )


def start_backend(config) -> None:
  """Before anything starts JAX's backend (importing Orbax does): joins the other processes of
  a multi-host run, makes a CPU's cores devices where `config` uses them, and turns on the
  persistent compilation cache (train.compilation_cache)."""
  import jax  # pylint: disable=g-import-not-at-top

  from lm_jax import backend, profiling  # pylint: disable=g-import-not-at-top

  backend.initialize_distributed(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
  )
  backend.prepare_cpu_backend(config)
  for option, value in profiling.compilation_cache_options(config).items():
    jax.config.update(option, value)


def run(main, argv: list[str] | None = None) -> None:
  """`app.run(main)` with --verbose, library logging turned down, and UserError as one line."""
  _run(main, main.__module__, argv)


def run_with_overrides(main, argv: list[str] | None = None) -> None:
  """`run` for a command that takes `--config.KEY=VALUE` arguments: absl never sees them, and
  `main(args, overrides)` gets them as {KEY: VALUE}."""
  from lm_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  overrides, argv = config_lib.split_overrides(sys.argv if argv is None else argv)
  _run(lambda args: main(args, overrides), main.__module__, argv)


def _run(main, module: str, argv: list[str] | None) -> None:
  # absl's --help lists the flags of the program it runs (sys.argv[0]: scripts/X.py or
  # `lm-jax X`); the command's own are its module's.
  for flag in FLAGS.get_key_flags_for_module(module):
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  _define(
    flags.DEFINE_bool,
    "verbose",
    False,
    "Show the libraries' own logging (also: LM_JAX_VERBOSE=1).",
  )

  def main_or_error(args):
    console.setup(FLAGS.verbose)
    try:
      return main(args)
    except UserError as e:
      sys.exit(f"error: {e}")

  try:
    app.run(main_or_error, argv=argv)
  except SystemExit as e:  # absl exits 1 after the help it was asked for; that is a success.
    asked = set(sys.argv if argv is None else argv) & {"--help", "-h", "-?", "--helpfull"}
    if asked and e.code == 1:
      sys.exit(0)
    raise
