"""Samples text from a trained run; stdout carries the samples alone.

  python scripts/sample.py --workdir runs/gpt_cpu --prompt "ROMEO:" --max_new_tokens 300 \
      --temperature 0.8 --top_k 40 --top_p 0.95 --num_samples 3 --seed 0
  python scripts/sample.py --workdir runs/chat --chat --prompt "Hello!" [--system "Be brief."]
  python scripts/sample.py --workdir runs/chat --chat --messages conversation.json

`lm-jax sample` is the same command; lm_jax/commands/sample.py holds it and says more.
"""

from lm_jax.commands import sample

if __name__ == "__main__":
  sample.run()
