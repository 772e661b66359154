"""The tokenization benchmark: the same tokens for any worker count."""

from configs import tiny


def test_tokenization_benchmark_rows_agree_across_worker_counts(monkeypatch):
  from lm_jax.data import benchmark as data_benchmark
  from lm_jax.data import chunks

  monkeypatch.setattr(chunks, "CHUNK_CHARS", 50_000)  # Enough chunks for a pool.
  config = tiny.get_config()
  rows = list(data_benchmark.run(config, ["char", "byte"], [1, 2], corpus_mb=1))
  assert [(r["tokenizer"], r["workers"]) for r in rows] == [
    ("char", 1),
    ("char", 2),
    ("byte", 1),
    ("byte", 2),
  ]
  assert rows[0]["fingerprint"] == rows[1]["fingerprint"] != rows[2]["fingerprint"]
  assert rows[2]["fingerprint"] == rows[3]["fingerprint"]
  assert len({r["bytes"] for r in rows}) == 1 and 0.9 * 2**20 < rows[0]["bytes"] <= 2**20
  assert all(r["mb_per_sec"] > 0 and r["peak_memory_mib"] > 0 for r in rows)
