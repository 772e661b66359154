"""The model the harness sees: any lm_jax model and tokenizer as its `TemplateLM` (`LMJax`), and
the programs it runs, compiled once per shape.

The harness asks for three kinds of request, answered as its own Hugging Face backend (`hf`)
answers them, so that the numbers agree with it:

  loglikelihood          log p(continuation | context) and whether greedy decoding gives the
                         continuation; context and continuation are encoded together and split,
                         and an input longer than the model's context keeps its last tokens.
  loglikelihood_rolling  a document's log-likelihood in windows of the model's context, the
                         first conditioned on the prefix token (the end-of-document id), each
                         token predicted once (the harness's get_rolling_token_windows).
  generate_until         the KV-cached sampler (lm_jax/sample.py), greedy or as the task's
                         generation settings say, cut at the first stop sequence; the context
                         keeps its last max_length - max_gen_toks tokens.

Requests are sorted by length and run in batches of `batch_size` rows padded to a power of two
(at most the context), so a task compiles a handful of programs; the batches are split over the
devices of the run's parallel plan.
"""

import contextlib
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models import utils as model_utils

from lm_jax import UserError, parallel, sample

MIN_LENGTH = 16  # The shortest padded length: shorter rows waste little, and compile once.


def padded_length(n: int, max_length: int) -> int:
  """The row length a batch whose longest row holds `n` tokens is padded to."""
  return min(max(MIN_LENGTH, 1 << max(n - 1, 0).bit_length()), max(max_length, n))


def context_length(model, config) -> int:
  """The model's context: its max_len, or the training rows' length for models without one."""
  return int(getattr(model, "max_len", None) or config.data.seq_len)


# The compiled programs.


def _score_step(params, batch, axis_name=None, *, model):
  """Log-probability of each target token and whether it is the argmax."""
  del axis_name
  logits_BxLxV = model.apply({"params": params}, batch["inputs"], deterministic=True)
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
  targets_BxL = batch["targets"]
  logp_BxL = jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  return {"logprob": logp_BxL, "greedy": jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL}


class Programs:
  """The scoring and sampling programs of one model under one plan, compiled once per shape.

  `shapes` records each (kind, padded length, ...) compiled, so a test can count them.
  """

  def __init__(self, model, plan: parallel.Plan):
    self.model, self.plan = model, plan
    self.score = plan.compile_step(
      functools.partial(_score_step, model=model), in_axes=(0, 0), donate=False
    )
    self._generate = {}
    self.shapes = set()

  def generate(self, **statics):
    key = tuple(sorted(statics.items()))
    if key not in self._generate:
      step = functools.partial(sample.batch_step, model=self.model, **statics)
      self._generate[key] = self.plan.compile_step(step, in_axes=(0, 0, None), donate=False)
    return self._generate[key]


def _rows(x, batch_size: int) -> np.ndarray:
  """A step's per-row output (pmap: [devices, rows, ...]) as numpy [batch_size, ...]."""
  x = np.asarray(jax.device_get(x))
  return x.reshape(batch_size, *x.shape[x.ndim - 1 :])


# The model the harness sees.


class LMJax(TemplateLM):
  """An lm_jax model, its parameters (in `programs.plan`'s layout) and tokenizer as a harness LM."""

  def __init__(
    self,
    programs: Programs,
    params,
    tokenizer,
    *,
    batch_size: int,
    max_length: int,
    max_gen_toks: int = 256,
    seed: int = 0,
    progress: bool = True,
    info: dict | None = None,
  ):
    super().__init__()
    programs.plan.check_batch(batch_size, "the harness batch size")
    self.programs, self.params, self.lm_tokenizer = programs, params, tokenizer
    self.batch_size, self.max_length, self._max_gen_toks = batch_size, max_length, max_gen_toks
    self.seed, self.progress, self.info = seed, progress, info or {}
    eod = np.asarray(tokenizer.eod_ids).reshape(-1)
    self._eot = int(eod[0]) if eod.size else 0
    self._eos_id = getattr(tokenizer, "eos_id", None)
    # The harness adds the end-of-text string to the stop sequences; a char tokenizer's
    # end of document (a newline) is text, so it stops only at the task's own sequences.
    self._eos_text = None if self._eos_id is None else tokenizer.decode([self._eos_id])
    self._draws = 0
    self.requests, self.request_sec = 0, 0.0  # Answered so far, and the time spent on them.

  @property
  def eot_token_id(self) -> int:
    return self._eot

  @property
  def max_gen_toks(self) -> int:
    return self._max_gen_toks

  @property
  def tokenizer_name(self) -> str:
    return f"lm_jax-{self.lm_tokenizer.kind}"

  def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
    del add_special_tokens, kwargs  # lm_jax encodes text alone; the prefix token starts a text.
    return [int(i) for i in self.lm_tokenizer.encode(string)]

  def tok_decode(self, tokens, **kwargs) -> str:
    del kwargs
    return self.lm_tokenizer.decode(np.asarray(tokens, np.int32))

  def get_model_info(self) -> dict:
    return dict(self.info)

  def _bar(self, total: int, desc: str):
    return tqdm.tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

  @contextlib.contextmanager
  def _counted(self, requests):
    start = time.perf_counter()
    yield
    self.requests += len(requests)
    self.request_sec += time.perf_counter() - start

  def loglikelihood(self, requests, disable_tqdm: bool = False):
    with self._counted(requests):
      return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    """[(log p, is_greedy)] for (cache key, context ids, continuation ids) requests."""
    del kwargs
    L_max, B = self.max_length, self.batch_size
    rows = []
    for _, context, continuation in requests:
      if len(continuation) > L_max:
        raise UserError(
          f"a continuation of {len(continuation)} tokens exceeds the model's context of {L_max}: "
          "shorten the task's targets, or evaluate a model with a longer context."
        )
      whole = (list(context) + list(continuation))[-(L_max + 1) :]
      rows.append((whole, len(continuation)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    results = [None] * len(rows)
    bar = self._bar(len(rows), "loglikelihood")
    bar.disable = bar.disable or disable_tqdm

    def collect(idx, out):
      logprob, greedy = _rows(out["logprob"], B), _rows(out["greedy"], B)
      for j, i in enumerate(idx):
        n = len(rows[i][0]) - 1
        scored = slice(n - rows[i][1], n)
        results[i] = (
          float(logprob[j, scored].astype(np.float64).sum()),
          bool(greedy[j, scored].all()),
        )
        if requests[i][0] is not None:
          self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
      bar.update(len(idx))

    pending = None
    for start in range(0, len(order), B):
      idx = order[start : start + B]
      L = padded_length(len(rows[idx[0]][0]) - 1, L_max)
      tokens = np.zeros((B, L + 1), np.int32)
      for j, i in enumerate(idx):
        tokens[j, : len(rows[i][0])] = rows[i][0]
      self.programs.shapes.add(("score", B, L))
      batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
      out = self.programs.score(self.params, self.programs.plan.shard(batch))
      if pending is not None:  # One batch in flight while the host prepares the next.
        collect(*pending)
      pending = (idx, out)
    if pending is not None:
      collect(*pending)
    bar.close()
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    with self._counted(requests):
      return self._rolling(requests, disable_tqdm)

  def _rolling(self, requests, disable_tqdm: bool) -> list[float]:
    windows, counts = [], []
    for (text,) in [r.args for r in requests]:
      pairs = lm_eval_utils.get_rolling_token_windows(
        token_list=self.tok_encode(text),
        prefix_token=self.prefix_token_id,
        max_seq_len=self.max_length,
        context_len=1,
      )
      disjoint = [lm_eval_utils.make_disjoint_window(p) for p in pairs]
      windows += [(None, context, continuation) for context, continuation in disjoint]
      counts.append(len(disjoint))
    scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
    totals, at = [], 0
    for request, n in zip(requests, counts, strict=True):
      totals.append(sum(s for s, _ in scores[at : at + n]))
      at += n
      self.cache_hook.add_partial("loglikelihood_rolling", request.args, totals[-1])
    return totals

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    with self._counted(requests):
      return self._generate_all(requests, disable_tqdm)

  def _generate_all(self, requests, disable_tqdm: bool) -> list[str]:
    groups = {}
    for i, r in enumerate(requests):
      key = json.dumps(r.args[1], sort_keys=True, default=str)
      groups.setdefault(key, []).append(i)
    results = [None] * len(requests)
    bar = self._bar(len(requests), "generate_until")
    bar.disable = bar.disable or disable_tqdm
    for idx in groups.values():
      contexts = [requests[i].args[0] for i in idx]
      texts = self._generate_group(contexts, requests[idx[0]].args[1], bar)
      for i, text in zip(idx, texts, strict=True):
        results[i] = text
        self.cache_hook.add_partial("generate_until", requests[i].args, text)
    bar.close()
    return results

  def _sampling(self, gen_kwargs: dict) -> tuple[list[str], int, dict]:
    """(stop sequences, max new tokens, sampler settings) from a task's generation settings."""
    kwargs = dict(model_utils.normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
    until = model_utils.handle_stop_sequences(kwargs.pop("until", None), eos=self._eos_text)
    max_new = int(kwargs.pop("max_gen_toks"))
    do_sample = bool(kwargs.pop("do_sample", False))
    temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
    settings = {
      "temperature": temperature if do_sample else 0.0,
      "top_k": int(kwargs.pop("top_k", 0) or 0),
      "top_p": float(kwargs.pop("top_p", 1.0) or 1.0),
    }
    if kwargs:
      raise UserError(
        f"generation settings {sorted(kwargs)} are not supported by lm_jax's sampler (it takes "
        "until, max_gen_toks, do_sample, temperature, top_k, top_p): remove them from the "
        "task's generation_kwargs."
      )
    if max_new >= self.max_length:
      raise UserError(
        f"max_gen_toks={max_new} leaves no room for a context in the model's {self.max_length} "
        "positions: lower the task's max_gen_toks."
      )
    return until, max_new, settings

  def _generate_group(self, contexts: list[str], gen_kwargs: dict, bar) -> list[str]:
    until, max_new, settings = self._sampling(gen_kwargs)
    max_context = self.max_length - max_new
    prompts = [(self.tok_encode(c) or [self.prefix_token_id])[-max_context:] for c in contexts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    B, texts = self.batch_size, [None] * len(prompts)
    for start in range(0, len(order), B):
      idx = order[start : start + B]
      lengths = np.ones((B,), np.int32)
      lengths[: len(idx)] = [len(prompts[i]) for i in idx]
      P = min(padded_length(int(lengths.max()), self.max_length), max_context)
      prompt_BxP = np.full((B, P), self.prefix_token_id, np.int32)
      for j, i in enumerate(idx):
        prompt_BxP[j, : lengths[j]] = prompts[i]
      # Prefilled at once: a power of two of the shortest prompt; the rest goes token by token.
      prefill = 1 << (int(lengths[: len(idx)].min()).bit_length() - 1)
      statics = {"prefill": prefill, "max_new_tokens": max_new, **settings}
      statics["eos_id"] = -1 if self._eos_id is None else int(self._eos_id)
      self.programs.shapes.add(("generate", B, P, prefill, max_new))
      rng = jax.random.fold_in(jax.random.key(self.seed), self._draws)
      self._draws += 1
      batch = {"prompt": prompt_BxP, "lengths": lengths}
      out = self.programs.generate(**statics)(self.params, self.programs.plan.shard(batch), rng)
      out = _rows(out, B)
      for j, i in enumerate(idx):
        new = out[j, lengths[j] : lengths[j] + max_new]
        if self._eos_id is not None and (new == self._eos_id).any():
          new = new[: np.argmax(new == self._eos_id)]
        texts[i] = model_utils.postprocess_generated_text(self.tok_decode(new), until, None)
      bar.update(len(idx))
    return texts
