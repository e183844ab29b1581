"""Trimmed mean: the coordinate-wise definition by ``np.sort``, robustness, and K > 2t."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.weightings import trimmed_mean

# Compilation is most of these tests' time; they do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

_RNG = np.random.default_rng(0)
VECTORS = (_RNG.normal(size=(5, 3, 4)), _RNG.normal(size=(5, 6)))


def sorted_trimmed_mean(g, t):
  """Yin et al.'s coordinate-wise trimmed mean by sorting, test-only."""
  k = g.shape[0]
  return np.sort(g, axis=0)[t : k - t].mean(axis=0)


@pytest.mark.parametrize("t", [0, 1, 2])
def test_matches_sorting_and_trimming_every_coordinate(t, x64):
  w = trimmed_mean(t)
  res = jax.jit(w.weigh)(tuple(jnp.asarray(v) for v in VECTORS), w.init(5, jnp.float64, ()), None)
  for got, g in zip(res.direction, VECTORS):
    np.testing.assert_allclose(np.asarray(got), sorted_trimmed_mean(g, t), rtol=1e-13)
  # Weights: the share of coordinates where each task's entry was averaged, over K - 2t.
  ranks = [np.argsort(np.argsort(g, axis=0), axis=0).reshape(5, -1) for g in VECTORS]
  kept = np.concatenate([(r >= t) & (r < 5 - t) for r in ranks], axis=1)
  np.testing.assert_allclose(np.asarray(res.weights), kept.mean(1) / (5 - 2 * t), rtol=1e-13)
  np.testing.assert_allclose(float(res.weights.sum()), 1.0, rtol=1e-13)


def test_one_corrupted_task_stays_inside_the_others_range():
  honest = _RNG.normal(size=(3, 50))
  for corrupt in (1e6, -1e6):
    g = np.concatenate([honest[:1], np.full((1, 50), corrupt), honest[1:]])
    w = trimmed_mean(1)
    res = jax.jit(w.weigh)((jnp.asarray(g, jnp.float32),), w.init(4, jnp.float32, ()), None)
    out = np.asarray(res.direction[0])
    assert np.all(out >= honest.min(0) - 1e-6) and np.all(out <= honest.max(0) + 1e-6)
    assert float(res.weights[1]) == 0.0  # the corrupted task is never averaged


def test_three_tasks_and_one_trim_is_the_median():
  g = jnp.asarray(VECTORS[1][:3], jnp.float32)
  w = trimmed_mean(1)
  res = jax.jit(w.weigh)((g,), w.init(3, jnp.float32, ()), None)
  np.testing.assert_allclose(np.asarray(res.direction[0]), np.median(VECTORS[1][:3], 0), rtol=1e-6)


def test_too_few_tasks_fail_when_the_step_is_traced():
  with pytest.raises(ValueError, match="needs K > 2 tasks, got K = 2"):
    trimmed_mean(1).init(2, jnp.float32, ())
  with pytest.raises(ValueError, match="needs K > 4 tasks, got K = 4"):
    trimmed_mean(2).weigh((jnp.ones((4, 3)),), (), None)
  tx = pub_optax.balance(optax.sgd(1.0), trimmed_mean(1), 0.1, num_tasks=2, level="gradient")
  with pytest.raises(ValueError, match="needs K > 2 tasks"):
    tx.init(jnp.zeros(3))
  for bad in (-1, 1.5):
    with pytest.raises(ValueError, match="non-negative integer"):
      trimmed_mean(bad)
