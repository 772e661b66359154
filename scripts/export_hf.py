"""Exports a run's newest (or given) checkpoint as a Hugging Face model directory.

  python scripts/export_hf.py --workdir runs/gpt2_shakespeare --out exported/ [--checkpoint_step N]
      [--dtype float32|bfloat16]

Writes config.json, model.safetensors (in the run's model.param_dtype, or
--dtype) and, for data.tokenizer=hf runs, the tokenizer files:
`transformers.AutoModelForCausalLM.from_pretrained(OUT)` and
`AutoTokenizer.from_pretrained(OUT)` load it. gpt, llama and gemma runs only.
"""

import sys

from absl import app, flags

from lm_jax import UserError, console

flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
flags.DEFINE_string("out", None, "The new Hugging Face model directory.", required=True)
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to export (default: the newest).")
flags.DEFINE_enum(
  "dtype", None, ["float32", "bfloat16"], "The weights' dtype (default: model.param_dtype)."
)
flags.DEFINE_bool("verbose", False, "Show the libraries' own logging (also: LM_JAX_VERBOSE=1).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  console.setup(FLAGS.verbose)
  from lm_jax.hf import runs as hf_runs  # Imported late so --help stays fast.

  try:
    notes = hf_runs.export_hf(FLAGS.workdir, FLAGS.out, FLAGS.checkpoint_step, FLAGS.dtype)
  except UserError as e:
    sys.exit(f"error: {e}")
  for note in notes:
    print(f"note: {note}", file=sys.stderr)
  print(f"exported {FLAGS.workdir} to {FLAGS.out}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
