"""TFDS text datasets as sources: prepared once (offline from a manual dir), read by shard file.

The only module that imports TensorFlow (through TFDS), and only when a TFDS dataset is asked for.
"""

import dataclasses
import difflib
import functools
import logging
import os
import sys
from collections.abc import Iterator

import numpy as np

from lm_jax import UserError, console, network
from lm_jax.data import chunks

# Datasets whose raw files lm_jax carries (a folder beside this module, as a TFDS manual dir):
# prepared from there when their download host cannot be reached and no data.manual_dir is set.
PACKAGED = {"tiny_shakespeare": "tiny_shakespeare"}  # input.txt, 1.1 MB, char-rnn's (MIT).


def _import_tfds():
  """TFDS, with TensorFlow kept off the accelerators and quiet."""
  console.quiet_tensorflow()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.
  if not console.verbose():
    tfds.disable_progress_bar()  # The first preparation prints one line of ours instead.
  console.quiet_package("absl", "tensorflow_datasets", logging.ERROR)  # Notes on empty dirs.
  return tfds


@functools.cache
def _builder(dataset: str, data_dir: str):
  tfds = _import_tfds()
  try:
    return tfds.builder(dataset, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    close = difflib.get_close_matches(dataset.split("/")[0], tfds.list_builders(), n=3)
    raise UserError(
      f"TFDS has no dataset {dataset!r}{f' (close: {close})' if close else ''}: check data.dataset."
    ) from e


def _bad_split(builder, dataset: str, name: str) -> UserError:
  return UserError(
    f"TFDS dataset {dataset!r} has no split {name!r} "
    f"(it has {sorted(builder.info.splits)}): check data.*_split; slices like 'train[:1%]' work."
  )


def _examples(dataset: str, data_dir: str, name: str, text_key: str, split=None) -> Iterator[str]:
  """The texts of a prepared TFDS split `name` (or of `split`, part of it), in order."""
  tfds, builder = _import_tfds(), _builder(dataset, data_dir)
  try:
    ds = builder.as_dataset(split=split or name, shuffle_files=False)
  except (ValueError, KeyError) as e:
    raise _bad_split(builder, dataset, name) from e
  for example in tfds.as_numpy(ds):
    if text_key not in example:
      raise UserError(
        f"TFDS dataset {dataset!r} has no feature {text_key!r} "
        f"(it has {sorted(example)}): set data.text_key."
      )
    yield example[text_key].decode("utf-8")


@dataclasses.dataclass(frozen=True)
class TfdsSpan:
  """Examples [start, stop) of split `part` (one of TFDS's shard files, or all of split `name`
  when `part` is empty) of a prepared TFDS dataset, read by the worker that encodes them."""

  dataset: str
  data_dir: str
  name: str  # The configured split, for messages.
  text_key: str
  part: str = ""
  start: int = 0
  stop: int = 0
  first: bool = True  # The first span of the split: its first example starts no document.

  def pieces(self) -> Iterator[tuple[str, bool]]:
    split = None
    if self.part:
      split = _import_tfds().core.ReadInstruction(self.part, self.start, self.stop, unit="abs")
    first = self.first
    for text in _examples(self.dataset, self.data_dir, self.name, self.text_key, split):
      for j, piece in enumerate(chunks.cut(text)):
        yield piece, j == 0 and not first
        first = False


def _tfds_spans(tfds, builder, c, name: str) -> list[TfdsSpan]:
  """Split `name` in the examples of each of TFDS's shard files that it covers, in order."""
  span = functools.partial(TfdsSpan, c.dataset, c.data_dir, name, c.text_key)
  if not builder.info.splits:  # No split statistics (mock data): one span.
    return [span()]
  try:
    ranges = tfds.core.ReadInstruction.from_spec(name).to_absolute(builder.info.splits)
  except (ValueError, KeyError, AssertionError) as e:
    raise _bad_split(builder, c.dataset, name) from e
  spans = []
  for r in ranges:
    info = builder.info.splits[r.splitname]
    start, stop = r.from_ or 0, info.num_examples if r.to is None else r.to
    bounds = np.cumsum([0, *(info.shard_lengths or [info.num_examples])])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
      a, b = max(int(a), start), min(int(b), stop)
      if a < b:
        spans.append(span(r.splitname, a, b, first=not spans))
  return spans


def splits(c, names: dict[str, str]) -> dict[str, tuple]:
  """(identity, pieces, spans) of each split `names` maps to a TFDS split name (prepared on
  first read)."""
  if c.manual_dir and not (os.path.isdir(c.manual_dir) and os.listdir(c.manual_dir)):
    raise UserError(
      f"data.manual_dir {c.manual_dir!r} holds no files: put the dataset's "
      f"manual files there (for tiny_shakespeare, input.txt) or unset it to download."
    )
  tfds, builder = _import_tfds(), _builder(c.dataset, c.data_dir)

  def cannot_prepare(cause: str) -> UserError:
    return UserError(
      f"could not prepare TFDS dataset {c.dataset!r} ({cause}); "
      "offline, put its files in a folder and pass --config.data.manual_dir=FOLDER "
      "(for tiny_shakespeare: input.txt)."
    )

  @functools.cache
  def prepare():
    if builder.is_prepared():
      return
    manual_dir = c.manual_dir
    if not manual_dir:  # Fail in seconds offline, not after minutes of download retries.
      unreachable = network.unreachable_host(getattr(builder, "url_infos", None) or {})
      if unreachable and c.dataset not in PACKAGED:
        raise cannot_prepare(f"{unreachable} cannot be reached")
      if unreachable:  # TFDS checks the copy's sha256 as it would the download's.
        manual_dir = os.path.join(os.path.dirname(__file__), PACKAGED[c.dataset])
        print(
          f"{unreachable} cannot be reached: TFDS prepares {c.dataset} from the copy inside "
          f"lm_jax ({manual_dir}), the same file.",
          file=sys.stderr,
        )
    print(f"preparing TFDS dataset {c.dataset} in {builder.data_dir} (once)", file=sys.stderr)
    try:
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None)
      )
    except Exception as e:  # Network, checksum and manual-file errors all end here.
      raise cannot_prepare(f"{type(e).__name__}: {str(e)[:300]}") from e

  def pieces(name):
    prepare()
    return ((text, True) for text in _examples(c.dataset, c.data_dir, name, c.text_key))

  def spans(name):
    prepare()
    return _tfds_spans(tfds, builder, c, name)

  base = {"tfds": c.dataset, "version": str(builder.version)}
  return {
    split: (
      {**base, "split": name},
      functools.partial(pieces, name),
      functools.partial(spans, name),
    )
    for split, name in names.items()
    if name
  }
