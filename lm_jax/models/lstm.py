"""LSTM language model: Embed -> stack of LSTM layers -> Dense head."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _uniform(bound: float):
  """U(-bound, bound), as PyTorch initialises nn.LSTM and nn.Linear."""
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LSTM(nn.Module):
  """The word-language-model LSTM: embedding, `num_layers` LSTMs, head.

  Initialised as PyTorch's nn.Embedding (N(0, 1)), nn.LSTM and nn.Linear
  (U(+-1/sqrt(fan_in))). Dropout acts on the embeddings, between layers and
  before the head, as in PyTorch's word-language-model example;
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

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    if self.tie_weights and self.embed_size != self.hidden_size:
      raise ValueError("tie_weights needs embed_size == hidden_size.")
    init = _uniform(1.0 / math.sqrt(self.hidden_size))
    embed = nn.Embed(self.vocab_size, self.embed_size, name="embed",
                     embedding_init=nn.initializers.normal(1.0))
    x_BxLxE = nn.Dropout(self.dropout)(embed(tokens_BxL), deterministic)
    carries = []
    for i in range(self.num_layers):
      cell = nn.OptimizedLSTMCell(self.hidden_size, kernel_init=init, recurrent_kernel_init=init,
                                  bias_init=init, name=f"lstm_{i}")
      initial = None if cache is None else cache["layers"][i]
      carry, x_BxLxE = nn.RNN(cell, return_carry=True)(x_BxLxE, initial_carry=initial)
      carries.append(carry)
      x_BxLxE = nn.Dropout(self.dropout)(x_BxLxE, deterministic)
    if self.tie_weights:
      bias_V = self.param("head_bias", nn.initializers.zeros, (self.vocab_size,))
      logits_BxLxV = embed.attend(x_BxLxE) + bias_V
    else:
      logits_BxLxV = nn.Dense(self.vocab_size, kernel_init=init, bias_init=init,
                              name="head")(x_BxLxE)
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    if cache is None:
      return logits_BxLxV
    return logits_BxLxV, {"layers": carries}
