"""SDMGrad: the official inner loop replayed in numpy, the inner optimum by cvxpy, warm start."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import standard_batch

from pub_optax.weightings._sdmgrad import project_to_simplex, sdmgrad, sdmgrad_weights

BATCH = standard_batch(4)


def euclidean_proj_simplex(v):
  """The official code's projection (Duchi et al.), test-only."""
  u = np.sort(v)[::-1]
  cssv = np.cumsum(u)
  rho = np.nonzero(u * np.arange(1, len(v) + 1) > (cssv - 1))[0][-1]
  theta = (cssv[rho] - 1) / (rho + 1.0)
  return np.maximum(v - theta, 0)


def official_sdmgrad(vectors, w, lamda=0.3, niter=20, lr=5.0, momentum=0.5):
  """LibMTL's SDMGrad.backward on explicit vectors, one batch for every estimate (test-only)."""
  gg = vectors @ vectors.T
  scale = np.mean(np.sqrt(np.maximum(np.diag(gg), 0)))
  gg = gg / scale**2
  gg_mean = gg.mean(axis=1)
  buf = None
  for _ in range(niter):
    grad = gg @ w + lamda * gg_mean
    buf = grad if buf is None else momentum * buf + grad  # torch SGD's momentum buffer
    w = euclidean_proj_simplex(w - lr * buf)
  direction = (vectors.T @ w + lamda * vectors.mean(axis=0)) / (1 + lamda)
  return direction, w


def test_replays_the_official_loop_with_warm_starts(x64):
  w = sdmgrad()
  weigh = jax.jit(w.weigh)
  state = w.init(4, jnp.float64)
  inner = np.full(4, 0.25)
  for j, zero in zip(BATCH.vectors, BATCH.zero):
    if zero:
      continue
    res = weigh(jnp.asarray(j @ j.T), state, None)
    state = res.state
    ref, inner = official_sdmgrad(j, inner)
    size = np.abs(j).max()
    np.testing.assert_allclose(j.T @ np.asarray(res.weights), ref, atol=1e-9 * size)
    np.testing.assert_allclose(np.asarray(state), inner, atol=1e-9)
    np.testing.assert_allclose(np.sum(np.asarray(res.weights)), 1.0, rtol=1e-12)


def test_converges_to_the_regularised_min_norm_point(x64):
  # With a step size below 1/L the projected iteration converges to the inner optimum.
  lamda = 0.3
  solve = jax.jit(
    lambda g, lr: sdmgrad_weights(g, lamda=lamda, niter=2000, learning_rate=lr, momentum=0.0)
  )
  rng = np.random.default_rng(4)
  for _ in range(5):  # well-conditioned matrices: projected gradient converges in the budget
    j = rng.standard_normal((4, 8))
    g = j @ j.T
    gn = g / np.mean(np.sqrt(np.diag(g))) ** 2
    res = solve(jnp.asarray(g), 1.0 / np.linalg.eigvalsh(gn)[-1])
    x = cp.Variable(4)
    objective = 0.5 * cp.quad_form(x, cp.psd_wrap(gn)) + lamda * (gn.mean(axis=1) @ x)
    cp.Problem(cp.Minimize(objective), [x >= 0, cp.sum(x) == 1]).solve(cp.CLARABEL)
    value = lambda v: 0.5 * v @ gn @ v + lamda * gn.mean(axis=1) @ v
    assert value(np.asarray(res.simplex)) <= value(x.value) + 1e-7
    assert float(res.residual) < 1e-6


def test_projection_scale_invariance_and_validation(x64):
  rng = np.random.default_rng(0)
  for _ in range(20):
    v = rng.normal(size=5) * 3
    np.testing.assert_allclose(
      np.asarray(project_to_simplex(jnp.asarray(v))), euclidean_proj_simplex(v), atol=1e-12
    )
  g = jnp.asarray(BATCH.grams[-1])
  a = sdmgrad_weights(g).weights
  b = sdmgrad_weights(g * 1e10).weights
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9)
  z = sdmgrad_weights(jnp.zeros((4, 4)))
  np.testing.assert_allclose(np.asarray(z.weights), 0.25)
  bad = sdmgrad().weigh(jnp.full((4, 4), jnp.nan), jnp.full(4, 0.25), None)
  assert np.all(np.isnan(np.asarray(bad.weights)))
  np.testing.assert_allclose(np.asarray(bad.state), 0.25)
  with pytest.raises(ValueError, match="lamda"):
    sdmgrad(lamda=-1.0)
  with pytest.raises(ValueError, match="niter"):
    sdmgrad(niter=0)
