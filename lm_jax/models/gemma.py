"""Gemma 2 and 3: Llama's block with Gemma's norms, scales and soft caps.

What differs from llama.py: RMSNorm scales are 1 + w (w starts at 0), embeddings are scaled by
sqrt(d_model), the MLP is a GeGLU (tanh GELU), each block normalizes attention's and the MLP's
outputs as well as their inputs, scores are scaled by 1/sqrt(query_pre_attn_scalar) and
soft-capped, so are the logits, and local (sliding-window) and global layers alternate
(layer_pattern). Gemma 3 adds per-head query/key norms (qk_norm) and its own rotary base for
local layers (rope_local_base).
"""

import math

import jax.numpy as jnp

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.models import decoder, layers, llama
from lm_jax.models import rope as rope_lib


class Gemma(decoder.Decoder):
  """Scaled token embeddings, sandwich-norm blocks, a soft-capped head tied to the embedding."""

  num_kv_heads: int = 2  # Key/value heads, each shared by num_heads // num_kv_heads queries.
  head_dim: int = 0  # Each head's width; 0: d_model / num_heads (Gemma 2 2B: 256, 2304 wide).
  mlp_dim: int = 0  # GeGLU width; 0: 4 * d_model (Gemma 2 2B's ratio).
  norm_eps: float = 1e-6
  tie_embeddings: bool = True  # The head reuses the embedding table (every Gemma does).
  rope_base: float = 10000.0  # Global layers' rotary base (Gemma 3: 1e6).
  rope_type: str = "default"  # Global layers' frequency scaling: default or linear (rope.py).
  rope_factor: float = 1.0  # linear: how far the context stretches (Gemma 3 4B and up: 8).
  rope_local_base: float = 0.0  # Local layers' own base, unscaled (Gemma 3: 1e4); 0: as global.
  query_pre_attn_scalar: int = 0  # Scores are q.k / sqrt(this); 0: the head width.
  attn_softcap: float = 50.0  # Scores soft-capped to (-cap, cap); 0: not (Gemma 3).
  final_softcap: float = 30.0  # Logits soft-capped likewise; 0: not (Gemma 3).
  qk_norm: bool = False  # RMSNorm on each head's queries and keys before the rotation (Gemma 3).
  sliding_window: int = 4096  # Local layers see the last this many positions, their own too.
  layer_pattern: str = "lg"  # Local (l) or global (g), repeated: Gemma 2 'lg', Gemma 3 'lllllg'.

  @property
  def hidden_dim(self) -> int:
    """The GeGLU width F."""
    return self.mlp_dim or 4 * self.d_model

  def check_options(self) -> None:
    config_lib.check_int("model.mlp_dim", self.mlp_dim, 0)
    config_lib.check_int("model.query_pre_attn_scalar", self.query_pre_attn_scalar, 0)
    llama.check_heads(self)
    if self.rope_type not in ("default", "linear"):
      raise UserError(f"model.rope_type={self.rope_type!r}: Gemma takes 'default' or 'linear'.")

  def block_options(self):
    """Where every layer is alike (all local, all global, or local ones differing in nothing)
    nothing is per layer: the blocks get that kind's window and rotation."""
    local = layers.local_layers(self.layer_pattern, self.num_layers)
    rope = rope_lib.Rope(self.rope_base, self.rope_type, self.rope_factor)
    local_rope = rope_lib.Rope(self.rope_local_base) if self.rope_local_base else rope
    if not any(local):
      rope, local_rope, window, local = rope, None, 0, None
    elif all(local):
      rope, local_rope, window, local = local_rope, None, self.sliding_window, None
    elif not self.sliding_window and local_rope == rope:
      rope, local_rope, window, local = rope, None, 0, None
    else:
      local_rope, window = None if local_rope == rope else local_rope, self.sliding_window
    options = {
      "num_kv_heads": self.num_kv_heads,
      "head_dim": self.head_width,
      "mlp_dim": self.hidden_dim,
      "rope": rope,
      "local_rope": local_rope,
      "query_scale": 1.0 / math.sqrt(self.query_pre_attn_scalar or self.head_width),
      "attn_softcap": self.attn_softcap,
      "qk_norm": self.qk_norm,
      "sliding_window": window,
      "norm_offset": 1.0,
      "post_norms": True,
      "activation": "gelu_tanh",
    }
    return llama.Block, options, local

  def final_norm(self, dtype, param_dtype):
    return layers.RMSNorm(self.norm_eps, 1.0, dtype, param_dtype, name="norm")

  def embed(self, table, tokens_BxL, positions_BxL, param_dtype):
    # The scale in the parameters' dtype, as Gemma's reference implementation rounds it.
    return table(tokens_BxL) * jnp.asarray(math.sqrt(self.d_model), param_dtype)
