"""Checks a GPU, TPU or CPU host in minutes; prints one JSON object.

  python scripts/device_check.py                 # GPT-2 small on accelerators, tiny on CPU
  python scripts/device_check.py --size tiny     # tiny sizes anywhere (seconds)

`lm-jax device-check` is the same command; lm_jax/commands/device_check.py holds it and says more.
"""

from lm_jax.commands import device_check

if __name__ == "__main__":
  device_check.run()
