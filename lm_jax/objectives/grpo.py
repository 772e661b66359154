"""Reinforcement learning from reward functions: Group Relative Policy Optimization (GRPO).

train.objective='grpo' reads prompts (lm_jax/data/prompts.py). Each step draws
train.batch_size / train.grpo.group_size prompts (a seeded permutation per epoch), samples
group_size completions of each with the current parameters and the KV-cached sampler
(train.grpo.max_new_tokens at train.grpo.temperature, stopping at the end of text or of the
assistant's turn; the key is a function of the run's key and the step), and scores them with
train.grpo.reward: functions named 'package.module:function', called as TRL calls one,
`reward(prompts, completions, **fields)` (`fields`: each record's other fields, a list per
field) and returning a float per completion; several, comma-separated, add up weighted by
train.grpo.reward_weights. A completion's advantage is its reward less its group's mean, over
the group's standard deviation (+ 1e-4), as TRL normalises it. The loss, per completion token
and averaged over every completion token of the batch, is the clipped policy-ratio objective

  -min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A) + kl * (exp(ref - logp) - (ref - logp) - 1)

with ratio = p / p_old (one update per sampling: 1, its gradient the policy gradient) and the
KL penalty to the frozen starting model (train.grpo.kl; LoRA's base, or a copy kept in the
state). A run resumed after a kill equals the unbroken run, rewards and losses bit for bit, as
long as the reward functions are deterministic.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax import UserError, losses, sample
from lm_jax import config as config_lib
from lm_jax import state as state_lib
from lm_jax.data import prompts as prompts_lib
from lm_jax.data import sources


@dataclasses.dataclass(frozen=True)
class GRPOLoss:
  """The train step's loss on completed rows: 'inputs', 'targets', 'weights' (1 on completion
  tokens) [N, L] and 'advantages' [N]."""

  clip: float = 0.2
  kl: float = 0.0
  reference_apply: object = None  # The model's own apply (not LoRA's).

  @property
  def names(self) -> tuple[str, ...]:
    return ("train_loss", "kl")

  def prepare(self, state, batch) -> dict:
    del state
    return batch

  def count(self, batch):
    return batch["weights"].sum()

  @staticmethod
  def token_logps(apply, variables, batch, rng, train: bool):
    kwargs = {"deterministic": not train, "rngs": {"dropout": rng} if train else None}
    logits = apply(variables, batch["inputs"], **kwargs)
    N, L, V = logits.shape
    targets = batch["targets"].reshape(-1)
    nll = losses.token_cross_entropy(logits.astype(jnp.float32).reshape(-1, V), targets)
    return -nll.reshape(N, L)

  def __call__(self, state, params, batch, rng, train: bool = True):
    logp = self.token_logps(state.apply_fn, state.variables(params), batch, rng, train)
    old = jax.lax.stop_gradient(logp)  # One update per sampling: the policy that sampled.
    per_token = clipped_objective(logp, old, batch["advantages"][:, None], self.clip)
    kl = jnp.zeros_like(logp)
    if self.kl:
      reference = state.frozen if state.frozen is not None else state.reference
      variables = {"params": jax.lax.stop_gradient(reference)}
      ref = self.token_logps(self.reference_apply, variables, batch, None, False)
      kl = jnp.exp(ref - logp) - (ref - logp) - 1.0
      per_token = per_token + self.kl * kl
    w = batch["weights"].astype(jnp.float32)
    total = jnp.sum(per_token * w)
    return total, {"train_loss": total, "kl": jnp.sum(kl * w)}, None


def clipped_objective(logp, old_logp, advantages, clip: float):
  """Per token, -min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A), ratio = p / p_old."""
  ratio = jnp.exp(logp - old_logp)
  a = jnp.asarray(advantages, jnp.float32)
  return -jnp.minimum(ratio * a, jnp.clip(ratio, 1 - clip, 1 + clip) * a)


def advantages(rewards_N: np.ndarray, group_size: int) -> np.ndarray:
  """Each reward less its group's mean over the group's standard deviation (n - 1) + 1e-4."""
  groups = rewards_N.reshape(-1, group_size)
  std = groups.std(axis=1, ddof=1, keepdims=True) if group_size > 1 else 0.0
  return ((groups - groups.mean(axis=1, keepdims=True)) / (std + 1e-4)).reshape(-1)


@dataclasses.dataclass(frozen=True)
class Rewards:
  """train.grpo.reward's functions and weights."""

  names: tuple[str, ...]
  functions: tuple
  weights: tuple[float, ...]

  @classmethod
  def of(cls, g) -> "Rewards":
    names = tuple(n.strip() for n in g.reward.split(",") if n.strip())
    if not names:
      raise UserError(
        "train.grpo.reward is empty: name a reward function as 'package.module:function' "
        "(it takes prompts, completions and the records' fields, and returns a float each)."
      )
    functions = []
    for name in names:
      what = "a function(prompts, completions, **fields) -> list of floats"
      fn = config_lib.import_object(name, {}, "reward", "train.grpo.reward", what)
      if not callable(fn):
        raise UserError(f"{name!r} does not name a function: check train.grpo.reward.")
      functions.append(fn)
    weights = tuple(float(w) for w in g.reward_weights) or (1.0,) * len(names)
    if len(weights) != len(names):
      raise UserError(
        f"train.grpo.reward_weights has {len(weights)} weights for {len(names)} reward "
        "functions: give one each, or none (all 1)."
      )
    return cls(names, tuple(functions), weights)

  def score(self, prompts: list, completions: list, fields: list[dict]) -> dict:
    """{name: rewards [N]} of every function, checked: a float per completion."""
    columns = {k: [f.get(k) for f in fields] for k in sorted({k for f in fields for k in f})}
    found = {}
    for name, fn in zip(self.names, self.functions, strict=True):
      try:
        out = fn(prompts, completions, **columns)
      except Exception as e:  # pylint: disable=broad-except  (the user's code)
        raise UserError(
          f"reward function {name} raised {type(e).__name__}: {str(e)[:200]}; fix it (it is "
          "called with prompts, completions and the records' fields as keywords)."
        ) from e
      values = np.asarray(out if isinstance(out, (list, tuple, np.ndarray)) else [out], object)
      numbers = all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values
      )
      if len(values) != len(completions) or not numbers:
        raise UserError(
          f"reward function {name} returned {str(out)[:80]!r}, not {len(completions)} numbers "
          "(one per completion): return a list of floats."
        )
      found[name] = values.astype(np.float64)
    return found

  def total(self, found: dict) -> np.ndarray:
    return sum(w * found[n] for n, w in zip(self.names, self.weights, strict=True))


def _stops(tokenizer) -> tuple[int, ...]:
  """Ids that end a completion: the end of text, and the end of the assistant's turn."""
  ids = [] if tokenizer.eos_id is None else [int(tokenizer.eos_id)]
  turn = getattr(tokenizer, "end_of_turn_ids", None)
  if turn is not None and getattr(tokenizer, "chat_template", None) is not None:
    ids += [int(i) for i in turn()]
  return tuple(sorted(set(ids)))


class GRPO:
  """train.objective='grpo': see the module docstring."""

  def __init__(self, config, workdir: str):
    self.config = config
    g = config.train.grpo
    length = config.data.seq_len - g.max_new_tokens
    self.tokenizer, self.prompts = prompts_lib.prepare(config.data, workdir, length)
    self.rewards = Rewards.of(g)
    self.stops = _stops(self.tokenizer)
    self._programs = {}
    self.last_update = None  # When the previous sampling ended: the update time follows it.

  @staticmethod
  def check_config(config) -> None:
    g = config.train.grpo
    config_lib.check_int("train.grpo.group_size", g.group_size, 1)
    config_lib.check_int("train.grpo.max_new_tokens", g.max_new_tokens, 1)
    config_lib.check_number("train.grpo.temperature", g.temperature, 0)
    config_lib.check_number("train.grpo.kl", g.kl, 0)
    config_lib.check_number("train.grpo.clip", g.clip, 0, above=True)
    config_lib.check_str("train.grpo.reward", g.reward)
    sources.check_format(config.data, "grpo")
    if config.train.batch_size % g.group_size:
      raise UserError(
        f"train.batch_size={config.train.batch_size} is not a multiple of "
        f"train.grpo.group_size={g.group_size}: the batch holds whole groups of completions."
      )
    if g.max_new_tokens >= config.data.seq_len:
      raise UserError(
        f"train.grpo.max_new_tokens={g.max_new_tokens} leaves no room for a prompt in "
        f"data.seq_len={config.data.seq_len}: raise data.seq_len."
      )

  @staticmethod
  def needs_reference(config) -> bool:
    return config.train.grpo.kl > 0

  @staticmethod
  def loss_of(setup) -> GRPOLoss:
    g = setup.config.train.grpo
    return GRPOLoss(float(g.clip), float(g.kl), setup.model.apply)

  def fingerprints(self) -> dict:
    return {split: p.fingerprint for split, p in self.prompts.items()}

  def steps_per_epoch(self, config) -> int:
    per_step = config.train.batch_size // config.train.grpo.group_size
    return max(len(self.prompts["train"]) // per_step, 1)

  def bind(self, setup) -> "GRPO":
    self.config, self.plan, self.model = setup.config, setup.plan, setup.model
    self.loss = self.loss_of(setup)
    rows = self.plan.rows(self.config.train.batch_size)
    if jax.process_count() > 1 and (rows.stop - rows.start) % self.config.train.grpo.group_size:
      raise UserError(
        "each process holds part of a group of completions: make train.batch_size / "
        "processes a multiple of train.grpo.group_size."
      )
    return self

  def describe(self) -> str:
    n = len(self.prompts["validation"])
    return f"prompts: one greedy completion of each of the {n} held-out prompts, mean reward"

  # Batches.

  def _index(self, step: int) -> np.ndarray:
    """The record of each completion row of `step`, group by group, for the whole batch."""
    c, n = self.config.train, len(self.prompts["train"])
    per_step = c.batch_size // c.grpo.group_size
    at = step * per_step + np.arange(per_step)
    epochs, within = np.divmod(at, n)
    perm = lambda e: np.random.default_rng([self.config.seed, e]).permutation(n)
    order = {e: perm(e) for e in set(epochs.tolist())}
    records = np.array([order[e][i] for e, i in zip(epochs, within, strict=True)])
    return np.repeat(records, c.grpo.group_size)

  def batch(self, step: int) -> dict:
    index = self._index(step)[self.plan.rows(self.config.train.batch_size)]
    split = self.prompts["train"]
    return {"prompt": split.ids[index], "lengths": split.lengths[index]}

  def _sample(self, params, prompt: dict, rng, temperature: float) -> np.ndarray:
    """This process's prompt rows (sharded) continued: int32 [rows, P + max_new_tokens]."""
    g = self.config.train.grpo
    lengths = self.plan.host_rows(prompt["lengths"])
    prefill = 1 << (int(lengths.min()).bit_length() - 1)  # A power of two: few programs.
    key = (prefill, temperature)
    if key not in self._programs:
      step = sample.batch_step
      kw = dict(model=self.model, prefill=prefill, max_new_tokens=g.max_new_tokens)
      kw.update(temperature=temperature, top_k=0, top_p=1.0, eos_id=self.stops)
      fn = lambda params, batch, rng, axis_name=None: step(params, batch, rng, axis_name, **kw)
      self._programs[key] = self.plan.compile_step(fn, in_axes=(0, 0, None), donate=False)
    return self.plan.host_rows(self._programs[key](params, prompt, rng)), lengths

  def _completions(self, out, lengths) -> tuple[list, np.ndarray]:
    """Each row's completion ids (through its stop id, if it met one) and their count."""
    g = self.config.train.grpo
    found = []
    for row, n in zip(out, lengths, strict=True):
      new = row[n : n + g.max_new_tokens]
      ends = np.flatnonzero(np.isin(new, self.stops))
      found.append(new[: ends[0] + 1] if len(ends) else new)
    return found, np.array([len(c) for c in found])

  def _texts(self, completions, prompts) -> list:
    """Completions as the reward functions get them (TRL's forms): text, or an assistant
    message for a conversation's prompt."""
    texts = [self.tokenizer.decode([i for i in c if i not in self.stops]) for c in completions]
    chat = [isinstance(p, list) for p in prompts]
    return [
      [{"role": "assistant", "content": t}] if c else t for t, c in zip(texts, chat, strict=True)
    ]

  def complete(self, state, batch: dict, step: int, rng) -> tuple[dict, dict]:
    """The batch of `step` completed with the current parameters: (the train step's batch,
    host metrics of the sampling and the rewards)."""
    g, c = self.config.train.grpo, self.config.train
    jax.block_until_ready(state.params)  # The previous update is done: it is timed apart.
    started = time.perf_counter()
    update_sec = None if self.last_update is None else started - self.last_update
    params = state_lib.adapted_params(state, self.config)
    key = jax.random.fold_in(jax.random.fold_in(rng, step), 1)  # Another stream than dropout's.
    out, lengths = self._sample(params, batch, key, float(g.temperature))
    completions, counts = self._completions(out, lengths)
    index = self._index(step)[self.plan.rows(c.batch_size)]
    split = self.prompts["train"]
    prompts = [split.prompts[i] for i in index]
    scores = self.rewards.score(
      prompts, self._texts(completions, prompts), [split.fields[i] for i in index]
    )
    rewards = self.rewards.total(scores)
    rows, L = len(index), self.config.data.seq_len
    tokens = np.zeros((rows, L), np.int32)
    weights = np.zeros((rows, L - 1), np.float32)
    for r, (n, new) in enumerate(zip(lengths, completions, strict=True)):
      tokens[r, :n] = out[r, :n]
      tokens[r, n : n + len(new)] = new
      weights[r, n - 1 : n - 1 + len(new)] = 1.0  # Targets that are the completion's tokens.
    groups = rewards.reshape(-1, g.group_size)
    sampled = {
      "reward": float(rewards.mean()),
      "reward_std": float(rewards.std()),
      **{f"reward/{n}": float(v.mean()) for n, v in scores.items()},
      "completion_length": float(counts.mean()),
      "zero_variance_groups": float(np.mean(groups.max(1) == groups.min(1))),
      "sample_tokens_per_sec": float(counts.sum() / (time.perf_counter() - started)),
    }
    if update_sec:
      sampled["update_tokens_per_sec"] = float(rows * (L - 1) / update_sec)
    train = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}
    train["advantages"] = advantages(rewards, g.group_size).astype(np.float32)
    self.last_update = time.perf_counter()
    return self.plan.shard(train), sampled

  def evaluate(self, state) -> dict:
    """One greedy completion of every held-out prompt: the mean reward, and each function's."""
    c, split = self.config.train, self.prompts["validation"]
    size = c.eval_batch_size or c.batch_size
    params = state_lib.adapted_params(state, self.config)
    found, counts = {n: [] for n in self.rewards.names}, []
    rows = self.plan.rows(size)
    for start in range(0, len(split), size):
      index = np.minimum(np.arange(start, start + size), len(split) - 1)[rows]
      prompt = {"prompt": split.ids[index], "lengths": split.lengths[index]}
      out, lengths = self._sample(params, self.plan.shard(prompt), jax.random.key(0), 0.0)
      first = rows.indices(size)[0]
      keep = slice(0, max(0, min(len(index), len(split) - start - first)))  # Not the padding.
      completions, n = self._completions(out[keep], lengths[keep])
      prompts = [split.prompts[i] for i in index[keep]]
      fields = [split.fields[i] for i in index[keep]]
      for name, v in self.rewards.score(prompts, self._texts(completions, prompts), fields).items():
        found[name].append(v)
      counts.append(n)
    scores = {n: np.concatenate(v) for n, v in found.items()}
    reward = float(self.rewards.total(scores).mean())
    per = {f"reward/{n}": float(v.mean()) for n, v in scores.items()}
    length = float(np.concatenate(counts).mean())
    return {"loss": -reward, "reward": reward, **per, "completion_length": length}

  @staticmethod
  def logged(metrics: dict) -> dict:
    return {f"val_{k}": v for k, v in metrics.items()}
