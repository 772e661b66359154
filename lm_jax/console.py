"""What a run prints: its progress, evaluations and the warnings a user can act on.

Libraries talk at length (JAX about absent TPU libraries, TensorFlow about
oneDNN, Orbax about checkpoints the run then handles). Their logging is turned
down where lm_jax calls them, through the functions below; `--verbose` on any
script, or LM_JAX_VERBOSE=1, brings all of it back for debugging.
"""

import glob
import importlib.util
import logging
import os
import sys

import tqdm

VERBOSE_ENV = "LM_JAX_VERBOSE"


def verbose() -> bool:
  return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def setup(verbose_flag: bool = False) -> None:
  """For scripts, once at start: library INFO logging off unless verbose."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  if verbose_flag:
    os.environ[VERBOSE_ENV] = "1"
  absl_logging.set_verbosity(absl_logging.INFO if verbose() else absl_logging.WARNING)
  skip_absent_tpu()


def _pci_vendors() -> set:
  vendors = set()
  for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(path) as f:
        vendors.add(f.read().strip())
    except OSError:
      pass
  return vendors


def skip_absent_tpu() -> None:
  """Before JAX starts: with libtpu installed (for compile checks) on a host that has no TPU
  and no GPU, JAX would try the TPU first, print libtpu's complaints about the missing TPU
  environment and fall back to the CPU; JAX_PLATFORMS=cpu goes there directly. A TPU host
  (Google's PCI vendor id, as JAX checks), a GPU host or a set JAX_PLATFORMS is left alone."""
  if "JAX_PLATFORMS" in os.environ or importlib.util.find_spec("libtpu") is None:
    return
  gpu = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"))
  if not gpu and "0x1ae0" not in _pci_vendors():
    os.environ["JAX_PLATFORMS"] = "cpu"


def is_terminal(stream=None) -> bool:
  """Whether `stream` (stderr) is a terminal, where a progress bar may redraw itself."""
  stream = stream or sys.stderr
  return hasattr(stream, "isatty") and stream.isatty()


class Progress:
  """A loop's progress on stderr: a bar on a terminal; elsewhere (a cluster job's log file)
  one plain line per logged step, so that the log holds whole lines only."""

  def __init__(self, start: int, total: int, enabled: bool = True, stream=None):
    self.total, self.enabled = total, enabled
    self.stream = stream or sys.stderr
    self._bar = None
    if enabled and is_terminal(self.stream):
      self._bar = tqdm.tqdm(initial=start, total=total, dynamic_ncols=True, file=self.stream)

  def advance(self) -> None:
    """One more step done."""
    if self._bar is not None:
      self._bar.update(1)

  def log(self, step: int, **fields: str) -> None:
    """The figures of a logged step: beside the bar, or as a line of their own."""
    if self._bar is not None:
      self._bar.set_postfix(**fields)
    elif self.enabled:
      text = ", ".join(f"{k} {v}" for k, v in fields.items())
      print(f"step {step}/{self.total}: {text}", file=self.stream, flush=True)

  def write(self, text: str) -> None:
    """A line of its own (an evaluation), above the bar on a terminal."""
    if self._bar is not None:
      self._bar.write(text, file=self.stream)
    elif self.enabled:
      print(text, file=self.stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def quiet_tensorflow() -> None:
  """Before TensorFlow loads (TFDS, TensorBoard): its C++ notices stay off unless verbose."""
  if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow only reads records here; its oneDNN kernels, and their notice, are not needed.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


class _DropBelow(logging.Filter):
  """Drops the records of one package below a level; others pass."""

  def __init__(self, package: str, level: int):
    super().__init__()
    self.package, self.level = package, level

  def filter(self, record: logging.LogRecord) -> bool:
    inside = f"{os.sep}{self.package}{os.sep}" in record.pathname
    return not inside or record.levelno >= self.level


def quiet_package(logger_name: str, package: str, level: int = logging.CRITICAL) -> None:
  """Hides `package`'s records below `level` on `logger_name` (once), unless verbose."""
  logger = logging.getLogger(logger_name)
  if verbose() or any(isinstance(f, _DropBelow) and f.package == package for f in logger.filters):
    return
  logger.addFilter(_DropBelow(package, level))


def quiet_abandoned_reads() -> None:
  """Drops the reports that reads abandoned by a failed restore leave at exit (once).

  Orbax reads arrays through asyncio; when a restore fails, the reads still in
  flight are closed unfinished (Orbax's reader turns that GeneratorExit into an
  error of its own) or fire callbacks after their event loop closed, and Python
  prints each as an ignored exception: a page of tracebacks for a failure that
  lm_jax has already reported. Everything else reaches the previous hook.
  """
  previous = sys.unraisablehook
  if verbose() or getattr(previous, "drops_abandoned_reads", False):
    return

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    if isinstance(getattr(e, "__cause__", None), GeneratorExit):
      return
    previous(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook
  # Reads that failed after the first failure was reported: asyncio logs each at exit.
  logging.getLogger("asyncio").addFilter(_DropUnretrieved())


class _DropUnretrieved(logging.Filter):
  """Drops asyncio's reports of task and future errors nobody retrieved."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "exception was never retrieved" not in str(record.msg)
