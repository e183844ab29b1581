"""DB-MTL: LibMTL's direction when beta = 0, the norm moving average by hand, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax.weightings._db_mtl import db_mtl, db_mtl_weights

EPS = 1e-8


def libmtl_direction(vectors, losses, buffer, step, beta, beta_sigma):
  """LibMTL's DB_MTL.backward on explicit vectors (test-only): EMA of the log-gradient vectors."""
  log_grads = vectors / (losses[:, None] + EPS)
  buffer = log_grads + beta / step**beta_sigma * (buffer - log_grads)
  norms = np.linalg.norm(buffer, axis=1)
  alpha = norms.max() / (norms + EPS)
  return (alpha[:, None] * buffer).sum(0), buffer


def test_beta_zero_is_libmtl_on_explicit_vectors(x64):
  rng = np.random.default_rng(0)
  w = db_mtl(beta=0.0)
  weigh = jax.jit(w.weigh)
  state = w.init(3, jnp.float64)
  buffer = np.zeros((3, 5))
  for step in range(1, 6):
    j = rng.standard_normal((3, 5)) * 10.0 ** rng.uniform(-2, 2, size=(3, 1))
    losses = 10.0 ** rng.uniform(-2, 2, size=3)
    res = weigh(jnp.asarray(j @ j.T), state, jnp.asarray(losses))
    state = res.state
    ref, buffer = libmtl_direction(j, losses, buffer, step, 0.0, 0.0)
    # Up to LibMTL's 1e-8 in the ratio of norms.
    np.testing.assert_allclose(j.T @ np.asarray(res.weights), ref, atol=1e-6 * np.abs(ref).max())
    # The balanced log-gradients all have the largest norm.
    norms = np.linalg.norm(np.asarray(res.weights)[:, None] * j, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-12)


@pytest.mark.parametrize("beta,sigma", [(0.9, 0.0), (0.5, 0.5)])
def test_norm_moving_average_by_hand(x64, beta, sigma):
  rng = np.random.default_rng(1)
  w = db_mtl(beta, sigma)
  state = w.init(3, jnp.float64)
  m = np.zeros(3)
  for t in range(1, 6):
    j = rng.standard_normal((3, 4))
    losses = rng.uniform(0.1, 3.0, size=3)
    res = w.weigh(jnp.asarray(j @ j.T), state, jnp.asarray(losses))
    state = res.state
    rate = beta / t**sigma
    m = rate * m + (1 - rate) * np.linalg.norm(j, axis=1) / (losses + EPS)
    np.testing.assert_allclose(np.asarray(state.norm_ema), m, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.weights), m.max() / m / (losses + EPS), rtol=1e-12)
    assert int(state.step) == t


def test_scale_invariance_degenerate_and_validation(x64):
  w = db_mtl()
  s0 = w.init(2, jnp.float64)
  losses = jnp.array([1.0, 2.0])
  gram = jnp.array([[4.0, 1.0], [1.0, 1.0]])
  a = w.weigh(gram, s0, losses).weights
  b = w.weigh(gram * 1e12, s0, losses).weights
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
  zero = w.weigh(jnp.diag(jnp.array([1.0, 0.0])), s0, losses)
  assert np.all(np.isfinite(np.asarray(zero.weights)))
  bad = w.weigh(gram, s0, jnp.array([1.0, jnp.nan]))
  assert np.all(np.isnan(np.asarray(bad.weights))) and int(bad.state.step) == 0
  np.testing.assert_allclose(np.asarray(db_mtl_weights(gram, losses, jnp.zeros(2))), [1.0, 0.5])
  with pytest.raises(ValueError, match="task losses"):
    w.weigh(gram, s0, None)
  with pytest.raises(ValueError, match="beta"):
    db_mtl(beta=1.0)
  with pytest.raises(ValueError, match="beta_sigma"):
    db_mtl(beta_sigma=-1.0)
  assert w.needs_losses and w.kind == "gram"
