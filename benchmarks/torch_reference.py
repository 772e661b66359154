"""PyTorch reference for lm_jax: the same two models and recipes in plain eager PyTorch.

Standalone: needs only torch and numpy; nothing in lm_jax or its tests imports it.

  python benchmarks/torch_reference.py speed --model gpt --batch 12 --seq_len 64
  python benchmarks/torch_reference.py speed --model lstm --batch 32 --seq_len 128
  python benchmarks/torch_reference.py speed --model gpt --shape baby   # 6L/6H/384, 8 x 128
  python benchmarks/torch_reference.py speed --model gpt --shape baby --bf16
  python benchmarks/torch_reference.py train --model gpt --seed 0
  python benchmarks/torch_reference.py train --model lstm --seed 0

`speed` times training steps on random tokens; `train` runs the full recipe on
tiny-shakespeare and evaluates once on the whole validation split. Each prints
one JSON line. `--shape baby` is the baby GPT's shape (6 layers, 6 heads, 384
wide, batch 8 x 128; explicit flags still win); `--bf16` runs the forward pass
and loss under `torch.autocast("cpu", dtype=torch.bfloat16)` (weights and
optimizer stay fp32).
"""

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 65
# Sizes by --shape (gpt) and for the lstm recipe; explicit flags override them.
SHAPES = {
  "recipe": {"batch": 12, "seq_len": 64, "n_layer": 4, "n_head": 4, "n_embd": 128},
  "baby": {"batch": 8, "seq_len": 128, "n_layer": 6, "n_head": 6, "n_embd": 384},
  "lstm": {"batch": 32, "seq_len": 128},
}


# --- models -----------------------------------------------------------------


class CausalSelfAttention(nn.Module):
  def __init__(self, n_embd, n_head):
    super().__init__()
    self.n_head = n_head
    self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
    self.c_proj = nn.Linear(n_embd, n_embd, bias=False)

  def forward(self, x):
    B, T, C = x.shape
    q, k, v = self.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
  def __init__(self, n_embd):
    super().__init__()
    self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
    self.gelu = nn.GELU()  # exact (erf) GELU
    self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

  def forward(self, x):
    return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
  def __init__(self, n_embd, n_head):
    super().__init__()
    self.ln_1 = nn.LayerNorm(n_embd, bias=False)
    self.attn = CausalSelfAttention(n_embd, n_head)
    self.ln_2 = nn.LayerNorm(n_embd, bias=False)
    self.mlp = MLP(n_embd)

  def forward(self, x):
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
  """karpathy/nanoGPT model.py with bias=False and dropout=0."""

  def __init__(self, vocab, block_size, n_layer, n_head, n_embd):
    super().__init__()
    self.wte = nn.Embedding(vocab, n_embd)
    self.wpe = nn.Embedding(block_size, n_embd)
    self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
    self.ln_f = nn.LayerNorm(n_embd, bias=False)
    self.lm_head = nn.Linear(n_embd, vocab, bias=False)
    self.lm_head.weight = self.wte.weight  # weight tying
    for m in self.modules():
      if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, mean=0.0, std=0.02)
    for name, p in self.named_parameters():
      if name.endswith("c_proj.weight"):  # residual projections, GPT-2 scaled init
        nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

  def forward(self, idx):
    pos = torch.arange(idx.shape[1], device=idx.device)
    x = self.wte(idx) + self.wpe(pos)
    for block in self.h:
      x = block(x)
    return self.lm_head(self.ln_f(x))


class LSTMLM(nn.Module):
  def __init__(self, vocab, embed=128, hidden=256):
    super().__init__()
    self.embed = nn.Embedding(vocab, embed)
    self.lstm = nn.LSTM(embed, hidden, num_layers=1, batch_first=True)
    self.head = nn.Linear(hidden, vocab)

  def forward(self, idx):
    return self.head(self.lstm(self.embed(idx))[0])


# --- recipes ----------------------------------------------------------------


def build(args, vocab):
  """Model, optimizer and lr(step) for --model."""
  if args.model == "gpt":
    model = GPT(vocab, args.seq_len, args.n_layer, args.n_head, args.n_embd)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # as nanoGPT: embeddings too
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
      [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
      lr=1e-3,
      betas=(0.9, 0.99),
    )
    warmup, decay_steps, max_lr, min_lr = 100, args.steps, 1e-3, 1e-4

    def lr(it):  # nanoGPT train.py get_lr
      if it < warmup:
        return max_lr * (it + 1) / (warmup + 1)
      if it > decay_steps:
        return min_lr
      ratio = (it - warmup) / (decay_steps - warmup)
      return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)
  else:
    model = LSTMLM(vocab)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lr = lambda it: 1e-3
  return model, opt, lr


def train_step(model, opt, x, y, bf16=False):
  with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
  opt.zero_grad(set_to_none=True)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
  opt.step()
  return loss


def load_splits(corpus):
  """TFDS tiny_shakespeare (v1.0.0) splits by character offset in input.txt.

  Checked against TFDS's prepared dataset: each split is one example whose text
  is exactly input.txt[a:b] with N = 1115394 characters:
    train      = [0, 1003854)        = [0, int(0.9 N))
    validation = [1003854, 1059624)  = [int(0.9 N), int(0.95 N))
    test       = [1059624, 1115394)  = [int(0.95 N), N)
  """
  with open(corpus, encoding="utf-8") as f:
    text = f.read()
  assert len(text) == 1115394, len(text)
  return text[:1003854], text[1003854:1059624]


@torch.no_grad()
def evaluate(model, val, seq_len, batch=64):
  """Mean cross-entropy over all len(val)-1 next-token predictions, each once."""
  model.eval()
  n = len(val) - 1
  xs, ys = [], []
  for i in range(0, n, seq_len):
    x, y = val[i : i + seq_len], val[i + 1 : i + seq_len + 1]
    pad = seq_len - len(y)  # the last window is padded; its padding is masked
    xs.append(F.pad(x[: len(y)], (0, pad), value=0))
    ys.append(F.pad(y, (0, pad), value=-1))
  X, Y = torch.stack(xs), torch.stack(ys)
  total = 0.0
  for j in range(0, len(X), batch):
    logits = model(X[j : j + batch])
    total += F.cross_entropy(
      logits.reshape(-1, logits.shape[-1]),
      Y[j : j + batch].reshape(-1),
      ignore_index=-1,
      reduction="sum",
    ).item()
  assert (Y != -1).sum().item() == n
  model.train()
  return total / n


def run_train(args):
  train_text, val_text = load_splits(args.corpus)
  chars = sorted(set(train_text))
  stoi = {c: i for i, c in enumerate(chars)}
  encode = lambda s: torch.from_numpy(np.array([stoi[c] for c in s], dtype=np.int64))
  train, val = encode(train_text), encode(val_text)
  torch.manual_seed(args.seed)
  model, opt, lr = build(args, len(chars))
  gen = torch.Generator().manual_seed(args.seed)
  offsets = torch.arange(args.seq_len + 1)
  t0 = time.perf_counter()
  for it in range(args.steps):
    starts = torch.randint(0, len(train) - args.seq_len, (args.batch,), generator=gen)
    win = train[starts[:, None] + offsets]
    for g in opt.param_groups:
      g["lr"] = lr(it)
    loss = train_step(model, opt, win[:, :-1], win[:, 1:], args.bf16)
    if args.log_every and (it % args.log_every == 0 or it == args.steps - 1):
      print(f"step {it} loss {loss.item():.4f}", flush=True)
  train_seconds = time.perf_counter() - t0
  val_loss = evaluate(model, val, args.seq_len)
  print(
    json.dumps(
      {
        "model": args.model,
        "seed": args.seed,
        "val_loss": round(val_loss, 4),
        "train_seconds": round(train_seconds, 1),
        "tokens_per_sec": round(args.steps * args.batch * args.seq_len / train_seconds),
      }
    )
  )


def run_speed(args):
  torch.manual_seed(0)
  model, opt, _ = build(args, VOCAB)
  times = []
  for it in range(3 + args.steps):  # 3 warm-up steps, then timed steps
    win = torch.randint(0, VOCAB, (args.batch, args.seq_len + 1))
    t0 = time.perf_counter()
    train_step(model, opt, win[:, :-1], win[:, 1:], args.bf16).item()
    if it >= 3:
      times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  print(
    json.dumps(
      {
        "model": args.model,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "shape": f"{args.n_layer}L/{args.n_head}H/{args.n_embd}" if args.model == "gpt" else None,
        "bf16": args.bf16,
        "step_sec_median": round(med, 5),
        "tokens_per_sec": round(args.batch * args.seq_len / med),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
      }
    )
  )


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("mode", choices=["speed", "train"])
  p.add_argument("--model", choices=["gpt", "lstm"], required=True)
  p.add_argument("--batch", type=int)
  p.add_argument("--seq_len", type=int)
  p.add_argument("--steps", type=int, help="speed: timed steps (30); train: 2000")
  p.add_argument("--shape", choices=list(SHAPES), default="recipe", help="gpt: size preset")
  p.add_argument("--n_layer", type=int, help="gpt (default: from --shape)")
  p.add_argument("--n_head", type=int, help="gpt (default: from --shape)")
  p.add_argument("--n_embd", type=int, help="gpt (default: from --shape)")
  p.add_argument("--bf16", action="store_true", help="autocast the forward pass to bfloat16")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--corpus", default="input.txt", help="train: tiny-shakespeare's input.txt")
  p.add_argument("--log_every", type=int, default=0, help="train: print the loss every N steps")
  args = p.parse_args()
  shape = SHAPES[args.shape] if args.model == "gpt" else SHAPES["lstm"]
  for key, value in shape.items():
    if getattr(args, key, None) is None:
      setattr(args, key, value)
  args.steps = args.steps or (30 if args.mode == "speed" else 2000)
  run_speed(args) if args.mode == "speed" else run_train(args)


if __name__ == "__main__":
  main()
