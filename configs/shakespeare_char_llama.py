"""A Llama-style character model on tiny-shakespeare, sized like the CPU GPT recipe.

  python scripts/train.py --config configs/shakespeare_char_llama.py --workdir runs/llama

RMSNorm, rotary positions, SwiGLU and grouped-query attention in place of the
GPT's LayerNorm, learned positions, GELU and multi-head attention; the data,
optimizer and schedule are shakespeare_char_gpt_cpu.py's, so validation losses
compare directly. Measured (whole validation split, 2 CPU cores, about 90 s):
validation loss 1.622 ± 0.007 over seeds 0, 1, 2 (seed 0: 1.631, test 1.742),
against the GPT's 1.889 ± 0.015; Welch p = 1.6e-4 (docs/experiments.md).
"""

import ml_collections

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg=None):
  config = shakespeare_char_gpt_cpu.get_config()
  config.model = m = ml_collections.ConfigDict()  # Replaced whole: the GPT's keys don't apply.
  m.name = "llama"
  m.num_layers = 4
  m.num_heads = 4
  m.num_kv_heads = 2  # Key/value heads, each serving num_heads // num_kv_heads query heads.
  m.head_dim = 0  # Each head's width; 0: d_model / num_heads.
  m.d_model = 128
  m.max_len = 64  # Longest context: data.seq_len and the decode cache stay within it.
  m.mlp_dim = 0  # SwiGLU width; 0: 8/3 * d_model rounded up to a multiple of 8 (344).
  m.dropout = 0.0
  m.tie_embeddings = True  # The head reuses the embedding table (Llama's is separate).
  m.rope_base = 10000.0  # Rotary frequencies: position * rope_base^(-2i / head width).
  m.rope_type = "default"  # Or linear, llama3 (Llama 3.1): how the frequencies are scaled...
  m.rope_factor = 1.0  # ...by this factor (linear, llama3)...
  m.rope_low_freq_factor = 1.0  # ...llama3: wavelengths over original_max_len / this...
  m.rope_high_freq_factor = 4.0  # ...and under original_max_len / this (kept)...
  m.rope_original_max_len = 8192  # ...of the context it was pre-trained on.
  m.norm_eps = 1e-5  # RMSNorm epsilon.
  m.attention_bias = False  # Biases in the q, k, v and output projections.
  m.qkv_bias = False  # Biases in the q, k and v projections only (Qwen2).
  m.mlp_bias = False  # Biases in the SwiGLU's three projections.
  m.qk_norm = False  # RMSNorm on each head's queries and keys before the rotation (Qwen3).
  m.sliding_window = 0  # Local layers see the last this many positions, their own too; 0: all.
  m.layer_pattern = "l"  # Local (l) and global (g) layers, repeated: 'l' all local, 'lg' alternate.
  m.dtype = "auto"  # Compute: float32, bfloat16, or auto (bfloat16 on GPU/TPU, float32 on CPU);
  # softmax, norms and the loss stay float32.
  m.param_dtype = "float32"  # Parameters (and the weights checkpoints hold): float32 or bfloat16.
  m.attention = "auto"  # reference (einsum), xla or cudnn (jax.nn.dot_product_attention), auto.
  m.remat = "none"  # Recompute blocks in the backward pass: none, block (save nothing), dots.
  m.scan_layers = False  # The blocks as one nn.scan: compile time stays flat as depth grows.
  return configs.preset(config, arg)
