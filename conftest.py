"""Settings for the whole suite, the doctest examples in ``pub_optax/`` included."""

import jax
import pytest


@pytest.fixture
def fast_compiles():
  """Skips XLA's optimisation passes: for files where compilation dominates and the
  properties tested do not depend on optimised code (the setting is restored after)."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(autouse=True)
def _doctests_compile_fast(request):
  """Doctest examples check values, not speed: they run with ``fast_compiles``."""
  if isinstance(request.node, pytest.DoctestItem):
    request.getfixturevalue("fast_compiles")
  yield
