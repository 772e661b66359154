"""Attention alone, forward and backward: model.attention 'reference' against 'xla' on this device.

  python benchmarks/attention_speed.py

For each shape (batch, heads, length, head width), jits the gradient of the
summed causal attention for both implementations, runs them alternately and
prints the best of 30 times of each, one line per shape.
"""

import time

import jax
import jax.numpy as jnp

from lm_jax.models import layers

SHAPES = [  # (what, B, H, L, K); B per device.
  ("GPT-cpu recipe, pmap over 2", 6, 4, 64, 32),
  ("GPT-cpu recipe, jit", 12, 4, 64, 32),
  ("128 long", 6, 4, 128, 32),
  ("64-wide heads", 6, 4, 64, 64),
  ("baby GPT, pmap over 2", 4, 6, 128, 64),
  ("baby GPT, jit", 8, 6, 128, 64),
  ("baby GPT, 12 heads", 8, 12, 128, 32),
  ("baby GPT, 256 long", 8, 6, 256, 64),
  ("128-wide heads", 8, 4, 128, 128),
]


def grad_fn(implementation: str):
  def loss(q, k, v):
    return layers.attention(q, k, v, 0, lambda p: p, jnp.float32, implementation).sum()

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def main():
  for what, B, H, L, K in SHAPES:
    qkv = jax.random.normal(jax.random.key(0), (3, B, H, L, K))
    fns = {i: grad_fn(i) for i in ("reference", "xla")}
    best = dict.fromkeys(fns, float("inf"))
    for f in fns.values():
      jax.block_until_ready(f(*qkv))
    for _ in range(30):
      for name, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(*qkv))
        best[name] = min(best[name], time.perf_counter() - t)
    ref, xla = best["reference"] * 1e3, best["xla"] * 1e3
    print(
      f"{what:28s} B{B} H{H} L{L} K{K}: reference {ref:.2f} ms, xla {xla:.2f} ms ({xla / ref:.2f}x)"
    )


if __name__ == "__main__":
  main()
