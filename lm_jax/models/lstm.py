"""LSTM language model: Embed -> stack of LSTM layers -> Dense head."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import UserError
from lm_jax import config as config_lib


def _uniform(bound: float):
  """U(-bound, bound), as PyTorch initialises nn.LSTM and nn.Linear."""
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


@jax.custom_vjp
def recurrence(x_LxBxE, w_ih_Ex4C, b_4C, w_hh_Cx4C, carry):
  """An LSTM layer over L steps from carry (c, h); time-major, as the scan runs.

  Gates in PyTorch's order: input, forget, cell, output. Returns (h_LxBxC,
  final carry). The backward pass runs the recurrence in reverse for the
  gate gradients only, then takes the weights' and inputs' gradients as one
  matmul each over all steps, as cuDNN and PyTorch do; autodiff through the
  scan would accumulate them step by step in small, slow matmuls.
  """
  return _forward(x_LxBxE, w_ih_Ex4C, b_4C, w_hh_Cx4C, carry)[0]


def _forward(x_LxBxE, w_ih_Ex4C, b_4C, w_hh_Cx4C, carry):
  # The inputs' share of the gates for all steps in one matmul; the scan keeps only h @ w_hh.
  gates_in_LxBx4C = x_LxBxE @ w_ih_Ex4C + b_4C

  def step(carry, gates_in_Bx4C):
    c_BxC, h_BxC = carry
    gates_Bx4C = gates_in_Bx4C + h_BxC @ w_hh_Cx4C
    i, f, g, o = jnp.split(gates_Bx4C, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c_BxC = f * c_BxC + i * g
    h_BxC = o * jnp.tanh(c_BxC)
    return (c_BxC, h_BxC), (h_BxC, c_BxC, jnp.concatenate([i, f, g, o], axis=-1))

  final, (h_LxBxC, c_LxBxC, acts_LxBx4C) = jax.lax.scan(step, carry, gates_in_LxBx4C)
  return (h_LxBxC, final), (h_LxBxC, c_LxBxC, acts_LxBx4C)


def _recurrence_fwd(x_LxBxE, w_ih_Ex4C, b_4C, w_hh_Cx4C, carry):
  out, saved = _forward(x_LxBxE, w_ih_Ex4C, b_4C, w_hh_Cx4C, carry)
  return out, (saved, x_LxBxE, w_ih_Ex4C, w_hh_Cx4C, carry)


def _recurrence_bwd(residuals, cotangents):
  (h_LxBxC, c_LxBxC, acts_LxBx4C), x_LxBxE, w_ih_Ex4C, w_hh_Cx4C, (c0_BxC, h0_BxC) = residuals
  dh_LxBxC, (dc_last_BxC, dh_last_BxC) = cotangents
  c_prev_LxBxC = jnp.concatenate([c0_BxC[None], c_LxBxC[:-1]])

  def step(carry, xs):
    dc_BxC, dh_next_BxC = carry
    dh_out_BxC, c_BxC, c_prev_BxC, acts_Bx4C = xs
    i, f, g, o = jnp.split(acts_Bx4C, 4, axis=-1)
    dh_BxC = dh_out_BxC + dh_next_BxC
    tanh_c = jnp.tanh(c_BxC)
    dc_BxC = dc_BxC + dh_BxC * o * (1 - tanh_c * tanh_c)
    dgates_Bx4C = jnp.concatenate(
      [
        dc_BxC * g * i * (1 - i),
        dc_BxC * c_prev_BxC * f * (1 - f),
        dc_BxC * i * (1 - g * g),
        dh_BxC * tanh_c * o * (1 - o),
      ],
      -1,
    )
    return (dc_BxC * f, dgates_Bx4C @ w_hh_Cx4C.T), dgates_Bx4C

  (dc0_BxC, dh0_BxC), dgates_LxBx4C = jax.lax.scan(
    step, (dc_last_BxC, dh_last_BxC), (dh_LxBxC, c_LxBxC, c_prev_LxBxC, acts_LxBx4C), reverse=True
  )
  h_prev_LxBxC = jnp.concatenate([h0_BxC[None], h_LxBxC[:-1]])
  return (
    dgates_LxBx4C @ w_ih_Ex4C.T,
    jnp.einsum("lbe,lbg->eg", x_LxBxE, dgates_LxBx4C),
    dgates_LxBx4C.sum((0, 1)),
    jnp.einsum("lbh,lbg->hg", h_prev_LxBxC, dgates_LxBx4C),
    (dc0_BxC, dh0_BxC),
  )


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class LSTMLayer(nn.Module):
  """One LSTM layer, parameters as torch.nn.LSTM's (one bias): ih_kernel, hh_kernel, bias."""

  hidden_size: int

  @nn.compact
  def __call__(self, x_LxBxE, carry=None):
    C = self.hidden_size
    init = _uniform(1.0 / math.sqrt(C))
    E = x_LxBxE.shape[-1]
    w_ih_Ex4C = self.param("ih_kernel", init, (E, 4 * C))
    b_4C = self.param("bias", init, (4 * C,))
    w_hh_Cx4C = self.param("hh_kernel", init, (C, 4 * C))
    if carry is None:
      zeros = jnp.zeros((x_LxBxE.shape[1], C), jnp.float32)
      carry = (zeros, zeros)
    return recurrence(x_LxBxE, w_ih_Ex4C, b_4C, w_hh_Cx4C, carry)


class LSTM(nn.Module):
  """The word-language-model LSTM: embedding, `num_layers` LSTMs, head.

  Initialised as PyTorch's nn.Embedding (N(0, 1)), nn.LSTM and nn.Linear
  (U(+-1/sqrt(fan_in))); with `init_range` r > 0, the embedding and head weights
  are U(-r, r) and the head bias 0 instead (word_language_model's init_weights, r = 0.1).
  Dropout acts on the embeddings, between layers and before the head, as in PyTorch's
  word-language-model example;
  `tie_weights` shares the embedding with the head and needs
  `embed_size == hidden_size`. With a cache from `init_cache` (the layers'
  (c, h) carries), `model.apply(v, tokens_BxL, cache=cache)` returns
  (logits_BxLxV, cache) and continues from the cached state.
  """

  vocab_size: int
  embed_size: int = 128
  hidden_size: int = 256
  num_layers: int = 1
  dropout: float = 0.0
  tie_weights: bool = False
  init_range: float = 0.0

  def flops_per_token(self, params, seq_len: int) -> float:
    """6 per parameter, leaving out the embedding table unless it is the head too."""
    del seq_len
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    return 6.0 * (n if self.tie_weights else n - params["embed"]["embedding"].size)

  def init_cache(self, batch_size: int, length: int):
    """Zero (c, h) carries for each layer; an LSTM needs no room per position."""
    del length
    zeros = lambda: jnp.zeros((batch_size, self.hidden_size), jnp.float32)
    return {"layers": [(zeros(), zeros()) for _ in range(self.num_layers)]}

  def init_carry(self, batch_size: int):
    """The state at the start of a stream (zeros); training and evaluation can carry it."""
    return self.init_cache(batch_size, 0)

  def check(self) -> None:
    """Refuses settings outside their range (UserError)."""
    for key in ("embed_size", "hidden_size", "num_layers"):
      config_lib.check_int(f"model.{key}", getattr(self, key), 1)
    config_lib.check_number("model.dropout", self.dropout, 0, 1, below=True)
    if self.tie_weights and self.embed_size != self.hidden_size:
      raise UserError(
        f"model.tie_weights needs model.embed_size ({self.embed_size}) == model.hidden_size "
        f"({self.hidden_size}): make them equal or set model.tie_weights=False."
      )

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    self.check()
    init = _uniform(1.0 / math.sqrt(self.hidden_size))
    r = self.init_range
    embed = nn.Embed(
      self.vocab_size,
      self.embed_size,
      name="embed",
      embedding_init=_uniform(r) if r > 0 else nn.initializers.normal(1.0),
    )
    # Time-major inside: the recurrence steps over the leading axis.
    x_LxBxE = nn.Dropout(self.dropout)(embed(tokens_BxL.T), deterministic)
    carries = []
    for i in range(self.num_layers):
      initial = None if cache is None else cache["layers"][i]
      x_LxBxE, carry = LSTMLayer(self.hidden_size, name=f"lstm_{i}")(x_LxBxE, initial)
      carries.append(carry)
      x_LxBxE = nn.Dropout(self.dropout)(x_LxBxE, deterministic)
    x_BxLxE = x_LxBxE.swapaxes(0, 1)
    if self.tie_weights:
      bias_V = self.param("head_bias", nn.initializers.zeros, (self.vocab_size,))
      logits_BxLxV = embed.attend(x_BxLxE) + bias_V
    else:
      head_init = (_uniform(r), nn.initializers.zeros) if r > 0 else (init, init)
      logits_BxLxV = nn.Dense(
        self.vocab_size, kernel_init=head_init[0], bias_init=head_init[1], name="head"
      )(x_BxLxE)
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    if cache is None:
      return logits_BxLxV
    return logits_BxLxV, {"layers": carries}
