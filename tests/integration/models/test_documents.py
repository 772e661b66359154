"""Document masking: a packed window gives each of its documents the logits it has alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax import evaluate, models, runs, sample, train

V, EOD, L = 32, 0, 16
CONFIGS = {
  "gpt": dict(name="gpt", num_layers=2, num_heads=2, d_model=16, max_len=L),
  "llama": dict(  # GQA and a scanned stack: the starts reach every layer through the scan.
    name="llama", num_layers=2, num_heads=4, num_kv_heads=2, d_model=16, max_len=L, scan_layers=True
  ),
}
# Two rows of L tokens: the tail of a document, then documents opened by their end-of-document
# token; the lengths of their text.
DOCUMENTS = ((3, 4, 5, 1), (1, 7, 6))


def packed():
  rng = np.random.default_rng(0)
  rows, spans = [], []
  for lengths in DOCUMENTS:
    row, at = [], []
    for i, n in enumerate(lengths):
      at.append((len(row), len(row) + n + (i > 0)))
      row += ([EOD] if i else []) + list(rng.integers(1, V, n))
    rows.append(row)
    spans.append(at)
  assert all(len(r) == L for r in rows)
  return jnp.array(rows, jnp.int32), spans


def cached_logits(model, params, tokens, prefill: int):
  """Logits of every position from the KV cache: a prefill, then one token at a time."""
  step = jax.jit(lambda t, c: model.apply({"params": params}, t, cache=c))
  logits, cache = step(tokens[:, :prefill], model.init_cache(tokens.shape[0], L))
  out = [logits]
  for t in range(prefill, L):
    logits, cache = step(tokens[:, t : t + 1], cache)
    out.append(logits)
  return jnp.concatenate(out, axis=1)


@pytest.mark.parametrize("attention", ["reference", "xla"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_document_of_a_packed_window_gets_its_logits_alone(name, attention):
  model = models.build_model({**CONFIGS[name], "attention": attention}, V, (EOD,))
  tokens, spans = packed()
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
  apply = jax.jit(model.apply, static_argnames="deterministic")
  training = apply(
    {"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.key(1)}
  )
  cached = cached_logits(model, params, tokens, prefill=5)  # Prefill ends inside a document.
  unmasked = jax.jit(model.clone(eod_ids=()).apply)({"params": params}, tokens)
  worst = 0.0
  for b, row_spans in enumerate(spans):
    for s, e in row_spans:
      alone = apply({"params": params}, tokens[b : b + 1, s:e])[0]
      for logits in (training, cached):
        np.testing.assert_allclose(logits[b, s:e], alone, rtol=1e-5, atol=1e-5)
        worst = max(worst, float(jnp.abs(logits[b, s:e] - alone).max()))
      if s > 0:  # Without the mask, later documents see the earlier ones: the test can tell.
        assert float(jnp.abs(unmasked[b, s:e] - alone).max()) > 1e-3
  print(f"{name} {attention}: largest difference from the documents alone {worst:.2e}")


def test_a_masked_run_trains_evaluates_and_samples_inside_documents(config, tmp_path):
  config.data.document_masking = True
  config.train.update(num_steps=2, log_every=1, eval_every=2)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  _, model, tokenizer, state, *_ = runs.load_run(workdir)
  # The char tokenizer ends a document at each newline.
  assert model.eod_ids == tuple(int(i) for i in tokenizer.eod_ids) == (tokenizer.encode("\n")[0],)
  assert evaluate.evaluate_run(workdir, "validation", parallel_mode="jit")["tokens"] > 0
  prompt = tokenizer.encode("The king\nand")
  new = sample.generate(model, state.params, [prompt], jax.random.key(0), max_new_tokens=6)
  full = sample.generate(
    model, state.params, [prompt], jax.random.key(0), max_new_tokens=6, use_cache=False
  )
  np.testing.assert_array_equal(new[0], full[0])  # Cached decoding masks as the full forward.
