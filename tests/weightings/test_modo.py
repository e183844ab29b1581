"""MoDo: the weight update replayed in numpy, and its fixed point, the regularised min-norm weights."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax.weightings import modo, simplex_step

# Compilation is most of these tests' time; they do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

K = 3


def simplex_projection(v):
  """Euclidean projection onto the simplex by bisection on the threshold θ, test-only."""
  lo, hi = v.min() - 1.0, v.max()
  for _ in range(200):
    theta = 0.5 * (lo + hi)
    lo, hi = (theta, hi) if np.maximum(v - theta, 0).sum() > 1 else (lo, theta)
  return np.maximum(v - 0.5 * (lo + hi), 0)


def simplex_min(q):
  """``argmin ½ λᵀQλ`` over the simplex by enumerating the supports (KKT), test-only."""
  best, value = None, np.inf
  for r in range(1, K + 1):
    for support in itertools.combinations(range(K), r):
      s = list(support)
      a = np.block([[q[np.ix_(s, s)], np.ones((r, 1))], [np.ones((1, r)), np.zeros((1, 1))]])
      sol = np.linalg.solve(a, np.r_[np.zeros(r), 1.0])
      lam = np.zeros(K)
      lam[s] = sol[:r]
      if lam.min() >= -1e-12 and lam @ q @ lam < value:
        best, value = lam, lam @ q @ lam
  return best


def _grams(seed, n):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    j = rng.normal(size=(K, 6)) * rng.uniform(0.5, 3.0, size=(K, 1))
    out.append(j @ j.T)
  return out


@pytest.mark.parametrize("gamma, rho", [(1e-3, 0.1), (0.05, 0.0), (0.3, 0.5)])
def test_weights_follow_the_projected_step_over_several_calls(gamma, rho, x64):
  w = modo(gamma, rho)
  weigh = jax.jit(w.weigh)
  state, lam = w.init(K, jnp.float64), np.full(K, 1 / K)
  for g in _grams(0, 4):
    res = weigh(jnp.asarray(g), state, None)
    lam = simplex_projection(lam - gamma * (g @ lam + rho * lam))
    np.testing.assert_allclose(np.asarray(res.weights), lam, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.state), lam, atol=1e-12)
    state = res.state


def test_a_fixed_gram_matrix_leads_to_the_regularised_min_norm_weights(x64):
  rho = 0.1
  for g in _grams(1, 3):
    q = g + rho * np.eye(K)
    gamma = 1.0 / np.linalg.eigvalsh(q)[-1]
    lam = jax.lax.fori_loop(
      0, 3000, lambda _, lam: simplex_step(jnp.asarray(g), lam, gamma, rho), jnp.full(K, 1 / K)
    )
    np.testing.assert_allclose(np.asarray(lam), simplex_min(q), atol=1e-7)


def test_non_finite_gram_keeps_the_weights_and_bad_arguments_are_refused():
  w = modo()
  state = jnp.array([0.2, 0.3, 0.5])
  res = jax.jit(w.weigh)(jnp.full((K, K), jnp.nan), state, None)
  assert np.all(np.isnan(np.asarray(res.weights))) and np.isposinf(float(res.residual))
  np.testing.assert_array_equal(np.asarray(res.state), np.asarray(state))
  with pytest.raises(ValueError, match="gamma must be positive"):
    modo(gamma=0.0)
  with pytest.raises(ValueError, match="rho must be non-negative"):
    modo(rho=-1.0)
