"""Whether a host takes connections: one quick probe, so that nothing retries for minutes
against a network that is not there (TFDS downloads, the Hugging Face Hub)."""

import os
import socket
import urllib.parse

HUB = "https://huggingface.co"
HUB_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def unreachable_host(urls, timeout: float = 5.0) -> str | None:
  """The first host among `urls` that takes no connection within `timeout`, else None."""
  for url in urls:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
      continue
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
      socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError:
      return f"{parts.scheme}://{parts.hostname}"
  return None


def hub_endpoint() -> str:
  return os.environ.get("HF_ENDPOINT", HUB)


def offline_without_hub(timeout: float = 5.0) -> bool:
  """Sets HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 (where unset) when the Hub takes no
  connection, before `datasets` is imported: its cache then answers at once, and what it lacks
  fails at once, instead of after retries. Returns whether the Hub was unreachable; set either
  variable yourself to skip the probe."""
  if any(name in os.environ for name in HUB_OFFLINE):
    return False
  if unreachable_host([hub_endpoint()], timeout) is None:
    return False
  for name in HUB_OFFLINE:
    os.environ.setdefault(name, "1")
  return True
