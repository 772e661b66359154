"""The GPT-cpu recipe on a mixture: 70% tiny-shakespeare, 30% WikiText-2, in bytes.

  python scripts/train.py --config configs/mixture_gpt_cpu.py --workdir runs/mixture \
    --config.data.mixture.wiki.text_files.train=wikitext-2/train.txt \
    --config.data.mixture.wiki.text_files.validation=wikitext-2/valid.txt

Every batch holds 70% tiny-shakespeare rows (TFDS; data.manual_dir offline) and 30% WikiText-2
rows (local files, a document per blank-line block). Validation logs each source's loss,
`val_loss/shakespeare` and `val_loss/wiki`, beside `val_loss`, their mean weighted 0.7 / 0.3;
scripts/evaluate.py adds each source's bits per byte. One byte tokenizer serves both.
Measured: docs/benchmarks.md (A two-source mixture).
"""

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg=None):
  config = shakespeare_char_gpt_cpu.get_config()
  config.data.tokenizer = "byte"
  config.data.mixture = {
    "shakespeare": {"weight": 0.7, "dataset": "tiny_shakespeare"},
    "wiki": {
      "weight": 0.3,
      "dataset": "text",
      "documents": "blank_line",
      "text_files": {"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt"},
    },
  }
  config.train.num_steps = 300
  return configs.preset(config, arg)
