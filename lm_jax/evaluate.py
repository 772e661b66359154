"""Evaluation from exact sums: loss, perplexity and bits per byte over a whole split."""

import json
import math
import os

import jax
import numpy as np

from lm_jax import UserError, data, losses, parallel, runs, tokenizers


def eval_step(state, batch, axis_name=None):
  """Sums of token losses and weights on `batch` (no dropout)."""
  logits = state.apply_fn({"params": state.params}, batch["inputs"], deterministic=True)
  loss_sum, weight_sum = losses.cross_entropy_sums(logits, batch["targets"], batch["weights"])
  return parallel.psum({"loss_sum": loss_sum, "weight_sum": weight_sum}, axis_name)


def evaluate(
  p_eval_step, state, tokens: np.ndarray, seq_len: int, batch_size: int, plan: parallel.Plan
) -> dict:
  """Loss and perplexity over every next-token prediction in `tokens`.

  Token-loss sums and counts are added up in float64 on the host, so the
  result does not depend on the batch size or the device count.
  """
  loss_sum, weight_sum = 0.0, 0.0
  rows = plan.rows(batch_size)
  for batch in data.eval_batches(tokens, seq_len, batch_size):
    batch = jax.tree_util.tree_map(lambda x: x[rows], batch)
    sums = plan.to_host(p_eval_step(state, plan.shard(batch)))
    loss_sum += float(sums["loss_sum"])
    weight_sum += float(sums["weight_sum"])
  loss = loss_sum / weight_sum
  return {
    "loss": loss,
    "perplexity": math.exp(min(loss, 700.0)),
    "tokens": int(weight_sum),
    "loss_sum": loss_sum,
  }


def evaluate_run(
  workdir: str,
  split: str = "validation",
  step: int | None = None,
  batch_size: int = 0,
  parallel_mode: str = "",
) -> dict:
  """Evaluates a run's newest (or given) checkpoint on a whole split; writes JSON.

  Returns {'split', 'step', 'loss' (nats per token), 'perplexity',
  'bits_per_byte' (total nats / ln 2 / UTF-8 bytes of the predicted text),
  'tokens', 'bytes'}. The word tokenizer adds 'word_perplexity' (each end of
  document counts as a word, as in PyTorch's word_language_model) and a
  'note'; its bits_per_byte and bytes are None, since <unk> hides the text.
  """
  config, _, tokenizer, state, step = runs.load_run(workdir, step)
  if split not in data.SPLITS:
    raise UserError(f"unknown split {split!r}: use one of {list(data.SPLITS)}.")
  _, tokens = data.prepare(config.data, workdir, is_writer=False)
  if split not in tokens:
    raise UserError(
      f"the run's data has no {split} split: set data.test_split or "
      f"data.text_files.{split} in its config."
    )
  plan = parallel.make_plan(parallel_mode or config.train.parallel, config.mesh)
  batch_size = batch_size or config.train.eval_batch_size or config.train.batch_size
  plan.check_batch(batch_size, "the eval batch size")
  p_eval_step = plan.compile_step(eval_step, in_axes=(0, 0), donate=False)
  m = evaluate(p_eval_step, plan.put(state), tokens[split], config.data.seq_len, batch_size, plan)
  num_bytes = tokenizers.num_bytes(tokenizer, tokens[split], start=1)
  result = {
    "split": split,
    "step": step,
    "loss": m["loss"],
    "perplexity": m["perplexity"],
    "bits_per_byte": m["loss_sum"] / math.log(2) / num_bytes if num_bytes else None,
    "tokens": m["tokens"],
    "bytes": num_bytes,
  }
  if tokenizer.kind == "word":
    result["word_perplexity"] = m["perplexity"]
    result["note"] = (
      "word tokenizer: every token is a word or an end of document; bits_per_byte is not "
      "comparable with other tokenizers (one <unk> id stands for every rare word), so it is "
      "not reported"
    )
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_{split}_{step}.json"), "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  return result
