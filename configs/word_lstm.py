"""The originating document's LSTM on word ids: PyTorch's word_language_model on local text.

WikiText-2 (raw tokens, `<unk>` already in the text), a document per line:

  python scripts/train.py --config configs/word_lstm.py --workdir runs/word_lstm \
    --config.data.text_files.train=wikitext-2/train.txt \
    --config.data.text_files.validation=wikitext-2/valid.txt \
    --config.data.text_files.test=wikitext-2/test.txt
  python scripts/evaluate.py --workdir runs/word_lstm --split test

evaluate.py reports word_perplexity (each line end counts as a word, as PyTorch's
<eos> does). Vocabulary: the 33,276 most frequent words plus <unk> and the end of
document, WikiText-2's 33,278.
"""

import ml_collections

from configs import shakespeare_char_gpt_cpu


def get_config():
  config = shakespeare_char_gpt_cpu.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="lstm",
      embed_size=200,  # word_language_model's defaults: 2 layers of 200.
      hidden_size=200,
      num_layers=2,
      dropout=0.2,  # Between layers and around the stack.
      tie_weights=False,  # Share embedding and head (needs embed_size == hidden_size).
    )
  )
  d = config.data
  d.dataset = "text"
  d.documents = "line"  # One end-of-document id per line, like PyTorch's <eos>.
  d.tokenizer = "word"
  d.vocab_size = 33_276  # Words kept; the rest become <unk>.
  d.seq_len = 35  # word_language_model's bptt.
  d.order = "epochs"
  config.optim.update(
    name="adam",
    learning_rate=1e-3,
    min_learning_rate=1e-4,
    warmup_steps=0,
    b2=0.999,
    weight_decay=0.0,
    grad_clip=0.25,  # word_language_model's --clip.
  )
  config.train.update(batch_size=20, num_steps=6000, eval_every=1000, checkpoint_every=1000)
  return config
