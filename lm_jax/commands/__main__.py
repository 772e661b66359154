"""`python -m lm_jax.commands COMMAND [flags]`: the `lm-jax` program, where it is not installed."""

import sys

from lm_jax.commands import main

sys.exit(main())
