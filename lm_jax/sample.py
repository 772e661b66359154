"""Model-agnostic sampling over `step_fn(tokens_BxL, cache) -> (logits_BxLxV, cache)`.

A model with `init_cache(batch_size, length)` decodes incrementally: the
Transformer caches keys and values, the LSTM its carries. Any other causal
model falls back to `full_forward_step_fn`, which reruns the whole sequence
each step.
"""

import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax import UserError


def filter_logits(logits_BxV, temperature, top_k: int, top_p):
  """Scales by temperature, then keeps the top_k tokens and the top_p nucleus.

  top_k=0 (or at least V) and top_p>=1 switch those filters off. The nucleus is the smallest
  set of most likely tokens whose probabilities sum to at least top_p.
  Excluded tokens get -inf.
  """
  logits_BxV = logits_BxV.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
  if 0 < top_k < logits_BxV.shape[-1]:
    kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # Mass of the more likely tokens.
  kept_BxV = (before_BxV < top_p) | (top_p >= 1.0)
  threshold_Bx1 = jnp.min(jnp.where(kept_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV < threshold_Bx1, -jnp.inf, logits_BxV)


def sample_token(logits_BxV, rng, temperature, top_k: int, top_p):
  """Draws one token per row; temperature 0 means greedy (argmax)."""
  greedy_B = jnp.argmax(logits_BxV, axis=-1)
  drawn_B = jax.random.categorical(rng, filter_logits(logits_BxV, temperature, top_k, top_p))
  return jnp.where(temperature > 0, drawn_B, greedy_B).astype(jnp.int32)


def sample(
  step_fn,
  cache,
  prompt_BxP,
  lengths_B,
  rng,
  *,
  min_len: int,
  max_new_tokens: int,
  temperature=1.0,
  top_k: int = 0,
  top_p=1.0,
  eos_id: int | tuple[int, ...] = -1,
):
  """Continues each prompt by `max_new_tokens` tokens inside one `lax.while_loop`.

  Args:
    step_fn: (tokens_BxL, cache) -> (logits_BxLxV, cache), for the tokens that
      follow those already in the cache.
    cache: the empty cache, with room for P + max_new_tokens positions.
    prompt_BxP: prompts, right-padded; row b holds lengths_B[b] >= 1 tokens.
    min_len: min(lengths_B), a Python int: that many tokens are prefilled in
      one call; longer prompts are fed on token by token, then sampling starts.
    eos_id: rows stop after emitting it, or any of several (-1 or (): none).

  Returns:
    int32[B, P + max_new_tokens]: row b's prompt, then its new tokens from
    position lengths_B[b] on.
  """
  B, P = prompt_BxP.shape
  T = P + max_new_tokens
  stop = tuple(i for i in ((eos_id,) if isinstance(eos_id, int) else eos_id) if i >= 0)
  out_BxT = jnp.zeros((B, T), jnp.int32).at[:, :P].set(prompt_BxP)
  logits_BxLxV, cache = step_fn(prompt_BxP[:, :min_len], cache)
  end_B = lengths_B + max_new_tokens

  def cond(carry):
    t, _, _, _, _, done_B = carry
    return (t < T) & ~jnp.all(done_B)

  def body(carry):
    t, out_BxT, cache, logits_BxV, rng, done_B = carry
    rng, key = jax.random.split(rng)
    drawn_B = sample_token(logits_BxV, key, temperature, top_k, top_p)
    in_prompt_B = t < lengths_B
    token_B = jnp.where(in_prompt_B, out_BxT[:, t], drawn_B)
    token_B = jnp.where(done_B, stop[0] if stop else 0, token_B)
    out_BxT = jax.lax.dynamic_update_slice(out_BxT, token_B[:, None], (0, t))
    stopped_B = jnp.isin(token_B, jnp.array(stop, jnp.int32)) if stop else False
    done_B = done_B | (~in_prompt_B & stopped_B) | (t + 1 >= end_B)
    logits_BxLxV, cache = step_fn(token_B[:, None], cache)
    return t + 1, out_BxT, cache, logits_BxLxV[:, -1], rng, done_B

  done_B = jnp.zeros((B,), bool)
  carry = (jnp.int32(min_len), out_BxT, cache, logits_BxLxV[:, -1], rng, done_B)
  return jax.lax.while_loop(cond, body, carry)[1]


def full_forward_step_fn(apply_fn, batch_size: int, length: int):
  """(step_fn, cache) that recompute the whole sequence each step: for any causal model."""
  cache = {"tokens": jnp.zeros((batch_size, length), jnp.int32), "pos": jnp.zeros((), jnp.int32)}

  def step_fn(tokens_BxL, cache):
    buffer_BxT = jax.lax.dynamic_update_slice(cache["tokens"], tokens_BxL, (0, cache["pos"]))
    logits_BxTxV = apply_fn(buffer_BxT)
    L = tokens_BxL.shape[1]
    logits_BxLxV = jax.lax.dynamic_slice_in_dim(logits_BxTxV, cache["pos"], L, axis=1)
    return logits_BxLxV, {"tokens": buffer_BxT, "pos": cache["pos"] + L}

  return step_fn, cache


def decoder(model, params, batch_size: int, length: int, use_cache: bool = True):
  """(step_fn, empty cache) of `model` for `length` positions: its own cache where it has
  `init_cache` (and `use_cache`), else the full forward pass at each step."""
  if use_cache and hasattr(model, "init_cache"):
    step_fn = lambda tokens, cache: model.apply({"params": params}, tokens, cache=cache)
    return step_fn, model.init_cache(batch_size, length)
  apply_fn = lambda tokens: model.apply({"params": params}, tokens)
  return full_forward_step_fn(apply_fn, batch_size, length)


def batch_step(params, batch, rng, axis_name=None, *, model, prefill, max_new_tokens, **kw):
  """`sample` of batch['prompt'] (lengths batch['lengths']) by `model` with `params`, as a step
  a parallel.Plan compiles: under pmap each device draws its own rows. Returns int32[B, P +
  max_new_tokens]; `kw` are `sample`'s settings (temperature, top_k, top_p, eos_id)."""
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  B, P = batch["prompt"].shape
  step_fn, cache = decoder(model, params, B, P + max_new_tokens)
  return sample(
    step_fn,
    cache,
    batch["prompt"],
    batch["lengths"],
    rng,
    min_len=prefill,
    max_new_tokens=max_new_tokens,
    **kw,
  )


@functools.partial(
  jax.jit, static_argnames=("model", "min_len", "max_new_tokens", "top_k", "eos_id", "use_cache")
)
def _generate(
  model,
  params,
  prompt_BxP,
  lengths_B,
  rng,
  temperature,
  top_p,
  *,
  min_len,
  max_new_tokens,
  top_k,
  eos_id,
  use_cache,
):
  B, P = prompt_BxP.shape
  step_fn, cache = decoder(model, params, B, P + max_new_tokens, use_cache)
  return sample(
    step_fn,
    cache,
    prompt_BxP,
    lengths_B,
    rng,
    min_len=min_len,
    max_new_tokens=max_new_tokens,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    eos_id=eos_id,
  )


def check_settings(max_new_tokens: int, temperature, top_k: int, top_p) -> None:
  """Refuses sampling settings outside their range, naming the flag to change."""
  bad = [
    (max_new_tokens < 1, f"--max_new_tokens={max_new_tokens}: draw at least 1 token"),
    (
      not temperature >= 0 or math.isinf(temperature),
      f"--temperature={temperature}: use a "
      "finite temperature >= 0 (0 is greedy, 1 samples the model's own distribution)",
    ),
    (top_k < 0, f"--top_k={top_k}: use 0 (every token) or a count >= 1"),
    (not 0 < top_p <= 1, f"--top_p={top_p}: use a probability in (0, 1] (1 keeps every token)"),
  ]
  for is_bad, message in bad:
    if is_bad:
      raise UserError(f"{message}.")


def read_prompts(prompt: str, prompt_file: str | None, num_samples: int) -> list[str]:
  """The texts to continue: `prompt`, or each line of `prompt_file` (\\n escapes a newline),
  each `num_samples` times; an empty one starts from a newline."""
  if num_samples < 1:
    raise UserError(f"--num_samples={num_samples}: draw at least 1 sample per prompt.")
  texts = [prompt]
  if prompt_file:
    try:
      with open(prompt_file) as f:
        texts = [line.rstrip("\n").replace("\\n", "\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise UserError(f"cannot read --prompt_file {prompt_file} ({e}): check the path.") from e
    if not texts:
      raise UserError(f"--prompt_file {prompt_file} holds no prompt: write one per line.")
  return [t or "\n" for t in texts for _ in range(num_samples)]


def generate(
  model,
  params,
  prompts: list,
  rng,
  *,
  max_new_tokens: int,
  temperature=1.0,
  top_k: int = 0,
  top_p=1.0,
  eos_id=None,
  long_prompt: str = "trim",
  use_cache: bool = True,
) -> list[np.ndarray]:
  """Samples a continuation of each prompt (arrays of token ids); returns the new ids.

  A model with `max_len` sees at most that many positions. A prompt longer
  than max_len - 1 is trimmed from the left with a warning
  (`long_prompt='trim'`) or refused ('error'). When the context fills up,
  generation continues from its last max_len // 2 tokens (re-prefilled), so
  any number of new tokens can be drawn. Rows stop at `eos_id` (an id or a sequence; not
  returned). Each chunk is one jitted call, compiled once per shape.
  """
  check_settings(max_new_tokens, temperature, top_k, top_p)
  if not prompts:
    raise UserError("no prompt to continue: give at least one.")
  if any(len(p) == 0 for p in prompts):
    raise UserError("a prompt is empty: give at least one token.")
  prompts = [np.asarray(p, np.int32) for p in prompts]
  max_len = getattr(model, "max_len", None)
  if max_len is not None and any(len(p) >= max_len for p in prompts):
    message = (
      f"a prompt is longer than the {max_len - 1} tokens that leave room for a new "
      f"one in the model's context of {max_len}"
    )
    if long_prompt != "trim":
      raise UserError(message + ": shorten it, or pass --long_prompt=trim.")
    print(f"warning: {message}; keeping its last {max_len - 1} tokens.", file=sys.stderr)
    prompts = [p[-(max_len - 1) :] for p in prompts]
  ids = () if eos_id is None else (eos_id,) if np.isscalar(eos_id) else eos_id
  eos = tuple(int(i) for i in ids)
  new = [np.zeros((0,), np.int32) for _ in prompts]
  context = prompts
  while (remaining := max_new_tokens - len(new[0])) > 0:
    lengths = np.array([len(p) for p in context], np.int32)
    P = int(lengths.max())
    n = remaining if max_len is None else min(remaining, max_len - P)
    prompt_BxP = np.zeros((len(context), P), np.int32)
    for row, p in zip(prompt_BxP, context, strict=True):
      row[: len(p)] = p
    rng, key = jax.random.split(rng)
    out_BxT = np.asarray(
      _generate(
        model,
        params,
        prompt_BxP,
        lengths,
        key,
        jnp.float32(temperature),
        jnp.float32(top_p),
        min_len=int(lengths.min()),
        max_new_tokens=n,
        top_k=int(top_k),
        eos_id=eos,
        use_cache=use_cache,
      )
    )
    chunk = [row[m : m + n] for row, m in zip(out_BxT, lengths, strict=True)]
    new = [np.concatenate([a, b]) for a, b in zip(new, chunk, strict=True)]
    context = (
      [np.concatenate([p, c])[-(max_len // 2) :] for p, c in zip(context, chunk, strict=True)]
      if max_len is not None
      else None
    )
  ends = [np.isin(row, eos) for row in new]
  return [row[: np.argmax(end)] if end.any() else row for row, end in zip(new, ends, strict=True)]
