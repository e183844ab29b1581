"""Shared fixtures: float64 on demand, without leaking x64 mode into other tests."""

import jax
import pytest


@pytest.fixture
def x64():
  """Runs the test body with 64-bit JAX types enabled."""
  with jax.enable_x64(True):
    yield
