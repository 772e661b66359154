"""Text sources -> token arrays -> numpy batches.

The only module that imports TensorFlow (through TFDS), and only when a TFDS
dataset is asked for.
"""

import glob
import os

import numpy as np

from lm_jax import UserError

SPLITS = ("train", "validation", "test")


def _split_names(c) -> dict[str, str]:
  return {"train": c.train_split, "validation": c.eval_split, "test": c.test_split}


def _tfds_texts(c) -> dict[str, str]:
  """Reads each split of a TFDS text dataset; documents are joined by newlines."""
  if c.manual_dir and not (os.path.isdir(c.manual_dir) and os.listdir(c.manual_dir)):
    raise UserError(
        f"data.manual_dir {c.manual_dir!r} holds no files: put the dataset's "
        f"manual files there (for tiny_shakespeare, input.txt) or unset it to download.")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.
  try:
    builder = tfds.builder(c.dataset, data_dir=c.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(f"TFDS has no dataset {c.dataset!r}: check data.dataset.\n{e}") from e
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=c.manual_dir or None))
  except Exception as e:  # Network, checksum and manual-file errors all end here.
    raise UserError(
        f"could not prepare TFDS dataset {c.dataset!r} ({type(e).__name__}: {str(e)[:300]}); "
        "offline, put its files in a folder and pass --config.data.manual_dir=FOLDER "
        "(for tiny_shakespeare: input.txt).") from e
  texts = {}
  for split, name in _split_names(c).items():
    if not name:
      continue
    docs = [ex[c.text_key] for ex in tfds.as_numpy(builder.as_dataset(split=name))]
    texts[split] = "\n".join(d.decode("utf-8") for d in docs)
  return texts


def _file_texts(c) -> dict[str, str]:
  """Reads local UTF-8 files named by `data.text_files.<split>` (paths or globs)."""
  texts = {}
  for split in SPLITS:
    pattern = c.text_files[split]
    if not pattern:
      continue
    paths = sorted(glob.glob(os.path.expanduser(pattern)))
    if not paths:
      raise UserError(f"data.text_files.{split}={pattern!r} matches no file: check the path.")
    docs = []
    for path in paths:
      with open(path, "rb") as f:
        raw = f.read()
      try:
        docs.append(raw.decode("utf-8"))
      except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 at byte {e.start}: convert it to UTF-8.") from e
    texts[split] = "\n".join(docs)
  return texts


def load_texts(data_config) -> dict[str, str]:
  """Returns {'train': text, 'validation': text, ...} for the configured source."""
  c = data_config
  texts = _file_texts(c) if c.dataset == "text" else _tfds_texts(c)
  for split in ("train", "validation"):
    if not texts.get(split):
      raise UserError(f"the {split} split of {c.dataset!r} is empty or missing: "
                      "check the data.*_split and data.text_files keys.")
  return texts


def train_batch(tokens: np.ndarray, seed: int, step: int, batch_size: int, seq_len: int,
                rows: slice = slice(None)) -> dict[str, np.ndarray]:
  """The training batch at `step`: random windows of seq_len + 1 tokens.

  A pure function of (seed, step): resuming, restarting or sharding the run
  never changes which windows a step sees. `rows` selects this process's
  share of the global batch; only those rows are read.

  Returns:
    {'inputs': int32[rows, seq_len], 'targets': int32[rows, seq_len]}.
  """
  rng = np.random.default_rng([seed, step])
  starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)[rows]
  windows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int32)
  return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


def eval_batches(tokens: np.ndarray, seq_len: int, batch_size: int):
  """Yields batches covering every next-token prediction of `tokens` exactly once.

  Consecutive non-overlapping windows; the tail is padded with weight 0 rows,
  so every batch has `batch_size` rows.
  """
  n = len(tokens) - 1
  num_windows = -(-n // seq_len)
  num_rows = -(-num_windows // batch_size) * batch_size
  padded = np.zeros(num_rows * seq_len + 1, np.int32)
  padded[:n + 1] = tokens
  inputs = padded[:-1].reshape(num_rows, seq_len)
  targets = padded[1:].reshape(num_rows, seq_len)
  weights = (np.arange(num_rows * seq_len) < n).reshape(num_rows, seq_len).astype(np.float32)
  for i in range(0, num_rows, batch_size):
    rows = slice(i, i + batch_size)
    yield {"inputs": inputs[rows], "targets": targets[rows], "weights": weights[rows]}


def check_length(tokens: np.ndarray, split: str, seq_len: int) -> None:
  if len(tokens) < seq_len + 1:
    raise UserError(f"the {split} split has {len(tokens)} tokens, fewer than "
                    f"data.seq_len + 1 = {seq_len + 1}: lower data.seq_len or add text.")
