"""lm_jax: language models in JAX, from tokens to samples."""

__version__ = "0.1.0"


class UserError(Exception):
  """A failure the user can fix; its message names the cause and the fix."""
