"""Prompts for reinforcement learning: records whose prompt a model completes, as token rows.

data.format='prompt' reads records from data.text_files (JSON Lines or Parquet: data.dataset
'jsonl' or 'parquet'), each {"prompt": text, ...} or {"messages": [...], ...}, a conversation
rendered by the tokenizer's chat template with the header that asks for the assistant's reply
(the built-in one without a template). Every other field (a reference answer, say) is handed
to the reward functions with the prompt's completions. A prompt is at most `length` ids; a
longer one is dropped (and counted). Without data.text_files.validation, the last
data.holdout_fraction of the train records are the held-out prompts.
"""

import dataclasses

import numpy as np

from lm_jax import UserError
from lm_jax.data import chat, record_files


@dataclasses.dataclass(frozen=True)
class Prompts:
  """A split's prompts: ids int32 [N, length] (right-padded with 0), their lengths, what the
  reward functions receive as the prompt (its text, or its messages), and each record's other
  fields."""

  ids: np.ndarray
  lengths: np.ndarray
  prompts: list
  fields: list[dict]
  dropped: int

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def fingerprint(self) -> str:
    return record_files.fingerprint(self.ids, self.lengths, extra=self.fields)


def encode(tokenizer, records, length: int) -> Prompts:
  """The `(where, record)` pairs' prompts as rows of `length` ids."""
  rows, lengths, prompts, fields, dropped = [], [], [], [], 0
  template = getattr(tokenizer, "chat_template", None)
  for where, record in records:
    if chat.MESSAGES in record:
      prompt = chat.messages(record, where)
      text = chat.render_text(template, prompt, add_generation_prompt=True)
    elif isinstance(record.get("prompt"), str):
      prompt = text = record["prompt"]
    else:
      got = "has no field" if "prompt" not in record else "has no text in field"
      raise UserError(
        f"{where()} {got} 'prompt' (its fields: {sorted(record)}): a prompt record holds a "
        "'prompt' text or a 'messages' conversation."
      )
    ids = np.asarray(tokenizer.encode(text), np.int32)
    if not 0 < len(ids) <= length:
      dropped += 1
      continue
    rows.append(np.pad(ids, (0, length - len(ids))))
    lengths.append(len(ids))
    prompts.append(prompt)
    fields.append({k: v for k, v in record.items() if k not in ("prompt", chat.MESSAGES)})
  ids = np.stack(rows) if rows else np.zeros((0, length), np.int32)
  return Prompts(ids, np.asarray(lengths, np.int32), prompts, fields, dropped)


def prepare(data_config, workdir: str, length: int, is_writer: bool = True):
  """(the tokenizer, {split: Prompts} of prompts at most `length` ids); the tokenizer is the
  model's, saved in `workdir` as data.prepare does."""
  c = data_config
  empty = lambda found: (
    f"prompt of at most {length} tokens (data.seq_len less train.grpo.max_new_tokens; "
    f"{found.dropped} longer): raise data.seq_len"
  )
  reader, encode_fn = "data.format='prompt'", lambda t, r: encode(t, r, length)
  return record_files.encoded(c, workdir, is_writer, reader, "configs/grpo.py", encode_fn, empty)
