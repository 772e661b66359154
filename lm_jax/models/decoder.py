"""The decoder every Transformer family plugs into: embedding, blocks, final norm, head, cache.

A family (gpt.py, llama.py, gemma.py, or a model of your own) subclasses `Decoder`, adds its
options as fields and says what differs in a few methods:

  block_options()   its Block class, the Block's keyword arguments, and the per-layer flags
                    (which layers are local) or None;
  final_norm()      the norm after the last block;
  embed()           how token ids become the residual stream (scaled, plus learned positions);
  check_options()   the ranges of its own fields (the shared ones are checked here first).

Everything else is written once here: the token embedding and a head tied to it or not, the
blocks scanned or unrolled and recomputed in the backward pass (layers.apply_blocks), document
masking, the KV cache, the logit soft cap, the FLOP count and the checks. Blocks are called as
`Block(**kwargs)(x_BxLxD, deterministic, kv, pos, starts_BxL[, local]) -> (x_BxLxD, kv)`.
"""

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax.models import layers


class Decoder(nn.Module):
  """Token embeddings, a stack of blocks, a final norm and a head over the vocabulary.

  `model.apply(v, tokens_BxL)` gives logits_BxLxV (float32); with a cache from
  `init_cache`, `model.apply(v, tokens_BxL, cache=cache)` gives (logits_BxLxV, cache) for the
  tokens that follow those already cached.
  """

  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  d_model: int = 128
  max_len: int = 256  # Longest context: learned positions' count, the decode cache's limit.
  dropout: float = 0.0
  norm_eps: float = 1e-5
  dtype: str = "float32"  # Activations (auto: bfloat16 on accelerators); softmax and logits
  # stay float32.
  param_dtype: str = "float32"  # Parameters (and so the weights a checkpoint holds): or bfloat16.
  attention: str = "auto"  # reference, xla, cudnn or auto (layers.resolve_attention).
  remat: str = "none"  # Recompute blocks in the backward pass: none, block, dots (see layers).
  scan_layers: bool = False  # One nn.scan over stacked blocks: compile time flat in depth.
  eod_ids: tuple = ()  # Set from data.document_masking: attention and positions restart at these.

  EMBED = "embed"  # The token embedding's parameter name (GPT: 'wte').

  # What a family says.

  def block_options(self) -> tuple[type, dict, tuple | None]:
    """(Block class, its keyword arguments besides those every block takes, per-layer flags)."""
    raise NotImplementedError

  def final_norm(self, dtype, param_dtype) -> nn.Module:
    raise NotImplementedError

  def embed(self, table: nn.Embed, tokens_BxL, positions_BxL, param_dtype):
    """The residual stream's start: the token embeddings (a family may scale them or add
    learned positions; `positions_BxL` count from each document's start)."""
    del positions_BxL, param_dtype
    return table(tokens_BxL)

  def check_options(self) -> None:
    """Refuses a family's own settings outside their range (UserError)."""

  @property
  def tied(self) -> bool:
    """Whether the head reuses the embedding table."""
    return getattr(self, "tie_embeddings", True)

  @property
  def logit_softcap(self) -> float:
    return getattr(self, "final_softcap", 0.0)

  @property
  def score_softcap(self) -> float:
    return getattr(self, "attn_softcap", 0.0)

  # Written once.

  @property
  def head_width(self) -> int:
    """Each head's width K."""
    return getattr(self, "head_dim", 0) or self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    """Key/value heads G, what the cache holds per position."""
    return getattr(self, "num_kv_heads", self.num_heads)

  def check(self) -> None:
    """Refuses settings outside their range (UserError): the shared ones, then the family's."""
    layers.check_transformer(self)
    self.check_options()

  def flops_per_token(self, params, seq_len: int) -> float:
    """6 per parameter that multiplies (an embedding table only as a tied head), plus
    attention's 12 * layers * heads * head width * context."""
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    looked_up = [k for k, v in params.items() if isinstance(v, Mapping) and "embedding" in v]
    n -= sum(params[k]["embedding"].size for k in looked_up if not (self.tied and k == self.EMBED))
    return 6.0 * n + 12.0 * self.num_layers * self.num_heads * self.head_width * seq_len

  def init_cache(self, batch_size: int, length: int):
    """An empty KV cache for `length` positions (at most max_len)."""
    shape = (batch_size, self.kv_heads, min(length, self.max_len), self.head_width)
    cache = layers.init_kv_cache(
      self.num_layers, self.scan_layers, shape, layers.compute_dtype(self.dtype)
    )
    return {**cache, "start": jnp.zeros((batch_size,), jnp.int32)} if self.eod_ids else cache

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    self.check()
    L = tokens_BxL.shape[1]
    pos = 0 if cache is None else cache["pos"]
    dtype, param_dtype = layers.compute_dtype(self.dtype), layers.param_dtype(self.param_dtype)
    positions_BxL, starts_BxL = (pos + jnp.arange(L))[None], None
    if self.eod_ids:  # Attention and positions restart at each document's start.
      start_B = None if cache is None else cache["start"]
      starts_BxL = layers.document_starts(tokens_BxL, self.eod_ids, pos, start_B)
      positions_BxL = positions_BxL - starts_BxL
    table = nn.Embed(
      self.vocab_size,
      self.d_model,
      embedding_init=nn.initializers.normal(0.02),
      param_dtype=param_dtype,
      name=self.EMBED,
    )
    x_BxLxD = self.embed(table, tokens_BxL, positions_BxL, param_dtype)
    x_BxLxD = nn.Dropout(self.dropout)(x_BxLxD, deterministic).astype(dtype)
    block_cls, kwargs, per_layer = self.block_options()
    attention, _ = layers.resolve_attention(
      self.attention,
      dtype,
      self.dropout,
      self.head_width,
      softcap=self.score_softcap,
      documents=bool(self.eod_ids),
    )
    kwargs = {
      "num_heads": self.num_heads,
      "num_layers": self.num_layers,
      "dropout": self.dropout,
      "norm_eps": self.norm_eps,
      **kwargs,
      "dtype": dtype,
      "param_dtype": param_dtype,
      "attention": attention,
    }
    x_BxLxD, kv_layers = layers.apply_blocks(
      block_cls,
      kwargs,
      self.num_layers,
      self.remat,
      self.scan_layers,
      x_BxLxD,
      deterministic,
      None if cache is None else cache["layers"],
      pos,
      starts_BxL,
      per_layer=per_layer,
    )
    x_BxLxD = self.final_norm(dtype, param_dtype)(x_BxLxD).astype(jnp.float32)
    if self.tied:
      logits_BxLxV = table.attend(x_BxLxD)
    else:
      head = layers.dense(self.vocab_size, "head", False, None, param_dtype)
      logits_BxLxV = head(x_BxLxD)
    if self.logit_softcap:
      logits_BxLxV = self.logit_softcap * jnp.tanh(logits_BxLxV / self.logit_softcap)
    if cache is None:
      return logits_BxLxV
    cache = {"pos": pos + L, "layers": kv_layers}
    return logits_BxLxV, cache if starts_BxL is None else {**cache, "start": starts_BxL[:, -1]}
