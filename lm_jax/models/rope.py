"""Rotary positions: frequencies base^(-2i/K) per feature pair, and how they stretch.

`Rope.inv_freq` computes the K/2 frequencies in float32 NumPy, in the order of operations
Hugging Face's `modeling_rope_utils` uses, so imported models rotate exactly as there;
`rotate` turns each (i, i + K/2) pair of features by position * frequency.
"""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from lm_jax import UserError

# default: base^(-2i/K). linear: every frequency / factor (positions interpolated). llama3
# (Llama 3.1): frequencies whose wavelength exceeds original_max_len / low_freq_factor are divided
# by factor, those shorter than original_max_len / high_freq_factor kept, those between blended.
TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class Rope:
  """One rotation: its base and frequency scaling (model.rope_* keys)."""

  base: float = 10000.0
  type: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_len: int = 8192

  def check(self) -> None:
    if self.type not in TYPES:
      raise UserError(f"unknown model.rope_type {self.type!r}: use one of {list(TYPES)}.")
    if self.type == "llama3" and not self.low_freq_factor < self.high_freq_factor:
      raise UserError(
        f"model.rope_low_freq_factor={self.low_freq_factor} must be below "
        f"model.rope_high_freq_factor={self.high_freq_factor} (rope_type llama3)."
      )
    if self.type != "default" and self.factor <= 0:
      raise UserError(f"model.rope_factor={self.factor} must be positive.")

  def inv_freq(self, head_dim: int) -> np.ndarray:
    """The K/2 rotation frequencies (float32) of heads `head_dim` wide."""
    self.check()
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    inv = 1.0 / (np.float32(self.base) ** exponents)
    if self.type == "linear":
      inv = inv / np.float32(self.factor)
    elif self.type == "llama3":
      low_wavelen = self.original_max_len / self.low_freq_factor
      high_wavelen = self.original_max_len / self.high_freq_factor
      wavelen = 2 * math.pi / inv
      scaled = np.where(wavelen > low_wavelen, inv / self.factor, inv)
      smooth = (self.original_max_len / wavelen - self.low_freq_factor) / (
        self.high_freq_factor - self.low_freq_factor
      )
      blended = (1 - smooth) * scaled / self.factor + smooth * scaled
      medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
      inv = np.where(medium, blended, scaled)
    return inv.astype(np.float32)


def rotate(x_BxHxLxK, pos, inv_freq, starts_BxL=None):
  """Rotates each (i, i + K/2) pair of features by angle position * inv_freq[i], in float32.

  Positions run from `pos`; with `starts_BxL` (layers.document_starts) they count from each
  token's document start.
  """
  L = x_BxHxLxK.shape[2]
  positions = pos + jnp.arange(L, dtype=jnp.float32)
  if starts_BxL is not None:
    positions = (positions[None] - starts_BxL)[:, None]  # Bx1xL: every head alike.
  angles_LxK = positions[..., None] * jnp.tile(inv_freq, 2)  # LxK, or Bx1xLxK.
  f_BxHxLxK = x_BxHxLxK.astype(jnp.float32)  # Angles grow with position: rotate in float32.
  x1, x2 = jnp.split(f_BxHxLxK, 2, axis=-1)
  rotated_BxHxLxK = jnp.concatenate([-x2, x1], axis=-1)
  out_BxHxLxK = f_BxHxLxK * jnp.cos(angles_LxK) + rotated_BxHxLxK * jnp.sin(angles_LxK)
  return out_BxHxLxK.astype(x_BxHxLxK.dtype)
