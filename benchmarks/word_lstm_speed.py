"""Where the word-LM LSTM's training step spends its time: the whole step and its pieces.

  python benchmarks/word_lstm_speed.py --vocab 13777 [--threads 2] [--repeats 30]

The shape of PyTorch's word_language_model (2 x 200 LSTM, batch 20, bptt 35) and lm_jax's
configs/word_lstm.py. Times (median ms over --repeats, after warm-up) for: the whole jitted
train step (clip + SGD, the carried state, as the recipe trains), the forward and backward
pass of the model, the LSTM stack alone and the head with its softmax cross-entropy alone
(forward and backward, and forward only); and the same pieces in PyTorch eager
(`--torch`: main.py's model, log_softmax + NLLLoss, clip_grad_norm_, the SGD loop).
Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import time

parser = argparse.ArgumentParser()
parser.add_argument("--vocab", type=int, default=13777)
parser.add_argument("--batch", type=int, default=20)
parser.add_argument("--seq_len", type=int, default=35)
parser.add_argument("--width", type=int, default=200)
parser.add_argument("--repeats", type=int, default=30)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--torch", action="store_true", help="Time PyTorch's pieces too.")
args = parser.parse_args()


def median_ms(fn, sync, repeats):
  for _ in range(3):
    sync(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t)
  return 1000 * statistics.median(times)


def jax_pieces():
  import jax
  import jax.numpy as jnp
  import numpy as np

  from lm_jax import config as config_lib
  from lm_jax import losses, models, optim, train
  from lm_jax import state as state_lib

  config = config_lib.load("configs/word_lstm.py")
  config.train.parallel = "jit"
  model = models.build_model(config.model, args.vocab)
  tx, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  create, rng = state_lib.state_factory(config, model, tx)
  state = jax.jit(create)()
  tokens = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq_len + 1))
  batch = {
    "inputs": jnp.asarray(tokens[:, :-1]),
    "targets": jnp.asarray(tokens[:, 1:]),
    "continues": jnp.ones(args.batch),  # The recipe carries the LSTM state across steps.
  }
  step = jax.jit(train.train_step, donate_argnums=0)
  out = {}

  def run_step():
    nonlocal state
    state, m = step(state, batch, rng)
    return m

  out["step"] = median_ms(run_step, jax.block_until_ready, args.repeats)
  params = state.params

  def loss(p):
    logits = model.apply({"params": p}, batch["inputs"], deterministic=False, rngs={"dropout": rng})
    return losses.cross_entropy_sums(logits, batch["targets"])[0]

  grad = jax.jit(jax.grad(loss))
  out["forward_backward"] = median_ms(lambda: grad(params), jax.block_until_ready, args.repeats)
  x_NxC = jax.random.normal(jax.random.key(1), (args.batch * args.seq_len, args.width))
  head = params["head"]

  def head_loss(h, x):
    logits = x @ h["kernel"] + h["bias"]
    return losses.cross_entropy_sums(logits[None], batch["targets"].reshape(1, -1))[0]

  head_grad = jax.jit(jax.grad(head_loss, argnums=(0, 1)))
  out["head_and_loss"] = median_ms(
    lambda: head_grad(head, x_NxC), jax.block_until_ready, args.repeats
  )
  head_fwd = jax.jit(head_loss)
  out["head_and_loss_forward"] = median_ms(
    lambda: head_fwd(head, x_NxC), jax.block_until_ready, args.repeats
  )
  lstm = {k: v for k, v in params.items() if k.startswith("lstm")}
  emb = jax.random.normal(jax.random.key(2), (args.seq_len, args.batch, args.width))

  def lstm_sum(p, x):
    from lm_jax.models import lstm as lstm_lib

    for i in range(len(p)):
      layer = p[f"lstm_{i}"]
      zeros = jnp.zeros((args.batch, args.width))
      x, _ = lstm_lib.recurrence(
        x, layer["ih_kernel"], layer["bias"], layer["hh_kernel"], (zeros, zeros)
      )
    return jnp.sum(x)

  lstm_grad = jax.jit(jax.grad(lstm_sum, argnums=(0, 1)))
  out["lstm_stack"] = median_ms(lambda: lstm_grad(lstm, emb), jax.block_until_ready, args.repeats)
  return out


def torch_pieces():
  import torch
  import torch.nn as nn
  import torch.nn.functional as F

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  V, B, L, C = args.vocab, args.batch, args.seq_len, args.width
  enc, rnn, dec = nn.Embedding(V, C), nn.LSTM(C, C, 2, dropout=0.2), nn.Linear(C, V)
  drop = nn.Dropout(0.2)
  params = [*enc.parameters(), *rnn.parameters(), *dec.parameters()]
  data = torch.randint(0, V, (L, B))
  targets = torch.randint(0, V, (L * B,))
  hidden = (torch.zeros(2, B, C), torch.zeros(2, B, C))

  def step():
    for p in params:
      p.grad = None
    out, _ = rnn(drop(enc(data)), hidden)
    loss = F.nll_loss(F.log_softmax(dec(drop(out)).view(-1, V), dim=1), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.25)
    with torch.no_grad():
      for p in params:
        p.add_(p.grad, alpha=-20)
    return loss

  x = torch.randn(L * B, C, requires_grad=True)

  def head():
    dec.zero_grad()
    loss = F.nll_loss(F.log_softmax(dec(x), dim=1), targets)
    loss.backward()
    return loss

  emb = torch.randn(L, B, C, requires_grad=True)

  def lstm():
    rnn.zero_grad()
    out, _ = rnn(emb, hidden)
    out.sum().backward()
    return out

  sync = lambda _: None
  return {
    "step": median_ms(step, sync, args.repeats),
    "head_and_loss": median_ms(head, sync, args.repeats),
    "lstm_stack": median_ms(lstm, sync, args.repeats),
  }


if __name__ == "__main__":
  result = {
    "vocab": args.vocab,
    "batch": args.batch,
    "seq_len": args.seq_len,
    "jax_ms": jax_pieces(),
  }
  if args.torch:
    result["torch_ms"] = torch_pieces()
  result["cpus"] = len(os.sched_getaffinity(0))
  print(json.dumps(result))
