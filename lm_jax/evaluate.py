"""Evaluation from exact sums: loss, perplexity and bits per byte over a whole split."""

import json
import math
import os

import jax
import numpy as np

from lm_jax import UserError, data, losses, parallel, runs
from lm_jax.data import batches, streams


def eval_step(state, batch, axis_name=None):
  """Sums of token losses and weights on `batch` (no dropout)."""
  logits = state.apply_fn({"params": state.params}, batch["inputs"], deterministic=True)
  loss_sum, weight_sum = losses.cross_entropy_sums(logits, batch["targets"], batch["weights"])
  return parallel.psum({"loss_sum": loss_sum, "weight_sum": weight_sum}, axis_name)


def evaluate(
  p_eval_step, state, split: streams.Mixture, seq_len: int, batch_size: int, plan: parallel.Plan
) -> dict:
  """Loss and perplexity over every next-token prediction of each of the split's streams.

  Token-loss sums and counts are added up in float64 on the host, so the result does not
  depend on the batch size or the device count. The 'loss' is the mean of the sources' losses
  weighted as configured (a plain config's one source: its own); named sources (a mixture)
  are reported one by one in 'sources' ({name: metrics}).
  """
  per = {
    n: _evaluate_stream(p_eval_step, state, s, seq_len, batch_size, plan)
    for n, s in split.streams.items()
  }
  loss = split.weighted({n: m["loss"] for n, m in per.items()})
  result = {
    **_metrics(sum(m["loss_sum"] for m in per.values()), sum(m["tokens"] for m in per.values())),
    "loss": loss,
    "perplexity": math.exp(min(loss, 700.0)),
  }
  return {**result, "sources": per} if split.named else result


def _evaluate_stream(p_eval_step, state, tokens, seq_len: int, batch_size: int, plan) -> dict:
  loss_sum, weight_sum = 0.0, 0.0
  rows = plan.rows(batch_size)
  for batch in batches.eval_batches(tokens, seq_len, batch_size):
    batch = jax.tree_util.tree_map(lambda x: x[rows], batch)
    sums = plan.to_host(p_eval_step(state, plan.shard(batch)))
    loss_sum += float(sums["loss_sum"])
    weight_sum += float(sums["weight_sum"])
  return _metrics(loss_sum, weight_sum)


def _metrics(loss_sum: float, weight_sum: float) -> dict:
  loss = loss_sum / weight_sum
  return {
    "loss": loss,
    "perplexity": math.exp(min(loss, 700.0)),
    "tokens": int(weight_sum),
    "loss_sum": loss_sum,
  }


def per_source(metrics: dict, prefix: str = "val_") -> dict:
  """{'val_loss/NAME': loss} for each source of a mixture's metrics; {} otherwise."""
  return {f"{prefix}loss/{n}": m["loss"] for n, m in metrics.get("sources", {}).items()}


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
  'tokens', 'bytes'}. A mixture adds 'sources' ({name: the same keys}); its loss and
  bits_per_byte are the sources' weighted as configured, its tokens and bytes their sums,
  and its perplexity exp(loss). The word tokenizer adds 'word_perplexity' (each end of
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
  result = {"split": split, "step": step, **_report(m, tokenizer, tokens[split])}
  if tokenizer.unit != "token":  # Each id is a word: the perplexity per word.
    result[f"{tokenizer.unit}_perplexity"] = m["perplexity"]
  if tokenizer.note:
    result["note"] = tokenizer.note
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_{split}_{step}.json"), "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  return result


def _report(m: dict, tokenizer, split: streams.Mixture) -> dict:
  """Loss, perplexity, bits per byte, tokens and bytes of one evaluated split.

  Named sources each get the same keys in 'sources'; the split's bits_per_byte is theirs
  weighted as configured, its bytes their sum.
  """
  per = {
    n: _stream_report(m["sources"][n] if split.named else m, tokenizer, s)
    for n, s in split.streams.items()
  }
  known = lambda key: all(r[key] is not None for r in per.values())
  result = {
    "loss": m["loss"],
    "perplexity": m["perplexity"],
    "bits_per_byte": split.weighted({n: r["bits_per_byte"] for n, r in per.items()})
    if known("bits_per_byte")
    else None,
    "tokens": m["tokens"],
    "bytes": sum(r["bytes"] for r in per.values()) if known("bytes") else None,
  }
  return {**result, "sources": per} if split.named else result


def _predicted_bytes(tokenizer, tokens) -> int | None:
  """UTF-8 bytes of the text the evaluated predictions stand for: every token after the first,
  or, in a stream with weights (conversations), those that carry weight."""
  weights = getattr(tokens, "weights", None)
  if weights is None:
    return tokenizer.num_bytes(tokens, start=1)
  total = 0
  for at in range(1, len(tokens), 1 << 22):
    ids, w = np.asarray(tokens[at : at + (1 << 22)]), np.asarray(weights[at : at + (1 << 22)])
    part = tokenizer.num_bytes(ids[w > 0])
    if part is None:
      return None
    total += part
  return total


def _stream_report(m: dict, tokenizer, tokens) -> dict:
  num_bytes = _predicted_bytes(tokenizer, tokens)
  return {
    "loss": m["loss"],
    "perplexity": m["perplexity"],
    "bits_per_byte": m["loss_sum"] / math.log(2) / num_bytes if num_bytes else None,
    "tokens": m["tokens"],
    "bytes": num_bytes,
  }
