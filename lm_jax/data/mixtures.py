"""Mixtures of sources (`data.mixture`): per-source configs, rows per batch, shared tokenizer text.

`data.mixture.NAME` holds a `weight` and the data keys that NAME sets differently from
`data` (its dataset, splits, files...); everything else, and every key that must be shared
(tokenizer, seq_len, cache...), comes from `data`. Sources are taken in name order, so a
config's order (or a JSON round trip) never changes the batches.

The rows of the global batch at step s go to the sources in blocks, name order: source i
gets A_i(s + 1) - A_i(s) rows, where A_i(s) is the largest-remainder apportionment of the
s * batch_size rows before step s by the exact (rational) weights. Over any number of steps
each source's row count is within one row of its share, and each step's counts are a pure
function of s.
"""

import copy
import dataclasses
import fractions
import hashlib
import math
from collections.abc import Iterable, Iterator

import ml_collections

from lm_jax import UserError

# The data keys that say where a source's text is; a mixture source may set these.
SOURCE_KEYS = (
  "dataset",
  "data_dir",
  "manual_dir",
  "text_key",
  "train_split",
  "eval_split",
  "test_split",
  "text_files",
  "documents",
  "holdout_fraction",
)


def names(data_config) -> list[str]:
  """The mixture's source names, sorted; [] for a single-source config."""
  mixture = data_config.get("mixture") or {}
  return sorted(mixture.keys())


def source_configs(data_config) -> dict[str, ml_collections.ConfigDict]:
  """Each source's full data config: `data` with the keys the source sets replaced.

  A source's `text_files` replaces the whole of `data.text_files` (splits it leaves out
  are empty).
  """
  c = data_config
  if names(c) and c.dataset == "synthetic":
    raise UserError(
      "data.dataset='synthetic' cannot be mixed with text: set data.dataset to a text source "
      "(the sources' default) or empty data.mixture."
    )
  configs = {}
  for name in names(c):
    if not name.replace("_", "").replace("-", "").isalnum():
      raise UserError(f"data.mixture.{name}: name sources with letters, digits, '_' or '-'.")
    source = c.mixture[name]
    if not isinstance(source, ml_collections.ConfigDict) or "weight" not in source:
      raise UserError(f"data.mixture.{name} has no weight: give it data.mixture.{name}.weight.")
    extra = sorted(set(source.keys()) - {"weight", *SOURCE_KEYS})
    if extra:
      raise UserError(
        f"data.mixture.{name} sets {extra}, which a source cannot set: set them in data "
        f"(shared by every source), or keep to {['weight', *SOURCE_KEYS]}."
      )
    if not source.weight > 0:
      raise UserError(f"data.mixture.{name}.weight={source.weight}: give it a weight above 0.")
    sc = ml_collections.ConfigDict(copy.deepcopy(c.to_dict()))
    del sc["mixture"]
    for key in set(source.keys()) - {"weight"}:
      if key == "text_files":
        files = {"train": "", "validation": "", "test": "", **source.text_files.to_dict()}
        sc.text_files = ml_collections.ConfigDict(files)
      else:
        sc[key] = source[key]
    if sc.dataset == "synthetic":
      raise UserError(
        f"data.mixture.{name}.dataset='synthetic' has no text to share a tokenizer with: "
        "mix TFDS datasets or local text files."
      )
    configs[name] = sc
  return configs


def weights(data_config) -> dict[str, fractions.Fraction]:
  """The configured weights as exact fractions that sum to 1, by source name (0.7 is 7/10)."""
  raw = {n: fractions.Fraction(str(data_config.mixture[n].weight)) for n in names(data_config)}
  total = sum(raw.values())
  return {n: w / total for n, w in raw.items()}


def rows_before(w: dict[str, fractions.Fraction], total: int) -> dict[str, int]:
  """Largest-remainder apportionment of `total` rows by weights `w` (ties: name order)."""
  quotas = {n: total * x for n, x in w.items()}
  counts = {n: math.floor(q) for n, q in quotas.items()}
  left = total - sum(counts.values())
  for n in sorted(w, key=lambda n: counts[n] - quotas[n])[:left]:  # sorted() is stable.
    counts[n] += 1
  return counts


def row_counts(w: dict[str, fractions.Fraction], step: int, batch_size: int) -> dict[str, int]:
  """Rows of each source in the global batch at `step`: they add up to batch_size."""
  small = [n for n, x in w.items() if batch_size * x < 1]
  if small:
    raise UserError(
      f"data.mixture.{small[0]}.weight gives it less than one of the {batch_size} rows per "
      "batch: raise its weight or train.batch_size."
    )
  before, after = rows_before(w, step * batch_size), rows_before(w, (step + 1) * batch_size)
  return {n: after[n] - before[n] for n in w}


def source_seed(seed: int, name: str) -> int:
  """The batch seed of one source: its own windows, whatever the other sources are."""
  return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big") >> 1


@dataclasses.dataclass(frozen=True)
class Mixture:
  """One split of every source: token streams and weights (summing to 1), by name."""

  streams: dict
  weights: dict[str, fractions.Fraction]

  def weighted(self, values: dict[str, float]) -> float:
    return float(sum(float(self.weights[n]) * values[n] for n in self.streams))


def interleaved(texts: dict[str, Iterable[str]], w: dict[str, fractions.Fraction]) -> Iterator[str]:
  """The sources' texts interleaved so that each source's characters so far follow its weight.

  A tokenizer that trains on a prefix (SentencePiece's data.tokenizer_train_bytes) thus sees
  every source in proportion; one that reads everything sees all of it.
  """
  iters = {n: iter(t) for n, t in texts.items()}
  seen = dict.fromkeys(iters, 0)
  while iters:
    n = min(iters, key=lambda n: (seen[n] / w[n], n))
    text = next(iters[n], None)
    if text is None:
      del iters[n]
      continue
    seen[n] += len(text)
    yield text
