"""Shared fixtures: float64 on demand, without leaking x64 mode into other tests."""

import jax
import pytest


@pytest.fixture
def x64():
  """Runs the test body with 64-bit JAX types enabled."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def fast_compiles():
  """Skips XLA's optimisation passes: for files where compilation dominates and the
  properties tested do not depend on optimised code (the setting is restored after)."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
