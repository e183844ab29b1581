"""Shared fixtures: float64 on demand, without leaking x64 mode into other tests, and JAX's
caches dropped after every module (``fast_compiles`` is in the repository's root conftest)."""

import jax
import pytest


@pytest.fixture
def x64():
  """Runs the test body with 64-bit JAX types enabled."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's caches after every test module.

  Each compiled XLA:CPU program keeps about ten memory mappings alive. A pytest-xdist worker
  that compiles thousands of programs reaches the kernel's limit on mappings
  (``vm.max_map_count``, 65,530 by default), and LLVM then fails to allocate code memory and
  the worker crashes. Clearing the caches bounds the live programs to one module's.
  """
  yield
  jax.clear_caches()
