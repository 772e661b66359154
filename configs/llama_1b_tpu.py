"""A 1.1B-parameter Llama on English Wikipedia for a TPU v5e slice of 8 chips (v5e-8).

  python scripts/train.py --config configs/llama_1b_tpu.py --workdir runs/llama_1b
  python scripts/compile_check.py --config configs/llama_1b_tpu.py --topology v5e:2x4

TinyLlama's shape: 22 layers, 2048 wide, 32 query heads sharing 4 key/value heads, a
5,632-wide SwiGLU, an untied head, 2,048 tokens of context; a 32,768-piece SentencePiece BPE
(trained on the first 50 MB of the train split) in place of Llama's 32,000. Corpus: TFDS
`wiki40b/en`, as configs/gpt2_small.py. AdamW 3e-4 with 2,000 warmup steps and cosine decay
to 3e-5; 256 sequences x 2,048 = 524,288 tokens per optimizer step, as 32 accumulated
microbatches of 8 rows (1 per chip); bf16 compute (model.dtype=auto), float32 parameters
and optimizer state; every parameter and its optimizer state split over the 8 chips (FSDP,
mesh.fsdp=-1), each block recomputed in the backward pass (model.remat='block'), the blocks
scanned (compile time flat in depth).

MEASURED with scripts/compile_check.py (libtpu 0.0.42.1, the command above, on a CPU,
2026-12-02): 10.55 GiB per chip (1.54 GiB of parameters and optimizer state, 9.01 GiB of
temporaries) of the 15.75 GiB XLA can use on a v5e chip: fits. With 2 rows per chip (16
microbatches) the step needs 17.38 GiB and does not. Not yet trained on a TPU; the loss this
recipe reaches is unknown.
"""

import ml_collections

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg=None):
  config = shakespeare_char_gpt_cpu.get_config()
  config.model = m = ml_collections.ConfigDict()  # Replaced whole: the GPT's keys don't apply.
  m.name = "llama"
  m.num_layers = 22
  m.num_heads = 32
  m.num_kv_heads = 4  # Key/value heads, each serving 8 query heads.
  m.d_model = 2048
  m.max_len = 2048  # Longest context: data.seq_len and the decode cache stay within it.
  m.mlp_dim = 5632  # SwiGLU width.
  m.dropout = 0.0
  m.tie_embeddings = False
  m.rope_base = 10000.0
  m.norm_eps = 1e-5
  m.attention_bias = False
  m.mlp_bias = False
  m.dtype = "auto"  # bfloat16 on GPU/TPU; parameters, optimizer state, softmax and loss float32.
  m.attention = "auto"  # XLA's fused attention on TPU, cuDNN on NVIDIA GPUs.
  m.remat = "block"  # Keep only each block's input for the backward pass.
  m.scan_layers = True  # Compiles one block instead of 22.
  d = config.data
  d.dataset = "wiki40b/en"
  d.eval_split = "validation[:5%]"
  d.test_split = "test"
  d.tokenizer = "sentencepiece"
  d.vocab_size = 32768
  d.tokenizer_train_bytes = 50_000_000
  d.seq_len = 2048
  o = config.optim
  o.learning_rate = 3e-4
  o.min_learning_rate = 3e-5
  o.warmup_steps = 2000
  o.b2 = 0.95
  o.weight_decay = 0.1
  o.grad_clip = 1.0
  t = config.train
  t.batch_size = 256  # x 2,048 tokens = 524,288 tokens per optimizer step.
  t.grad_accum_steps = 32  # Microbatches of 8 rows: 1 per chip on 8 chips (2 do not fit).
  t.num_steps = 20_000  # 10.5B tokens.
  t.log_every = 10
  t.eval_every = 1000
  t.eval_batch_size = 32
  t.checkpoint_every = 1000
  t.parallel = "sharded"
  config.mesh.data = 1
  config.mesh.fsdp = -1  # Every chip holds 1/N of each parameter and its optimizer state.
  config.mesh.tensor = 1  # 2 or 4 splits heads and MLP widths too (see docs/scaling.md).
  return configs.preset(config, arg)
