"""Exports a run's newest (or given) checkpoint as a Hugging Face model directory.

  lm-jax export-hf --workdir runs/gpt2_shakespeare --out exported/ [--checkpoint_step N]
      [--dtype float32|bfloat16]

Writes config.json, model.safetensors (in the run's model.param_dtype, or
--dtype) and, for data.tokenizer=hf runs, the tokenizer files:
`transformers.AutoModelForCausalLM.from_pretrained(OUT)` and
`AutoTokenizer.from_pretrained(OUT)` load it. gpt, llama and gemma runs only.

A LoRA run (train.lora.rank > 0) is written merged: the adapted model. With --adapters, OUT
gets its adapters alone in PEFT's layout (adapter_config.json, adapter_model.safetensors):
`peft.PeftModel.from_pretrained(base, OUT)` applies them to the model the run started from.
"""

import sys

from absl import flags

from lm_jax import cli

flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
flags.DEFINE_string("out", None, "The new Hugging Face model directory.", required=True)
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to export (default: the newest).")
flags.DEFINE_bool("adapters", False, "A LoRA run: write its adapters alone, as PEFT does.")
flags.DEFINE_enum(
  "dtype", None, ["float32", "bfloat16"], "The weights' dtype (default: model.param_dtype)."
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from lm_jax.hf import runs as hf_runs  # Imported late so --help stays fast.

  notes = hf_runs.export_hf(
    FLAGS.workdir, FLAGS.out, FLAGS.checkpoint_step, FLAGS.adapters, FLAGS.dtype
  )
  for note in notes:
    print(f"note: {note}", file=sys.stderr)
  print(f"exported {FLAGS.workdir} to {FLAGS.out}", file=sys.stderr)


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
