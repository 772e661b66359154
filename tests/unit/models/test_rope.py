"""Rotary frequencies and their scalings, the per-layer pattern, and what they refuse."""

import math

import numpy as np
import pytest

from lm_jax import UserError
from lm_jax.models import layers, rope


def test_linear_scaling_divides_every_frequency():
  plain = rope.Rope(500.0).inv_freq(16)
  np.testing.assert_allclose(plain, 500.0 ** (-np.arange(0, 16, 2) / 16), rtol=1e-6)
  np.testing.assert_allclose(rope.Rope(500.0, "linear", 4.0).inv_freq(16), plain / 4, rtol=1e-6)


def test_llama3_scaling_divides_long_wavelengths_keeps_short_ones_blends_between():
  r = rope.Rope(10000.0, "llama3", 8.0, 1.0, 4.0, original_max_len=64)
  plain, scaled = rope.Rope(10000.0).inv_freq(32), r.inv_freq(32)
  wavelen = 2 * math.pi / plain
  short, long = wavelen < 64 / 4, wavelen > 64 / 1
  assert short.any() and long.any() and (~short & ~long).any()  # All three regions occur.
  np.testing.assert_array_equal(scaled[short], plain[short])
  np.testing.assert_allclose(scaled[long], plain[long] / 8, rtol=1e-6)
  mid = ~short & ~long
  smooth = (64 / wavelen[mid] - 1) / (4 - 1)
  np.testing.assert_allclose(scaled[mid], (1 - smooth) * plain[mid] / 8 + smooth * plain[mid])
  assert np.all(np.diff(scaled) < 0)  # Still one frequency per pair, falling.


def test_unknown_or_inconsistent_settings_are_refused():
  with pytest.raises(UserError, match="unknown model.rope_type 'yarn'"):
    rope.Rope(1e4, "yarn").inv_freq(8)
  with pytest.raises(UserError, match="rope_low_freq_factor=4.0 must be below"):
    rope.Rope(1e4, "llama3", 8.0, 4.0, 1.0).inv_freq(8)


def test_layer_pattern_repeats_over_the_depth():
  assert layers.local_layers("lg", 5) == (True, False, True, False, True)
  assert layers.local_layers("lllllg", 8) == (True,) * 5 + (False, True, True)
  assert layers.local_layers("l", 2) == (True, True)
  for bad in ("", "lx", "LG"):
    with pytest.raises(UserError, match="must be letters l .* and g"):
      layers.local_layers(bad, 4)


def test_causal_mask_with_a_window():
  mask = np.asarray(layers.causal_mask(4, 6, 2, window=3))  # Queries at 2..5 over keys 0..5.
  want = [[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]]
  np.testing.assert_array_equal(mask, np.asarray(want, bool))
  np.testing.assert_array_equal(layers.causal_mask(4, 6, 2), np.tril(np.ones((4, 6)), 2) > 0)
