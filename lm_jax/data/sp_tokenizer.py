"""SentencePiece as a tokenizer kind: BPE or unigram pieces trained on the train split, with
byte fallback so that any text encodes, and identity normalization so that decode gives it back.
"""

import base64
import io

import numpy as np

from lm_jax import UserError
from lm_jax.data import tokenizers


class SentencePieceTokenizer(tokenizers.Tokenizer):
  """A SentencePiece model kept in the JSON file as base64 bytes."""

  kind = "sentencepiece"

  def __init__(self, model: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    self.model = model
    self._sp = spm.SentencePieceProcessor(model_proto=base64.b64decode(model))
    self.eos_id = self._sp.eos_id()
    self.eod_ids = np.array([self.eos_id], np.int32)

  @classmethod
  def train(cls, texts, data_config) -> "SentencePieceTokenizer":
    """Trains on the lines of `texts`, up to data.tokenizer_train_bytes of them."""
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    c = data_config
    if c.sentencepiece_type not in ("bpe", "unigram"):
      raise UserError(f"data.sentencepiece_type={c.sentencepiece_type!r}: use 'bpe' or 'unigram'.")

    def lines():
      budget = c.tokenizer_train_bytes
      for text in texts:
        for line in text.splitlines():
          if line:
            yield line
            budget -= len(line)
          if budget <= 0:
            return

    proto = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
        sentence_iterator=lines(),
        model_writer=proto,
        vocab_size=c.vocab_size,
        model_type=c.sentencepiece_type,
        character_coverage=1.0,
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 16,
        unk_id=0,
        eos_id=1,
        bos_id=-1,
        pad_id=-1,
        hard_vocab_limit=True,
        minloglevel=2,
        num_threads=1,
      )  # One thread: every process of a multi-host run trains the same.
    except RuntimeError as e:
      # Too small: fewer ids than the 256 byte pieces plus the text's characters.
      fix = "raise" if "smaller than required" in str(e) else "lower"
      raise UserError(
        f"SentencePiece cannot train data.vocab_size={c.vocab_size} on this text "
        f"({str(e).strip().splitlines()[-1][:160]}): {fix} data.vocab_size."
      ) from e
    return cls(base64.b64encode(proto.getvalue()).decode("ascii"))

  @classmethod
  def settings(cls, data_config) -> dict:
    c = data_config
    return {
      "vocab_size": c.vocab_size,
      "sentencepiece_type": c.sentencepiece_type,
      "tokenizer_train_bytes": c.tokenizer_train_bytes,
    }

  def implied_settings(self) -> dict:
    return {"vocab_size": self.vocab_size}

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> np.ndarray:
    return np.array(self._sp.encode(text), np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    # One thread: the token cache runs one tokenizer per worker process (data.workers).
    return [np.array(ids, np.int32) for ids in self._sp.encode(texts, num_threads=1)]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    eod = self.eos_id
    parts, start = [], 0
    for j, i in enumerate(ids + [eod]):
      if i == eod:
        parts.append(self._sp.decode(ids[start:j]))
        start = j + 1
    return tokenizers.EOD.join(parts)

  def to_dict(self) -> dict:
    return {"kind": self.kind, "model": self.model}

  def byte_lengths(self) -> np.ndarray:
    sp = self._sp
    return np.array(
      [
        1
        if sp.is_byte(i) or i == self.eos_id
        else 0
        if sp.is_unknown(i) or sp.is_control(i)
        else len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        for i in range(sp.get_piece_size())
      ],
      np.int64,
    )
