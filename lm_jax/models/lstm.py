"""LSTM language model: Embed -> stack of LSTM layers -> Dense head."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class LSTM(nn.Module):
  """The word-language-model LSTM: embedding, `num_layers` LSTMs, head.

  Dropout acts on the embeddings, between layers and before the head, as in
  PyTorch's word-language-model example; `tie_weights` shares the embedding
  with the head and needs `embed_size == hidden_size`.
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

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True):
    if self.tie_weights and self.embed_size != self.hidden_size:
      raise ValueError("tie_weights needs embed_size == hidden_size.")
    embed = nn.Embed(self.vocab_size, self.embed_size, name="embed")
    x_BxLxE = nn.Dropout(self.dropout)(embed(tokens_BxL), deterministic)
    for i in range(self.num_layers):
      x_BxLxE = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size, name=f"lstm_{i}"))(x_BxLxE)
      x_BxLxE = nn.Dropout(self.dropout)(x_BxLxE, deterministic)
    if self.tie_weights:
      bias_V = self.param("head_bias", nn.initializers.zeros, (self.vocab_size,))
      return embed.attend(x_BxLxE) + bias_V
    return nn.Dense(self.vocab_size, name="head")(x_BxLxE).astype(jnp.float32)
