"""Evaluation from exact sums: loss, perplexity and bits per byte over a whole split.

Three protocols (config.eval) cut a split into model inputs: consecutive windows of seq_len,
each from an empty context (the default); `eval.carry`: eval_batch_size contiguous streams
whose recurrent state is carried from window to window (PyTorch's word_language_model); and
`eval.stride`: sliding windows every `stride` tokens, each token scored once (Hugging Face's
perplexity guide). Every figure is recorded with the protocol that produced it.
"""

import dataclasses
import json
import math
import os
from collections.abc import Callable

import jax
import numpy as np

from lm_jax import UserError, data, losses, models, parallel, runs
from lm_jax.data import batches, streams


def eval_step(state, batch, axis_name=None):
  """Sums of token losses and weights on `batch` (no dropout)."""
  logits = state.apply_fn(state.variables(state.params), batch["inputs"], deterministic=True)
  return _sums(logits, batch, axis_name)


def carried_eval_step(state, batch, carry, axis_name=None):
  """eval_step from a recurrent model's `carry`; returns (sums, the carry after the batch)."""
  logits, carry = state.apply_fn(
    state.variables(state.params), batch["inputs"], deterministic=True, cache=carry
  )
  return _sums(logits, batch, axis_name), carry


def _sums(logits, batch, axis_name):
  loss_sum, weight_sum = losses.cross_entropy_sums(logits, batch["targets"], batch["weights"])
  return parallel.psum({"loss_sum": loss_sum, "weight_sum": weight_sum}, axis_name)


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How a split becomes model inputs: 'windows', 'carried' or 'strided' (module docstring)."""

  kind: str = "windows"
  stride: int = 0
  init_carry: Callable | None = None  # carried: rows -> the model's state at a stream's start.

  def describe(self, seq_len: int, batch_size: int) -> str:
    """The protocol in words, as recorded beside its figures."""
    if self.kind == "carried":
      return (
        f"carried: {batch_size} contiguous streams, the state carried across windows of "
        f"{seq_len} tokens"
      )
    if self.kind == "strided":
      return (
        f"strided: windows of {seq_len} tokens every {self.stride}, each token scored once "
        f"after at least {seq_len - self.stride} tokens of context (or all before it)"
      )
    return f"windows: consecutive windows of {seq_len} tokens, each from an empty context"

  def compile(self, plan: parallel.Plan):
    """The eval step this protocol runs, compiled for `plan`."""
    if self.kind == "carried":
      return plan.compile_step(carried_eval_step, in_axes=(0, 0, 0), donate=False)
    return plan.compile_step(eval_step, in_axes=(0, 0), donate=False)


def protocol(config, model) -> Protocol:
  """The protocol config.eval names for `model`."""
  e = config.get("eval") or {}
  carry, stride = bool(e.get("carry", False)), int(e.get("stride", 0))
  if carry and stride:
    raise UserError("eval.carry and eval.stride exclude each other: set one of them.")
  if carry:
    if not models.has_carry(model):
      raise UserError(
        f"eval.carry=true needs a recurrent model (one with init_carry); {type(model).__name__} "
        "has none: use eval.stride for a Transformer."
      )
    return Protocol("carried", init_carry=model.init_carry)
  if stride:
    if not 1 <= stride <= config.data.seq_len:
      raise UserError(
        f"eval.stride={stride} is not in [1, data.seq_len={config.data.seq_len}]: "
        f"e.g. {max(config.data.seq_len // 2, 1)}."
      )
    return Protocol("strided", stride=stride)
  return Protocol()


def evaluate(
  p_eval_step,
  state,
  split: streams.Mixture,
  seq_len: int,
  batch_size: int,
  plan: parallel.Plan,
  how: Protocol = Protocol(),
) -> dict:
  """Loss and perplexity over every next-token prediction of each of the split's streams.

  Token-loss sums and counts are added up in float64 on the host, so the result does not
  depend on the device count (nor, for consecutive and strided windows, on the batch size).
  The 'loss' is the mean of the sources' losses weighted as configured (a plain config's one
  source: its own); named sources (a mixture) are reported one by one in 'sources'
  ({name: metrics}). `p_eval_step` is `how.compile(plan)`.
  """
  per = {
    n: _evaluate_stream(p_eval_step, state, s, seq_len, batch_size, plan, how)
    for n, s in split.streams.items()
  }
  loss = split.weighted({n: m["loss"] for n, m in per.items()})
  result = {
    **_metrics(sum(m["loss_sum"] for m in per.values()), sum(m["tokens"] for m in per.values())),
    "loss": loss,
    "perplexity": math.exp(min(loss, 700.0)),
  }
  return {**result, "sources": per} if split.named else result


def _evaluate_stream(p_eval_step, state, tokens, seq_len, batch_size, plan, how) -> dict:
  loss_sum, weight_sum = 0.0, 0.0
  rows = plan.rows(batch_size)
  local = lambda tree: plan.shard(jax.tree_util.tree_map(lambda x: x[rows], tree))
  if how.kind == "carried":
    carry = local(jax.device_get(how.init_carry(batch_size)))
    found = batches.carried_eval_batches(tokens, seq_len, batch_size)
  elif how.kind == "strided":
    found = batches.strided_eval_batches(tokens, seq_len, batch_size, how.stride)
  else:
    found = batches.eval_batches(tokens, seq_len, batch_size)
  for batch in found:
    if how.kind == "carried":
      sums, carry = p_eval_step(state, local(batch), carry)
    else:
      sums = p_eval_step(state, local(batch))
    sums = plan.to_host(sums)
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
  'tokens', 'bytes', 'protocol' (config.eval's, in words)}. A mixture adds 'sources'
  ({name: the same keys}); its loss and bits_per_byte are the sources' weighted as
  configured, its tokens and bytes their sums, and its perplexity exp(loss). The word
  tokenizer adds 'word_perplexity' (each end of document counts as a word, as in PyTorch's
  word_language_model) and a 'note'; its bits_per_byte and bytes are None, since <unk>
  hides the text.
  """
  if split not in data.SPLITS:
    raise UserError(f"unknown split {split!r}: use one of {list(data.SPLITS)}.")
  if parallel_mode not in ("", *parallel.MODES):
    raise UserError(f"--parallel={parallel_mode}: use one of {list(parallel.MODES)}.")
  if batch_size < 0:
    raise UserError(f"--batch_size={batch_size}: give rows per batch, or 0 for the run's own.")
  saved = runs.read_config(workdir)
  batch_size = batch_size or saved.train.eval_batch_size or saved.train.batch_size
  _, tokens = data.prepare(saved.data, workdir, is_writer=False)
  if split not in tokens:
    raise UserError(
      f"the run's data has no {split} split: set data.test_split or "
      f"data.text_files.{split} in its config."
    )
  config, model, tokenizer, state, step, plan = runs.load_run(
    workdir, step, parallel=parallel_mode or saved.train.parallel, batch_size=batch_size
  )
  how = protocol(config, model)
  state = state.replace(carry=None)  # Training's carry is not evaluation's.
  m = evaluate(how.compile(plan), state, tokens[split], config.data.seq_len, batch_size, plan, how)
  result = {"split": split, "step": step, **_report(m, tokenizer, tokens[split])}
  result["protocol"] = how.describe(config.data.seq_len, batch_size)
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
