"""Shared fixtures: float64 on demand, without leaking x64 mode into other tests."""

import os

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


# A third of the kernel's default vm.max_map_count, and a resident size that leaves room for
# a second worker and the subprocesses tests start on a 24 GB, 2-core machine.
_MAX_MAPPINGS = 20_000
_MAX_RESIDENT_BYTES = 4 << 30


def _process_footprint() -> tuple[int, int] | None:
  """``(memory mappings, resident bytes)`` of this process, or ``None`` off Linux."""
  try:
    with open("/proc/self/maps", "rb") as maps, open("/proc/self/statm", "rb") as statm:
      return sum(1 for _ in maps), int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except FileNotFoundError:
    return None


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's caches after a test module once the process holds many compiled programs.

  Each compiled XLA:CPU program keeps about ten memory mappings alive. A pytest-xdist worker
  that compiles thousands of programs reaches the kernel's limit on mappings
  (``vm.max_map_count``, 65,530 by default), and LLVM then fails to allocate code memory and
  the worker crashes. Below the thresholds the caches stay, so later modules reuse the
  programs and traces of the package's own jitted functions; where the footprint cannot be
  read, they are dropped after every module.
  """
  yield
  footprint = _process_footprint()
  if footprint is None or footprint[0] > _MAX_MAPPINGS or footprint[1] > _MAX_RESIDENT_BYTES:
    jax.clear_caches()
