"""The Nash solver's loop-free path (accelerators, K ≤ 16) against its loop path (CPU), float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from matrices import adversarial_grams, task_vectors

from pub_optax.weightings import _nash

SIZES = (2, 3, 4, 8, 16)
PER_SIZE = 320


def _path(loop_free):
  solve = functools.partial(_nash._solve, init=None, max_iter=64, ridge=None, loop_free=loop_free)
  return jax.jit(jax.vmap(solve))


def _hessian_norm(g, w):
  """‖diag(α) G diag(α) + I‖ on the non-zero tasks: how much rounding of G moves α."""
  d = np.diagonal(g)
  live = d > np.finfo(np.float32).eps ** 2 * d.max()
  h = (w[:, None] * g * w[None, :])[np.ix_(live, live)]
  return np.linalg.norm(h + np.eye(len(h)), 2) if live.any() else 1.0


def _grams(k):
  adversarial, _ = adversarial_grams(k, PER_SIZE - 64, seed=7)
  rng = np.random.default_rng(k)
  random = np.stack([j @ j.T for j in (task_vectors(rng, k, k, 2 * k) for _ in range(64))])
  return np.concatenate([adversarial, random]).astype(np.float32)


def test_loop_free_matches_the_loop_within_1e_5():
  """Same weights where float32 determines them to 1e-5 (Hessian norm ≤ 100, which
  leaves out only cancelling tasks, whose weights the ridge and rounding set); finite,
  positive and equally flagged everywhere."""
  compared = 0
  for k in SIZES:
    grams = _grams(k)
    loop, free = _path(False)(jnp.asarray(grams)), _path(True)(jnp.asarray(grams))
    w_loop = np.asarray(loop.weights, np.float64)
    w_free = np.asarray(free.weights, np.float64)
    assert np.all(np.isfinite(w_free) & (w_free > 0)), k
    np.testing.assert_array_equal(np.asarray(free.exact), np.asarray(loop.exact))
    assert np.all(np.asarray(free.iterations) <= _nash.LOOP_FREE_STEPS)
    g64 = grams.astype(np.float64)
    conditioned = np.array([_hessian_norm(g, w) <= 100.0 for g, w in zip(g64, w_loop)])
    rel = np.max(np.abs(w_free - w_loop) / w_loop, axis=1)[conditioned]
    assert np.all(rel <= 1e-5), (k, rel.max())
    compared += int(conditioned.sum())
  assert compared >= 1000, compared


def test_two_tasks_closed_form_matches_newton_in_float64(x64):
  rng = np.random.default_rng(0)
  grams = np.stack([j @ j.T for j in (task_vectors(rng, 2, 2, 3, 3.0) for _ in range(64))])
  grams *= 10.0 ** rng.uniform(-20, 20, size=(64, 1, 1))
  closed, newton = _path(None)(jnp.asarray(grams)), _path(False)(jnp.asarray(grams))
  np.testing.assert_allclose(closed.weights, newton.weights, rtol=1e-12)
  assert np.all(np.asarray(closed.iterations) == 0)
  np.testing.assert_array_equal(closed.exact, newton.exact)
