"""Profiled steps checked, and the compilation cache's options."""

import pytest

from lm_jax import UserError, profiling


@pytest.mark.parametrize("steps", [[5], [3, 2], [-1, 2], [1, 2, 3]])
def test_bad_profile_steps_are_refused(steps):
  with pytest.raises(UserError, match="train.profile_steps"):
    profiling.check_profile_steps(steps)


def test_compilation_cache_lies_beside_the_token_cache(config, token_cache, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  options = profiling.compilation_cache_options(config)
  assert options["jax_compilation_cache_dir"] == str(token_cache / "jax_cache")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere/jax")  # JAX's own variable wins.
  options = profiling.compilation_cache_options(config)
  assert options["jax_compilation_cache_dir"] == "/elsewhere/jax"
  config.train.compilation_cache = False
  assert profiling.compilation_cache_options(config) == {}
