"""The shipped configs, and the preset every one of them takes.

A preset is the last comma-separated part of a config's argument:
  python scripts/train.py --config configs/tiny.py:smoke --workdir runs/smoke
  --config configs/word_lstm.py:adam,smoke    --config configs/finetune_hf.py:RUN,smoke

  smoke  the recipe as shipped, shrunk to two steps of 4 x 16 tokens on one device, with a model
         a few units wide (a fine-tune keeps its model's shape): that it runs end to end, in
         seconds. The data stays the recipe's; tests point it at their own text.
"""

from lm_jax import UserError

PRESETS = ("smoke",)
# Shrinks whichever of these keys a model has; everything else stays as shipped.
SMOKE_MODEL = dict(
  num_layers=1,
  num_heads=2,
  num_kv_heads=1,
  head_dim=0,
  d_model=16,
  max_len=16,
  mlp_dim=0,
  embed_size=16,
  hidden_size=16,
)
SMOKE_TRAIN = dict(
  batch_size=4,
  eval_batch_size=0,
  grad_accum_steps=1,
  num_steps=2,
  num_epochs=0,
  log_every=1,
  eval_every=2,
  checkpoint_every=2,
  parallel="jit",
)


def split(arg: str | None) -> tuple[str, str]:
  """A config's argument -> (its own part, the preset ('' for none))."""
  own, _, last = (arg or "").rpartition(",")
  if last in PRESETS:
    return own, last
  return arg or "", ""


def preset(config, arg: str | None):
  """`config` with the preset `arg` names, for a config that takes no argument of its own."""
  own, name = split(arg)
  if own:
    raise UserError(
      f"this config takes no argument but a preset ({', '.join(PRESETS)}), not {own!r}."
    )
  return apply(config, name)


def apply(config, preset: str):
  """`config` with `preset` ('' for none) applied."""
  if preset != "smoke":
    return config
  if not config.train.get("init_from"):  # A fine-tune keeps the shape of what it starts from.
    config.model.update({k: v for k, v in SMOKE_MODEL.items() if k in config.model})
  config.data.seq_len = 16
  if config.data.tokenizer == "sentencepiece":
    config.data.vocab_size = 320  # A small text has too few words for 32k pieces.
  config.train.update(SMOKE_TRAIN)
  if config.train.get("objective") == "grpo":  # Whole groups, and room for prompt and reply.
    config.train.grpo.update(group_size=2, max_new_tokens=8)
    config.data.seq_len = 32
  return config
