"""Next-token prediction on token streams: the objective of pre-training and fine-tuning."""

import jax

from lm_jax import UserError, data, evaluate, losses
from lm_jax.data import batches, sources


class LanguageModel:
  """train.objective='lm': windows of the train split's tokens (data.order), the mean
  next-token cross-entropy, evaluation over the whole validation split (config.eval)."""

  def __init__(self, config, workdir: str):
    self.config = config
    is_writer = jax.process_index() == 0
    self.tokenizer, self.tokens = data.prepare(config.data, workdir, is_writer=is_writer)

  @staticmethod
  def check_config(config) -> None:
    """Its keys are the data's and config.eval's, checked with them."""
    fmt = config.data.get("format")
    if fmt in sources.OBJECTIVE_FORMATS:
      objective, file = sources.OBJECTIVE_FORMATS[fmt]
      raise UserError(
        f"data.format={fmt!r} holds records that train.objective='lm' does not read: set "
        f"train.objective={objective!r} ({file} does)."
      )

  @staticmethod
  def needs_reference(config) -> bool:
    del config
    return False

  @staticmethod
  def loss_of(setup):
    return losses.CrossEntropy(setup.config.optim.get("z_loss", 0.0))

  def fingerprints(self) -> dict:
    return data.fingerprints(self.tokens)

  def steps_per_epoch(self, config) -> int:
    c, d = config.train, config.data
    return batches.steps_per_epoch(self.tokens["train"], c.batch_size, d.seq_len, d.order)

  def bind(self, setup) -> "LanguageModel":
    self.config, self.plan = setup.config, setup.plan
    self.loss = self.loss_of(setup)
    self.protocol = evaluate.protocol(setup.config, setup.model)
    self.eval_step = self.protocol.compile(setup.plan)
    return self

  def describe(self) -> str:
    c = self.config
    return self.protocol.describe(c.data.seq_len, c.train.eval_batch_size or c.train.batch_size)

  def batch(self, step: int) -> dict:
    c, d = self.config.train, self.config.data
    rows = self.plan.rows(c.batch_size)
    return batches.train_batch(
      self.tokens["train"], self.config.seed, step, c.batch_size, d.seq_len, rows, d.order
    )

  def evaluate(self, state) -> dict:
    c = self.config
    return evaluate.evaluate(
      self.eval_step,
      state.replace(carry=None),  # Training's carry is not evaluation's.
      self.tokens["validation"],
      c.data.seq_len,
      c.train.eval_batch_size or c.train.batch_size,
      self.plan,
      self.protocol,
    )

  @staticmethod
  def logged(metrics: dict) -> dict:
    per_source = evaluate.per_source(metrics)
    return {"val_loss": metrics["loss"], "val_ppl": metrics["perplexity"], **per_source}
