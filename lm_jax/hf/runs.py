"""A Hugging Face model directory as a run at step 0, and a run exported as one."""

import os

import ml_collections

from lm_jax import UserError, checkpoint, checks, lora, records, runs
from lm_jax import state as state_lib
from lm_jax.data import hf_tokenizer, tokenizers
from lm_jax.hf import architectures, peft, weights


def import_hf(hf_dir: str, workdir: str, base_config) -> None:
  """Writes the Hugging Face model in `hf_dir` as a run: config.json, tokenizer.json, step 0.

  The config is `base_config` with the model's config.model (keeping the
  base's dtype, param_dtype, remat and scan_layers) and its tokenizer
  (data.tokenizer='hf'). The weights are read one tensor at a time straight
  into the parameters' dtype and layout.
  """
  if os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} already holds a run: pass a new --workdir.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir {workdir} is a file, not a directory: pass a new directory.")
  config = ml_collections.ConfigDict(base_config.to_dict())
  if lora.settings(config.train.get("lora")) is not None:
    raise UserError(
      "scripts/import_hf.py writes the model as it is, without adapters: import it with "
      "train.lora.rank=0, then train LoRA from the imported run (train.init_from=RUN)."
    )
  model_config = architectures.model_config(hf_dir)
  for key in ("dtype", "param_dtype", "remat", "scan_layers"):
    model_config[key] = config.model.get(key, model_config[key])
  config.model = ml_collections.ConfigDict(model_config)
  config.data.tokenizer, config.data.hf_tokenizer = "hf", os.path.abspath(hf_dir)
  checks.check_config(config)  # The run it writes must be one that trains.
  tokenizer = hf_tokenizer.load_tokenizer(hf_dir)
  # Step 0 of a run whose parameters are the model's: the road of train.init_from, on one device.
  road = ml_collections.ConfigDict(config.to_dict())
  road.train.update(init_from=os.path.abspath(hf_dir), parallel="jit")
  s = state_lib.setup(road, tokenizer.vocab_size, tokenizer)
  state, rng, _, _ = runs.initial_state(s, None)  # Read before anything is written.
  runs.make_workdir(workdir)
  tokenizers.save(tokenizer, os.path.join(workdir, "tokenizer.json"))
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    runs.save_state(ckpt, s.plan, state, rng, 0, {"seed": config.seed, "order": config.data.order})
  finally:
    ckpt.close()  # Waits for the save.
  records.write_config(config, workdir)  # Last: a run directory is complete once it has one.
  records.write_run_info(config, workdir)


def export_hf(
  workdir: str,
  out_dir: str,
  step: int | None = None,
  adapters: bool = False,
  dtype: str | None = None,
) -> list[str]:
  """Writes a run's newest (or given) checkpoint as a Hugging Face directory; returns notes.

  The weights are written in `dtype`, by default the run's model.param_dtype. A LoRA run is
  written merged (the adapted model), or with `adapters` as its adapters alone,
  in PEFT's layout, for the model it started from.
  """
  if not adapters:
    run = runs.load_run(workdir, step)
    return weights.save_model(out_dir, run.model, run.state.params, run.tokenizer, dtype)
  config, model, _, state, *_ = runs.load_run(workdir, step, merge=False)
  s = lora.settings(config.train.get("lora"))
  if s is None:
    raise UserError(
      f"{workdir} is no LoRA run (train.lora.rank is 0), so it has no adapters: export it "
      "without --adapters."
    )
  base = config.train.get("init_from") or None
  if base is not None and not runs.is_run(base):
    peft.save_adapters(out_dir, model, state.params, s, os.path.abspath(base))
    return []
  peft.save_adapters(out_dir, model, state.params, s, None)
  if base is None:
    return [
      f"the adapters apply to {workdir}'s own initial parameters (it has no train.init_from), "
      "which have no Hugging Face copy: export the merged model instead (without --adapters)."
    ]
  return [
    f"the adapters apply to the model of the run {base}: export it with scripts/export_hf.py "
    f"--workdir {base} and load them onto that with peft.PeftModel.from_pretrained."
  ]
