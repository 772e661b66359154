"""Tokenizes every configured split into the token cache, or finds it there; prints one JSON object.

  lm-jax prepare-data --config CONFIG.py [--config.KEY=VALUE ...]

prints {split: {"tokens", "bytes", "seconds", "fingerprint", "workers"}}; a progress bar on
stderr shows MB/s. A training run started afterwards finds the same cache and starts at once.

  lm-jax prepare-data --config CONFIG.py --benchmark --corpus_mb 1024 \
    --tokenizers byte,char,sentencepiece,word --workers 1,2

tokenizes a generated corpus (or, with --corpus_mb 0, the config's train split) into a scratch
cache once per tokenizer and worker count, and prints one JSON object per line: MB/s, seconds,
peak memory of the whole process tree (sum of RSS), and the fingerprint (equal across counts).
With --resume_after SEC, each row also gives the time to resume a build killed SEC seconds in.
--formats text,jsonl,jsonl.gz,jsonl.zst,parquet writes the generated corpus's documents in each
format first (compressed JSON Lines as 8 shards) and adds a row per format: the same documents,
so the same fingerprint.
"""

import json

from absl import flags

from lm_jax import cli
from lm_jax import config as config_lib

flags.DEFINE_string("config", None, "Config file: path.py[:arg] or path.json.", required=True)
flags.DEFINE_bool("benchmark", False, "Measure tokenization speed and memory instead.")
flags.DEFINE_float("corpus_mb", 100, "--benchmark: MiB of generated text (0: the config's data).")
flags.DEFINE_list("tokenizers", ["byte", "char", "sentencepiece"], "--benchmark: tokenizers.")
flags.DEFINE_list("workers", ["1", "2"], "--benchmark: worker counts.")
flags.register_validator(
  "workers", lambda ws: all(w.isdigit() and int(w) > 0 for w in ws), "give counts >= 1: e.g. 1,2."
)
flags.DEFINE_list("formats", ["text"], "--benchmark: file formats of the generated corpus.")
flags.DEFINE_float(
  "resume_after", 0, "--benchmark: also kill a build this many seconds in and time its resume."
)
FLAGS = flags.FLAGS


def main(argv, overrides):
  del argv
  from lm_jax import data  # Imported late so --help stays fast.
  from lm_jax.data import benchmark as data_benchmark

  config = config_lib.override(config_lib.load(FLAGS.config), overrides)
  if not FLAGS.benchmark:
    print(json.dumps(data.prepare_cache(config.data), indent=1))
    return
  workers = [int(w) for w in FLAGS.workers]
  for row in data_benchmark.run(
    config, FLAGS.tokenizers, workers, FLAGS.corpus_mb, FLAGS.resume_after, FLAGS.formats
  ):
    print(json.dumps(row), flush=True)


def run(argv: list[str] | None = None) -> None:
  cli.run_with_overrides(main, argv)
