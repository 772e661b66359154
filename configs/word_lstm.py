"""PyTorch's word_language_model recipe: a 2 x 200 LSTM on word ids, trained as main.py trains.

WikiText-2 (raw tokens, `<unk>` already in the text), a document per line:

  python scripts/train.py --config configs/word_lstm.py:40 --workdir runs/word_lstm \
    --config.data.text_files.train=wikitext-2/train.txt \
    --config.data.text_files.validation=wikitext-2/valid.txt \
    --config.data.text_files.test=wikitext-2/test.txt
  python scripts/evaluate.py --workdir runs/word_lstm --split test --best

The argument is the number of epochs (default 6; main.py's own default is 40); `:adam`
(or `:adam,40`) is the Adam variant. As main.py: 20 contiguous streams read 35 words at a
time with the LSTM state carried across batches (truncated BPTT), dropout 0.2, plain SGD at
lr 20 (W - lr * g) after clipping the gradient norm to 0.25, the learning rate divided by 4
after each epoch whose validation loss does not beat the best, validation and test with the
state carried through 10 contiguous streams, and the best epoch's parameters kept for the
test (train.keep_best; evaluate.py --best). Init as its
init_weights: embedding and head U(-0.1, 0.1), head bias 0.

evaluate.py reports word_perplexity (each line end counts as a word, as PyTorch's
<eos> does). Vocabulary: the 33,276 most frequent train words plus <unk> and the end of
document (WikiText-2's 33,278). Measured against main.py on the same text: docs/benchmarks.md.
"""

import ml_collections

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg: str = ""):
  arg, preset = configs.split(arg)
  parts = [p for p in arg.split(",") if p]
  adam = "adam" in parts
  epochs = int(next((p for p in parts if p.isdigit()), 6))
  config = shakespeare_char_gpt_cpu.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="lstm",
      embed_size=200,  # word_language_model's defaults: 2 layers of 200.
      hidden_size=200,
      num_layers=2,
      dropout=0.2,  # Between layers and around the stack.
      tie_weights=False,  # Share embedding and head (needs embed_size == hidden_size).
      init_range=0.1,  # Embedding and head U(-0.1, 0.1), head bias 0 (its init_weights).
    )
  )
  d = config.data
  d.dataset = "text"
  d.documents = "line"  # One end-of-document id per line, like PyTorch's <eos>.
  d.tokenizer = "word"
  d.vocab_size = 33_276  # Words kept; the rest become <unk>.
  d.seq_len = 35  # word_language_model's bptt.
  d.order = "sequential"  # batchify: 20 contiguous streams, the state carried across steps.
  config.optim.update(
    name="sgd",
    learning_rate=20.0,  # main.py's --lr: W - 20 * g.
    min_learning_rate=20.0,
    warmup_steps=0,
    schedule="plateau",  # Divided by plateau_factor after an epoch that does not improve.
    plateau_factor=4.0,
    momentum=0.0,
    weight_decay=0.0,
    grad_clip=0.25,  # main.py's --clip.
  )
  if adam:  # Adam 3e-3 on the same stream order, decayed by the same rule.
    config.optim.update(name="adam", learning_rate=3e-3, min_learning_rate=3e-3, b2=0.999)
  config.eval.carry = True  # main.py's evaluate(): the state carried through each split.
  config.train.update(
    batch_size=20,
    eval_batch_size=10,  # main.py's eval_batch_size.
    num_epochs=epochs,
    eval_every=0,  # Once per epoch, as main.py.
    checkpoint_every=0,
    keep_best=True,  # main.py tests the epoch with the best validation loss.
    keep_checkpoints=1,
    log_every=100,
    # A replica per core: faster than auto's one-device jit for this model on a CPU
    # (docs/benchmarks.md); accelerators take pmap under auto anyway.
    parallel="pmap",
  )
  return configs.apply(config, preset)
