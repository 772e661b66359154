"""What a run trains for: an objective ties a kind of data to the loss and the evaluation.

  lm    next-token cross-entropy on windows of token streams (pre-training, fine-tuning,
        instruction tuning): language.py
  dpo   preference pairs, DPO's loss (or IPO's, SimPO's) against the frozen starting model:
        preference.py
  grpo  prompts, completions sampled each step with the current parameters and scored by reward
        functions, GRPO's clipped objective: grpo.py

`train.objective` names it. `make(config, workdir)` reads the objective's data (and the
tokenizer); once the setup exists, `bind(setup)` lays its evaluation out for the devices. The
training loop then asks it, and nothing else, about data and evaluation:

  tokenizer, fingerprints()   the tokenizer and the sha256 of each split's tokens
  steps_per_epoch(config)     what one pass over the train split takes (train.num_epochs)
  batch(step)                 this process's rows of the batch of `step`, a pure function of
                              (config.seed, step), so a resumed run sees the batches it would have
  loss                        what the train step takes the mean of (losses.CrossEntropy's API)
  evaluate(state)             metrics over the whole validation split, 'loss' among them
  logged(metrics)             those metrics as the loop writes them ('val_loss', ...)
  describe()                  the evaluation in words (run.json)
  complete(state, batch, step, rng)  (grpo) the batch of `step` completed by sampling with the
                              current parameters, and host metrics to log with the step's
"""

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.objectives import grpo, language, preference

OBJECTIVES = {"lm": language.LanguageModel, "dpo": preference.Preference, "grpo": grpo.GRPO}


def check_config(config) -> None:
  """Refuses a train.objective, or an objective's own keys, it cannot train."""
  name = config.train.get("objective", "lm")
  config_lib.check_choice("train.objective", name, OBJECTIVES)
  OBJECTIVES[name].check_config(config)


def make(config, workdir: str):
  """The objective train.objective names, with its data read (and cached) for `workdir`."""
  return OBJECTIVES[config.train.get("objective", "lm")](config, workdir)


def loss(setup):
  """The loss the train step of `setup` takes the mean of."""
  return OBJECTIVES[setup.config.train.get("objective", "lm")].loss_of(setup)


def needs_reference(config) -> bool:
  """Whether a run keeps a frozen copy of its starting model's parameters beside those it
  trains (the reference of preference tuning, when no LoRA adapters leave the model frozen)."""
  cls = OBJECTIVES.get(config.train.get("objective", "lm"))
  if cls is None:
    raise UserError(f"unknown train.objective {config.train.objective!r}.")
  return cls.needs_reference(config)
