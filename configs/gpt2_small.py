"""GPT-2 small (124M parameters) on English Wikipedia: a recipe for GPUs and TPUs.

  python scripts/train.py --config configs/gpt2_small.py --workdir runs/gpt2_small

12 layers, 12 heads, 768 wide, 1024 tokens of context, as GPT-2 small; a
32,768-piece SentencePiece BPE trained on the first 50 MB of the train split
in place of GPT-2's byte BPE (the tied embedding makes this model 110M
parameters, GPT-2's vocabulary 124M). Corpus: TFDS `wiki40b/en` (cleaned
Wikipedia, about 2.9M train articles; TFDS prepares it once with Apache
Beam, see its catalog page). AdamW 6e-4 with 1,000 warmup
steps and cosine decay to 6e-5 as nanoGPT's GPT-2 recipe; 512 sequences x 1024
= 524,288 tokens per optimizer step, as 16 accumulated microbatches; bf16
compute by `model.dtype=auto` (float32 parameters, optimizer state, softmax,
norms and loss); `sharded` (jit over a mesh of all devices). 10,000 steps
are 5.2B tokens.

ESTIMATED, not yet measured: the model's training FLOPs per token are 6 x 110M
parameters + 12 x layers x width x context attention = 0.774 GFLOP. At an
assumed 40% MFU: A100 (312 TFLOP/s bf16) about 160k tokens/s per GPU, 3.3 s
per step, 9 hours for 10,000 steps on one GPU; H100 SXM (989 TFLOP/s) about
510k tokens/s, 1.0 s per step. `python scripts/device_check.py` measures
tokens/s, MFU and peak memory of this model on a lent GPU or TPU in minutes;
replace these figures with its output.

Memory: one 32-row microbatch on one device holds 4.3 GB of float32 logits
and as much again for their gradient; with more devices each holds 512 / 16 / devices
rows. Lower train.grad_accum_steps on large memories (fewer, larger
microbatches run faster), raise it or set model.remat='dots' on small ones.
"""

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg=None):
  config = shakespeare_char_gpt_cpu.get_config()
  config.model.update(
    num_layers=12,
    num_heads=12,
    d_model=768,
    max_len=1024,
    dropout=0.0,  # No dropout: one pass over the data, as nanoGPT's GPT-2 runs.
    use_bias=False,
    dtype="auto",  # bfloat16 on GPU/TPU.
    attention="auto",  # cuDNN on NVIDIA GPUs, XLA's fused attention on TPU.
    scan_layers=True,  # Compiles one block instead of twelve.
  )
  d = config.data
  d.dataset = "wiki40b/en"
  d.eval_split = "validation[:5%]"  # About 8,000 articles: a few seconds per evaluation.
  d.test_split = "test"
  d.tokenizer = "sentencepiece"
  d.vocab_size = 32768
  d.tokenizer_train_bytes = 50_000_000
  d.seq_len = 1024
  o = config.optim
  o.learning_rate = 6e-4
  o.min_learning_rate = 6e-5
  o.warmup_steps = 1000
  o.b2 = 0.95
  o.weight_decay = 0.1
  t = config.train
  t.batch_size = 512  # x 1024 tokens = 524,288 tokens per optimizer step.
  t.grad_accum_steps = 16  # Microbatches of 32 rows (over all devices together).
  t.num_steps = 10_000
  t.log_every = 10
  t.eval_every = 500
  t.eval_batch_size = 64
  t.checkpoint_every = 500
  t.parallel = "sharded"
  config.mesh.data = -1  # Data parallel over all devices; set fsdp > 1 to split parameters too.
  config.mesh.fsdp = 1
  return configs.preset(config, arg)
