"""The reachability probe: a closed port is named at once, a listening one passes; the Hub's
offline variables are set only when it is out of reach and nobody set them."""

import os
import socket

from lm_jax import network


def test_a_host_that_takes_no_connection_is_named_and_one_that_listens_is_not():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  port = server.getsockname()[1]
  try:
    assert network.unreachable_host([f"http://127.0.0.1:{port}/x"]) is None
  finally:
    server.close()
  assert network.unreachable_host([f"http://127.0.0.1:{port}/x"]) == "http://127.0.0.1"
  assert network.unreachable_host(["not a url"]) is None  # No host: nothing to probe.


def test_the_hub_goes_offline_only_out_of_reach_and_only_when_unset(monkeypatch):
  for name in network.HUB_OFFLINE:
    monkeypatch.setenv(name, "0")  # Recorded first, so that the variables set below are undone.
    monkeypatch.delenv(name)
  monkeypatch.setattr(network, "unreachable_host", lambda urls, timeout: None)
  assert not network.offline_without_hub()
  assert not any(name in os.environ for name in network.HUB_OFFLINE)
  monkeypatch.setattr(network, "unreachable_host", lambda urls, timeout: urls[0])
  monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # Set by the user: no probe, nothing changed.
  assert not network.offline_without_hub()
  monkeypatch.delenv("HF_HUB_OFFLINE")
  assert network.offline_without_hub()
  assert all(os.environ[name] == "1" for name in network.HUB_OFFLINE)
