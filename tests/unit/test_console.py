"""The console: a bar on a terminal, one plain line per logged step elsewhere, quiet libraries."""

import io
import logging
import sys

import pytest

from lm_jax import console


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_off_a_terminal_each_log_call_prints_one_plain_line():
  out = io.StringIO()
  progress = console.Progress(0, 40, stream=out)
  for step in range(1, 41):
    progress.advance()
    if step % 10 == 0:
      progress.log(step, loss=f"{3 - step / 20:.2f}", tokens_per_sec="512")
  progress.write("step 40: val_loss 1.90")
  progress.close()
  assert out.getvalue().splitlines() == [
    "step 10/40: loss 2.50, tokens_per_sec 512",
    "step 20/40: loss 2.00, tokens_per_sec 512",
    "step 30/40: loss 1.50, tokens_per_sec 512",
    "step 40/40: loss 1.00, tokens_per_sec 512",
    "step 40: val_loss 1.90",
  ]
  assert "\r" not in out.getvalue()


def test_disabled_progress_prints_nothing():
  for stream in (io.StringIO(), Terminal()):
    progress = console.Progress(5, 40, enabled=False, stream=stream)
    progress.advance()
    progress.log(6, loss="2.00")
    progress.write("step 6: val_loss 2.10")
    progress.close()
    assert stream.getvalue() == ""


def test_on_a_terminal_the_bar_redraws_in_place():
  out = Terminal()
  progress = console.Progress(10, 40, stream=out)
  progress.advance()
  progress.log(11, loss="2.00")
  progress.write("step 11: val_loss 2.10")
  progress.close()
  text = out.getvalue()
  assert "\r" in text and "11/40" in text and "loss=2.00" in text
  assert "step 11/40:" not in text and "step 11: val_loss 2.10\n" in text


def test_is_terminal():
  assert not console.is_terminal(io.StringIO()) and console.is_terminal(Terminal())
  assert not console.is_terminal(object())  # No isatty at all: a log, not a terminal.


@pytest.mark.parametrize("value, verbose", [("", False), ("0", False), ("1", True), ("yes", True)])
def test_verbose_follows_the_environment(monkeypatch, value, verbose):
  monkeypatch.setenv(console.VERBOSE_ENV, value)
  assert console.verbose() == verbose


def test_quiet_package_drops_that_packages_records_below_the_level(monkeypatch):
  monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
  logger = logging.getLogger("lm_jax_test_quiet")
  monkeypatch.setattr(logger, "filters", [])
  for _ in range(2):  # Once: a second call adds nothing.
    console.quiet_package("lm_jax_test_quiet", "noisy", logging.ERROR)
  assert len(logger.filters) == 1
  record = lambda path, level: logging.LogRecord("x", level, path, 1, "m", None, None)
  passes = lambda r: all(f.filter(r) for f in logger.filters)
  assert not passes(record("/site-packages/noisy/core.py", logging.WARNING))
  assert passes(record("/site-packages/noisy/core.py", logging.ERROR))
  assert passes(record("/site-packages/other/core.py", logging.INFO))


def test_quiet_abandoned_reads_drops_only_those_reports(monkeypatch):
  monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  console.quiet_abandoned_reads()
  console.quiet_abandoned_reads()  # Installed once.
  report = lambda e: type("Unraisable", (), {"exc_value": e})()
  sys.unraisablehook(report(RuntimeError("Event loop is closed")))
  closed = RuntimeError("reader closed")
  closed.__cause__ = GeneratorExit()
  sys.unraisablehook(report(closed))
  other = report(RuntimeError("something else"))
  sys.unraisablehook(other)
  assert seen == [other]


def test_quiet_abandoned_reads_drops_asyncio_reports_of_unretrieved_errors(monkeypatch):
  monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
  monkeypatch.setattr(sys, "unraisablehook", lambda u: None)
  logger = logging.getLogger("asyncio")
  monkeypatch.setattr(logger, "filters", [])
  console.quiet_abandoned_reads()
  record = lambda msg: logging.LogRecord("asyncio", logging.ERROR, "x.py", 1, msg, None, None)
  assert not logger.filter(record("Task exception was never retrieved"))
  assert logger.filter(record("Executing <Task> took 0.5 seconds"))
