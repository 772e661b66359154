"""Tokenizes every configured split into the token cache, or finds it there; prints one JSON object.

  python scripts/prepare_data.py --config CONFIG.py [--config.KEY=VALUE ...]
  python scripts/prepare_data.py --config CONFIG.py --benchmark --corpus_mb 1024 \
    --tokenizers byte,char,sentencepiece,word --workers 1,2

`lm-jax prepare-data` is the same command; lm_jax/commands/prepare_data.py holds it and says more.
"""

from lm_jax.commands import prepare_data

if __name__ == "__main__":
  prepare_data.run()
