"""FairGrad: the conditions G w = w^(−1/α), parity with Nash-MTL and with scipy, scale law, toy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from matrices import SCALES, standard_batch
from properties import assert_permutation_equivariant, weights_of
from scipy.optimize import least_squares

import pub_optax
from pub_optax.toy import optimize
from pub_optax.weightings._fairgrad import fairgrad, fairgrad_weights
from pub_optax.weightings._nash import nash_weights

ALPHAS = (0.5, 1.0, 2.0, 5.0)
BATCH = standard_batch(4)


def _random_pd(rng, k=5):
  j = rng.standard_normal((k, k + 2)) * 10.0 ** rng.uniform(-1.0, 1.0, size=(k, 1))
  return j @ j.T


def _relative_residual(gram, w, alpha):
  target = w ** (-1.0 / alpha)
  return np.linalg.norm(gram @ w - target) / np.linalg.norm(target)


def reference_fairgrad(gram, alpha):
  """The published solve: ``least_squares(G x − x^(−1/α))`` with ``x ≥ 0`` (test-only)."""
  k = gram.shape[0]
  res = least_squares(
    lambda x: gram @ x - x ** (-1.0 / alpha),
    np.ones(k) / k,
    bounds=(1e-12, np.inf),
    xtol=1e-15,
    ftol=1e-15,
    gtol=1e-15,
    max_nfev=10_000,
  )
  return res.x


@pytest.mark.parametrize("alpha", ALPHAS)
def test_defining_condition_and_scipy_reference_float64(x64, alpha):
  rng = np.random.default_rng(int(alpha * 10))
  for _ in range(4):
    gram = _random_pd(rng)
    res = fairgrad_weights(jnp.asarray(gram), alpha)
    w = np.asarray(res.weights)
    assert bool(res.exact) and np.all(w > 0)
    assert _relative_residual(gram, w, alpha) < 1e-12
    assert float(res.residual) < 1e-12
    np.testing.assert_allclose(w, reference_fairgrad(gram, alpha), rtol=1e-6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_defining_condition_float32(alpha):
  rng = np.random.default_rng(7)
  gram = _random_pd(rng, 4)
  res = fairgrad_weights(jnp.asarray(gram, jnp.float32), alpha)
  assert res.weights.dtype == jnp.float32
  assert _relative_residual(gram, np.asarray(res.weights, np.float64), alpha) < 1e-3


def test_alpha_one_is_nash_mtl(x64):
  rng = np.random.default_rng(3)
  for _ in range(4):
    gram = jnp.asarray(_random_pd(rng))
    np.testing.assert_allclose(
      np.asarray(fairgrad_weights(gram, 1.0).weights),
      np.asarray(nash_weights(gram).weights),
      rtol=1e-12,
    )


@pytest.mark.parametrize("alpha", (0.5, 2.0))
def test_scale_law_permutation_and_degenerate_rules(x64, alpha):
  fn = lambda g: fairgrad_weights(g, alpha).weights
  w = weights_of(fn, BATCH.grams, jnp.float64)
  assert np.all(w > 0)
  # G → cG gives w → c^(−α/(1+α)) w.
  for group in BATCH.scaled[:2]:  # the full-rank ones: unique solutions
    ref = w[group[SCALES.index(1.0)]]
    for i, s in zip(group, SCALES):
      np.testing.assert_allclose(w[i], ref * s ** (-alpha / (1 + alpha)), rtol=1e-9)
  zero_task = 4 * len(SCALES)  # the matrix whose first task is zero
  np.testing.assert_allclose(w[zero_task, 0], np.mean(w[zero_task, 1:]), rtol=1e-12)
  sub = BATCH.grams[zero_task][1:, 1:]
  assert _relative_residual(sub, w[zero_task, 1:], alpha) < 1e-12
  np.testing.assert_allclose(w[BATCH.zero], 1.0)
  assert_permutation_equivariant(fn, BATCH, jnp.float64, 1e-9)


def test_cancelling_tasks_stay_finite_and_are_flagged(x64):
  gram = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
  res = fairgrad_weights(gram, 2.0)
  assert np.all(np.isfinite(np.asarray(res.weights))) and not bool(res.exact)
  res = fairgrad_weights(jnp.array([[1.0, jnp.nan], [jnp.nan, 1.0]]), 2.0)
  assert np.all(np.isnan(np.asarray(res.weights))) and np.isinf(float(res.residual))


def test_weighting_warm_starts_and_validates_alpha(x64):
  w = fairgrad(2.0)
  weigh = jax.jit(w.weigh)
  rng = np.random.default_rng(5)
  gram = jnp.asarray(_random_pd(rng, 3))
  res = weigh(gram, w.init(3, jnp.float64), None)
  again = weigh(gram, res.state, None)
  np.testing.assert_allclose(np.asarray(again.weights), np.asarray(res.weights), rtol=1e-12)
  np.testing.assert_array_equal(np.asarray(res.state), np.asarray(res.weights))
  for bad in (0.0, -1.0, float("inf")):
    with pytest.raises(ValueError, match="alpha"):
      fairgrad(bad)


def test_toy_every_start_reaches_the_pareto_front(x64):
  # Ban & Ji's toy figure: FairGrad reaches the Pareto front (x2 ≈ −8.36, |x1| < 7) from
  # every start, including (−8.5, 7.5) and (9, 9) where Adam on the sum stalls. Measured
  # with α = 2: x2 in [−8.40, −8.355], x1 in [−3.8, 5.3].
  tx = pub_optax.balance(
    optax.scale_by_adam(), fairgrad(2.0), 1e-3, num_tasks=2, level="gradient", scaling="raw"
  )
  x, _ = optimize(tx, dtype=jnp.float64)
  x = np.asarray(x)
  assert np.all(np.abs(x[:, 1] + 8.37) < 0.1), x
  assert np.all(np.abs(x[:, 0]) < 7.0), x
