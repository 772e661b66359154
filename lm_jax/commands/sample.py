"""Samples text from a trained run; stdout carries the samples alone.

  lm-jax sample --workdir runs/gpt_cpu --prompt "ROMEO:" --max_new_tokens 300 \
      --temperature 0.8 --top_k 40 --top_p 0.95 --num_samples 3 --seed 0

Samples are separated by a line holding `---`. An empty prompt starts from a
newline. Same seed, same output.

A chat model (its tokenizer has a chat template, as tokenizer_config.json's chat_template):

  lm-jax sample --workdir runs/chat --chat --prompt "Hello!" [--system "Be brief."]
  lm-jax sample --workdir runs/chat --chat --messages conversation.json

formats the conversation with the template (each --prompt, or each line of --prompt_file, is
the user's message; --messages a JSON list of {"role", "content"} messages, the conversation
so far) and prints the assistant's reply alone, which ends at the template's end of turn.
"""

import sys
import time

from absl import flags

from lm_jax import cli

flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
flags.DEFINE_string("prompt", "", "Text to continue ('' starts from a newline).")
flags.DEFINE_string("prompt_file", None, "A file of prompts, one per line (\\n escapes a newline).")
flags.DEFINE_integer("max_new_tokens", 300, "Tokens to generate per sample.")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 is greedy.")
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
flags.DEFINE_float(
  "top_p", 1.0, "Keep the smallest set of tokens with this much probability (1: all)."
)
flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to load (default: the newest).")
flags.DEFINE_enum(
  "long_prompt",
  "trim",
  ["trim", "error"],
  "A prompt longer than the context: keep its end (with a warning), or refuse.",
)
flags.DEFINE_bool("chat", False, "Format the prompt as a chat model's conversation; print replies.")
flags.DEFINE_string("system", None, "--chat: a system message before the user's.")
flags.DEFINE_string("messages", None, "--chat: a JSON file of the conversation's messages.")
flags.DEFINE_bool("cache", True, "Decode with the model's cache (KV or LSTM state).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top  (late, so --help stays fast)

  from lm_jax import runs, sample  # pylint: disable=g-import-not-at-top
  from lm_jax.data import chat  # pylint: disable=g-import-not-at-top

  _, model, tokenizer, state, step, _ = runs.load_run(FLAGS.workdir, FLAGS.checkpoint_step)
  texts = sample.read_prompts(FLAGS.prompt, FLAGS.prompt_file, FLAGS.num_samples)
  if FLAGS.chat:
    system = [{"role": "system", "content": FLAGS.system}] if FLAGS.system else []
    conversations = [system + [{"role": "user", "content": t}] for t in texts]
    if FLAGS.messages:
      conversations = [chat.read_messages(FLAGS.messages)] * FLAGS.num_samples
    encoded = [chat.prompt(tokenizer, c) for c in conversations]
    prompts, stop = [ids for ids, _ in encoded], encoded[0][1]
    texts = [""] * len(prompts)  # Replies alone.
  else:
    prompts = [tokenizer.encode(t) for t in texts]
    stop = getattr(tokenizer, "eos_id", None)
  start = time.perf_counter()
  new = sample.generate(
    model,
    state.params,
    prompts,
    jax.random.key(FLAGS.seed),
    max_new_tokens=FLAGS.max_new_tokens,
    temperature=FLAGS.temperature,
    top_k=FLAGS.top_k,
    top_p=FLAGS.top_p,
    eos_id=stop,
    long_prompt=FLAGS.long_prompt,
    use_cache=FLAGS.cache,
  )
  seconds = time.perf_counter() - start
  print("\n---\n".join(t + tokenizer.decode(ids) for t, ids in zip(texts, new, strict=True)))
  total = sum(len(ids) for ids in new)
  speed = f"{total} tokens in {seconds:.2f} s (with compilation), {total / seconds:,.0f} tokens/s"
  print(f"checkpoint {step}: {speed}", file=sys.stderr)


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
