"""The Nash solver: stationarity, equivariances, closed forms and the documented fallback rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax import nash_weights
from pub_optax.weightings import nash

SIZES = (1, 2, 3, 4, 5, 8, 16, 32, 64)


def _solve_batch(grams):
  return jax.jit(jax.vmap(nash_weights))(jnp.asarray(grams))


def _relative_residual(g, w):
  return np.linalg.norm(g @ w - 1.0 / w) / np.linalg.norm(1.0 / w)


def _solvable_grams(rng, k, n):
  """Gram matrices that have a Nash solution: full rank, or rank-deficient with all
  task vectors in one open half-space (no positive combination can vanish)."""
  grams = []
  for i in range(n):
    p = int(rng.integers(k, 3 * k + 3))
    if i % 2 == 0 or k == 1:
      rows = rng.standard_normal((k, p))
    else:
      rank = int(rng.integers(1, k + 1))
      basis = rng.standard_normal((rank, p))
      coef = rng.standard_normal((k, rank))
      coef[:, 0] = np.abs(coef[:, 0]) + 0.5  # every row leans on basis[0]: a common half-space
      basis[1:] -= np.outer(basis[1:] @ basis[0] / (basis[0] @ basis[0]), basis[0])
      rows = coef @ basis
    rows *= 10.0 ** rng.uniform(-3, 3, size=(k, 1))  # task norms differ by up to 1e6
    grams.append(rows @ rows.T * 10.0 ** rng.uniform(-10, 10))
  return np.stack(grams)


def test_stationarity_on_1000_random_grams_float64(x64):
  rng = np.random.default_rng(0)
  total = 0
  for k in SIZES:
    grams = _solvable_grams(rng, k, 112)
    res = _solve_batch(grams)
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    residuals = [_relative_residual(g, wi) for g, wi in zip(grams, w)]
    assert max(residuals) <= 1e-5, (k, max(residuals))  # measured <= 2.4e-14
    assert np.all(np.asarray(res.exact)), k
    assert np.all(np.asarray(res.residual) <= 1e-5)
    total += len(grams)
  assert total >= 1000


def test_float32_all_sizes_converge():
  rng = np.random.default_rng(1)
  for k in SIZES:
    rows = rng.standard_normal((k, 3 * k)).astype(np.float32)
    g = rows @ rows.T
    res = nash_weights(jnp.asarray(g))
    assert res.weights.dtype == jnp.float32
    w = np.asarray(res.weights, np.float64)
    # measured <= 3.6e-6; the bound is the solver's float32 exactness bar 8·sqrt(eps) = 2.8e-3
    assert _relative_residual(g.astype(np.float64), w) < 2e-3, k
    assert bool(res.exact)


def test_scale_equivariance(x64):
  rng = np.random.default_rng(2)
  rows = rng.standard_normal((5, 12))
  g = rows @ rows.T
  base = np.asarray(nash_weights(jnp.asarray(g)).weights)
  for c in (1e-10, 1e-4, 3.0, 1e6, 1e10):
    scaled = np.asarray(nash_weights(jnp.asarray(c * g)).weights)
    np.testing.assert_allclose(scaled, base / np.sqrt(c), rtol=1e-9)


def test_permutation_equivariance(x64):
  rng = np.random.default_rng(3)
  rows = rng.standard_normal((6, 9))
  g = rows @ rows.T
  perm = rng.permutation(6)
  w = np.asarray(nash_weights(jnp.asarray(g)).weights)
  wp = np.asarray(nash_weights(jnp.asarray(g[np.ix_(perm, perm)])).weights)
  np.testing.assert_allclose(wp, w[perm], rtol=1e-10)


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.2, np.pi / 2, 2.5, 3.0])
def test_closed_form_two_tasks(x64, angle):
  a, b = 3.0, 0.25
  u = np.array([a, 0.0])
  v = b * np.array([np.cos(angle), np.sin(angle)])
  d = np.stack([u, v])
  w = np.asarray(nash_weights(jnp.asarray(d @ d.T)).weights)
  expected = 1.0 / (np.array([a, b]) * np.sqrt(1.0 + np.cos(angle)))
  np.testing.assert_allclose(w, expected, rtol=1e-10)


def test_single_task_is_inverse_norm(x64):
  res = nash_weights(jnp.array([[16.0]]))
  assert float(res.weights[0]) == pytest.approx(0.25, rel=1e-12)
  assert bool(res.exact)


def test_joint_norm_is_sqrt_k(x64):
  rng = np.random.default_rng(4)
  for k in (2, 7, 30):
    rows = rng.standard_normal((k, 2 * k))
    w = np.asarray(nash_weights(jnp.asarray(rows @ rows.T)).weights)
    assert np.linalg.norm(w @ rows) == pytest.approx(np.sqrt(k), rel=1e-9)


def test_warm_start_gives_same_answer_in_fewer_steps(x64):
  rng = np.random.default_rng(5)
  rows = rng.standard_normal((8, 20))
  g = rows @ rows.T
  cold = nash_weights(jnp.asarray(g))
  g2 = g + 1e-3 * np.eye(8)  # the next step's Gram is close to this one's
  warm = nash_weights(jnp.asarray(g2), init=cold.weights)
  fresh = nash_weights(jnp.asarray(g2))
  np.testing.assert_allclose(warm.weights, fresh.weights, rtol=1e-9)
  assert int(warm.iterations) < int(fresh.iterations)
  # A bad warm start (non-positive) is ignored rather than propagated.
  bad = nash_weights(jnp.asarray(g2), init=-jnp.ones(8))
  np.testing.assert_allclose(bad.weights, fresh.weights, rtol=1e-9)


def test_zero_task_gets_mean_weight_and_is_flagged(x64):
  d = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
  res = nash_weights(jnp.asarray(d @ d.T))
  w = np.asarray(res.weights)
  np.testing.assert_allclose(w[[0, 2]], [0.5, 2.0], rtol=1e-10)  # Nash on the others
  assert w[1] == pytest.approx(1.25)
  assert not bool(res.exact)


def test_zero_gram_gives_ones(x64):
  res = nash_weights(jnp.zeros((4, 4)))
  np.testing.assert_array_equal(res.weights, np.ones(4))
  assert not bool(res.exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cancelling_tasks_give_finite_positive_flagged_weights(x64, dtype):
  rng = np.random.default_rng(6)
  cases = [
    np.array([[1.0, 0.0], [-2.0, 0.0]]),  # opposite updates
    np.array([[1.0, 2.0], [3.0, -1.0], [-4.0, -1.0]]),  # d3 = -(d1 + d2)
  ]
  a = rng.standard_normal((3, 10))
  cases.append(np.concatenate([a, -a.sum(0, keepdims=True) * 0.5], 0))  # 2 d4 = -(d1+d2+d3)
  for d in cases:
    res = nash_weights(jnp.asarray((d @ d.T).astype(dtype)))
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(w)) and np.all(w > 0), d
    assert not bool(res.exact)
    # The joint vector is not blown up: the ridge keeps it at most sqrt(K).
    assert np.linalg.norm(w @ d) <= np.sqrt(len(d)) * 1.001


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cancelling_rank_one_at_k64_stays_finite(x64, dtype):
  """``G = s sᵀ`` with ``s = ±1`` alternating: the Hessian at the ridge's large weights is
  too ill-conditioned to factor as it stands."""
  s = (-1.0) ** np.arange(64)
  res = nash_weights(jnp.asarray(np.outer(s, s).astype(dtype)))
  w = np.asarray(res.weights)
  assert np.all(np.isfinite(w)) and np.all(w > 0)
  assert np.isfinite(float(res.residual)) and not bool(res.exact)


@pytest.mark.parametrize("size", [1e-20, 1e20, 1e-38, 3e38])
def test_warm_start_of_any_size_gives_the_cold_answer(size):
  g = jnp.diag(jnp.array([1.0, 4.0, 16.0]))
  res = nash_weights(g, init=jnp.full(3, size, jnp.float32))
  # measured 6.0e-7: the default ridge 10·eps shifts α by ridge/2 = 6e-7 relative
  np.testing.assert_allclose(res.weights, [1.0, 0.5, 0.25], rtol=1e-5)
  assert bool(res.exact)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_scales_in_float32(scale):
  g = np.array([[2.0, -1.0, 0.5], [-1.0, 3.0, 0.2], [0.5, 0.2, 1.0]])
  base = np.asarray(nash_weights(jnp.asarray(g, jnp.float32)).weights)
  res = nash_weights(jnp.asarray(g * scale, jnp.float32))
  np.testing.assert_allclose(np.asarray(res.weights) * np.sqrt(scale), base, rtol=1e-5)
  assert bool(res.exact)


def test_non_finite_gram_gives_nan_weights_and_infinite_residual():
  g = np.eye(3, dtype=np.float32)
  g[0, 1] = np.inf
  res = nash_weights(jnp.asarray(g))
  assert np.all(np.isnan(np.asarray(res.weights)))
  assert np.isposinf(float(res.residual)) and not bool(res.exact)


def test_opposite_tasks_without_ridge_stay_finite():
  res = nash_weights(jnp.array([[1.0, -2.0], [-2.0, 4.0]]), ridge=0.0)
  w = np.asarray(res.weights)
  assert np.all(np.isfinite(w)) and np.all(w > 0) and not bool(res.exact)


def test_rejects_non_square():
  with pytest.raises(ValueError, match="square"):
    nash_weights(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="K >= 1"):
    nash_weights(jnp.ones((0, 0)))
  with pytest.raises(ValueError, match="init must have shape"):
    nash_weights(jnp.eye(2), init=jnp.ones(3))


def test_weighting_warm_starts_from_its_state():
  w = nash()
  state = w.init(3, jnp.float32)
  np.testing.assert_array_equal(state, np.zeros(3))
  g = jnp.diag(jnp.array([1.0, 4.0, 16.0]))
  res = w.weigh(g, state, None)
  # measured 5.4e-7: the default ridge 10·eps shifts α by ridge/2 = 6e-7 relative
  np.testing.assert_allclose(res.weights, [1.0, 0.5, 0.25], rtol=1e-5)
  np.testing.assert_array_equal(res.state, res.weights)
  assert float(res.residual) < 1e-4  # measured 1.1e-6 (float32 rounding)
