"""Preference pairs: a prompt and a chosen and a rejected response, as rows of token ids.

data.format='preference' reads records from data.text_files (JSON Lines, plain or compressed,
or Parquet: data.dataset 'jsonl' or 'parquet'), each either

  {"prompt": text, "chosen": text, "rejected": text}             plain text, or
  {"messages": [{"role", "content"}, ...], "chosen": text, "rejected": text}

where a conversation is rendered with the tokenizer's chat template (the built-in one without)
and its replies are the assistant's next turn. They are tokenized as TRL's DPOTrainer does:
the prompt alone and prompt + response each as a whole (plain text: the response ends with
the end-of-text id), the response being what follows their common prefix. A pair is two rows
of data.seq_len + 1 ids, chosen then rejected, right-padded with 0, whose loss weights mark
the response's tokens; a response cut by the row's end keeps its start, and a pair whose
prompt fills the row is dropped (and counted). Without data.text_files.validation, the last
data.holdout_fraction of the train records are the validation pairs.
"""

import dataclasses

import numpy as np

from lm_jax.data import chat, record_files

FIELDS = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class Pairs:
  """A split's pairs: tokens int32 [N, 2, L + 1] and weights float32 [N, 2, L]."""

  tokens: np.ndarray
  weights: np.ndarray
  dropped: int  # Pairs whose prompt alone filled a row.

  def __len__(self) -> int:
    return len(self.tokens)

  @property
  def fingerprint(self) -> str:
    return record_files.fingerprint(self.tokens, self.weights)


def _text(record: dict, key: str, where) -> str:
  value = record.get(key)
  if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
    record = {key: value[0].get("content")}  # TRL's form: [{"role": "assistant", ...}].
  fix = "a preference record holds 'prompt' (or 'messages'), 'chosen' and 'rejected' texts"
  return record_files.text_field(record, key, where, fix)


def encode_pair(tokenizer, record: dict, where) -> tuple[list, list, list]:
  """(prompt ids, chosen ids, rejected ids) of one record, as TRL's DPOTrainer tokenizes it."""
  replies = [_text(record, k, where) for k in FIELDS]
  if chat.MESSAGES in record:
    turns = chat.messages(record, where)
    template = getattr(tokenizer, "chat_template", None)
    prompt = chat.render_text(template, turns, add_generation_prompt=True)
    full = [
      chat.render_text(template, [*turns, {"role": "assistant", "content": r}]) for r in replies
    ]
    eos = []
  else:
    prompt = _text(record, "prompt", where)
    full = [prompt + r for r in replies]
    eos = [] if tokenizer.eos_id is None else [int(tokenizer.eos_id)]
  prompt_ids = [int(i) for i in tokenizer.encode(prompt)]
  ids = [[int(i) for i in tokenizer.encode(text)] + eos for text in full]
  shared = min(_common_prefix(prompt_ids, x) for x in ids)
  return prompt_ids[:shared], ids[0][shared:], ids[1][shared:]


def _common_prefix(a: list, b: list) -> int:
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


def encode(tokenizer, records, seq_len: int) -> Pairs:
  """The `(where, record)` pairs as rows of seq_len + 1 ids."""
  tokens, weights, dropped = [], [], 0
  for where, record in records:
    prompt, *replies = encode_pair(tokenizer, record, where)
    if len(prompt) >= seq_len + 1:
      dropped += 1
      continue
    row_t = np.zeros((2, seq_len + 1), np.int32)
    row_w = np.zeros((2, seq_len), np.float32)
    for j, reply in enumerate(replies):
      ids = (prompt + reply)[: seq_len + 1]
      row_t[j, : len(ids)] = ids
      row_w[j, max(len(prompt) - 1, 0) : len(ids) - 1] = 1.0  # Targets that are the reply's.
    tokens.append(row_t)
    weights.append(row_w)
  if not tokens:
    return Pairs(np.zeros((0, 2, seq_len + 1), np.int32), np.zeros((0, 2, seq_len)), dropped)
  return Pairs(np.stack(tokens), np.stack(weights), dropped)


def prepare(data_config, workdir: str, is_writer: bool = True):
  """(the tokenizer, {split: Pairs}); the tokenizer is saved in `workdir` as data.prepare does."""
  c = data_config
  empty = lambda pairs: (
    f"pair that fits data.seq_len={c.seq_len} ({pairs.dropped} prompts fill it): raise "
    "data.seq_len or give pairs"
  )
  reader, encode_fn = "data.format='preference'", lambda t, r: encode(t, r, c.seq_len)
  return record_files.encoded(c, workdir, is_writer, reader, "configs/dpo.py", encode_fn, empty)
