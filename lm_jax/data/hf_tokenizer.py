"""A Hugging Face tokenizer (tokenizer.json, through the `tokenizers` package) as a tokenizer kind,
and the Hugging Face tokenizer files it reads and writes (tokenizer.json, tokenizer_config.json).
"""

import json
import os

import numpy as np

from lm_jax import UserError
from lm_jax.data import chat, tokenizers


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, d: dict) -> None:
  with open(path, "w") as f:
    json.dump(d, f, indent=2)
    f.write("\n")


class HFTokenizer(tokenizers.Tokenizer):
  """A Hugging Face tokenizer (the `tokenizers` package) and the model vocabulary it feeds.

  `vocab_size` is the model's: Hugging Face models often pad their embedding
  past the tokenizer's ids, never below. Text is encoded without special
  tokens; documents are joined by `eos_id`, which also ends generation.
  """

  kind = "hf"
  reads_text = False  # Read from data.hf_tokenizer, never cached by text: the text cannot tell
  # two models' tokenizers apart.

  def __init__(
    self,
    tokenizer: dict,
    eos_id: int | None,
    vocab_size: int | None = None,
    chat_template: dict | None = None,
  ):
    """`tokenizer`: a parsed tokenizer.json; `vocab_size`: the model's (default: the ids');
    `chat_template`: a chat model's template (chat.ChatTemplate.to_dict), or None."""
    import tokenizers as hf_tokenizers  # pylint: disable=g-import-not-at-top

    self.tokenizer, self.eos_id = tokenizer, eos_id
    self.chat_template = chat.ChatTemplate.from_dict(chat_template) if chat_template else None
    self._tok = hf_tokenizers.Tokenizer.from_str(json.dumps(tokenizer))
    self.eod_ids = np.array([] if eos_id is None else [eos_id], np.int32)
    ids = max(self._tok.get_vocab(with_added_tokens=True).values()) + 1
    self.vocab_size = vocab_size or ids
    if ids > self.vocab_size:
      raise UserError(
        f"the tokenizer has {ids} ids but the model's vocabulary holds {vocab_size}: "
        "use the tokenizer that came with the model."
      )

  @classmethod
  def train(cls, texts, data_config) -> "HFTokenizer":
    """Nothing to train: reads the tokenizer in data.hf_tokenizer."""
    del texts
    return load_tokenizer(data_config.hf_tokenizer)

  def encode(self, text: str) -> np.ndarray:
    return np.array(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    encodings = self._tok.encode_batch(texts, add_special_tokens=False)
    return [np.array(e.ids, np.int32) for e in encodings]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    parts, start = [], 0
    for j, i in enumerate(ids + [self.eos_id]):
      if i == self.eos_id:
        parts.append(self._tok.decode(ids[start:j], skip_special_tokens=False))
        start = j + 1
    return tokenizers.EOD.join(parts)

  def token(self, i: int) -> str | None:
    """The text of token `i` in the vocabulary (e.g. '<|endoftext|>')."""
    return self._tok.id_to_token(i)

  def end_of_turn_ids(self) -> list[int]:
    """The ids that end an assistant's turn under the chat template (see data/chat.py)."""
    added = {t["content"]: t["id"] for t in self.tokenizer.get("added_tokens", [])}
    return chat.end_of_turn_ids(self.chat_template, added, self.eos_id)

  def to_dict(self) -> dict:
    d = {
      "kind": self.kind,
      "tokenizer": self.tokenizer,
      "eos_id": self.eos_id,
      "vocab_size": self.vocab_size,
    }
    if self.chat_template is not None:  # A run's copy keeps it (scripts/sample.py --chat).
      d["chat_template"] = self.chat_template.to_dict()
    return d


def _token_id(tokenizer_json: dict, token) -> int | None:
  """The id of a token given as text (or {'content': text}) in a tokenizer.json."""
  token = token.get("content") if isinstance(token, dict) else token
  for added in tokenizer_json.get("added_tokens", []):
    if added["content"] == token:
      return added["id"]
  vocab = tokenizer_json.get("model", {}).get("vocab")
  return vocab.get(token) if isinstance(vocab, dict) else None


def _eos_id(tokenizer_json: dict, tokenizer_config: dict, h: dict) -> int | None:
  """End of text: tokenizer_config.json's eos_token, else config.json's eos_token_id."""
  if tokenizer_config.get("eos_token") is not None:
    eos = _token_id(tokenizer_json, tokenizer_config["eos_token"])
    if eos is not None:
      return eos
  eos = h.get("eos_token_id")
  return eos[0] if isinstance(eos, list) else eos


def load_tokenizer(path: str) -> HFTokenizer:
  """The tokenizer of a Hugging Face directory, sized to its model's vocabulary.

  `path` holds tokenizer.json (and config.json, tokenizer_config.json), or is
  a run that was saved with such a tokenizer.
  """
  tok_path = os.path.join(path, "tokenizer.json")
  if not os.path.exists(tok_path):
    raise UserError(
      f"no tokenizer.json in {path!r}: set data.hf_tokenizer to a Hugging Face model "
      "directory that holds one (save_pretrained of a fast tokenizer writes it)."
    )
  tokenizer_json = _read_json(tok_path)
  if tokenizer_json.get("kind") == "hf":  # A run's copy.
    return tokenizers.load(tok_path)
  if "kind" in tokenizer_json:
    raise UserError(
      f"{tok_path} is a run's {tokenizer_json['kind']} tokenizer, not a Hugging Face one: "
      "set data.hf_tokenizer to a Hugging Face model directory."
    )
  read = lambda name: (
    _read_json(os.path.join(path, name)) if os.path.exists(os.path.join(path, name)) else {}
  )
  h, tokenizer_config = read("config.json"), read("tokenizer_config.json")
  eos = _eos_id(tokenizer_json, tokenizer_config, h)
  template = chat.read_template(path, tokenizer_config)
  return HFTokenizer(
    tokenizer_json, eos, h.get("vocab_size"), template.to_dict() if template else None
  )


def save_tokenizer(tokenizer, out_dir: str, max_len: int) -> str | None:
  """Writes tokenizer.json and tokenizer_config.json; returns a note when it cannot."""
  if tokenizer.kind != "hf":
    return (
      f"the run's {tokenizer.kind} tokenizer has no Hugging Face form, so {out_dir} holds "
      "no tokenizer files: encode text as the run's WORKDIR/tokenizer.json does."
    )
  with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
    json.dump(tokenizer.tokenizer, f, ensure_ascii=False)
  tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len}
  if tokenizer.chat_template is not None:
    tokenizer_config.update(dict(tokenizer.chat_template.tokens))
    tokenizer_config["chat_template"] = tokenizer.chat_template.source
  if tokenizer.eos_id is not None:
    tokenizer_config["eos_token"] = tokenizer.token(tokenizer.eos_id)
  _write_json(os.path.join(out_dir, "tokenizer_config.json"), tokenizer_config)
  return None


# Export.
