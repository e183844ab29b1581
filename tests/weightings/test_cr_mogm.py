"""CR-MOGM: first step is MGDA, geometric convergence to MGDA's weights, the averaging rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import standard_batch
from properties import assert_on_simplex

from pub_optax.weightings._cr_mogm import cr_mogm
from pub_optax.weightings._mgda import mgda_weights

BATCH = standard_batch(4)


def _mgda(gram):
  return np.asarray(mgda_weights(jnp.asarray(gram)).weights)


def test_first_step_is_mgda_then_geometric_convergence(x64):
  beta = 0.8
  w = cr_mogm(beta)
  weigh = jax.jit(w.weigh)
  first, second = BATCH.grams[-1], BATCH.grams[-2]
  res = weigh(jnp.asarray(first), w.init(4, jnp.float64), None)
  lam0 = _mgda(first)
  np.testing.assert_allclose(np.asarray(res.weights), lam0, rtol=1e-12)
  target = _mgda(second)
  state = res.state
  for t in range(1, 30):
    res = weigh(jnp.asarray(second), state, None)
    state = res.state
    lam = np.asarray(res.weights)
    np.testing.assert_allclose(lam, target + beta**t * (lam0 - target), atol=1e-12)
    assert_on_simplex(lam, 1e-12)


def test_average_of_mgda_weights_over_a_stream(x64):
  beta = 0.5
  w = cr_mogm(beta)
  state = w.init(4, jnp.float64)
  expected = None
  for gram in BATCH.grams[:10]:
    res = w.weigh(jnp.asarray(gram), state, None)
    state = res.state
    current = _mgda(gram)
    expected = current if expected is None else beta * expected + (1 - beta) * current
    np.testing.assert_allclose(np.asarray(res.weights), expected, atol=1e-12)
    assert float(res.residual) < 1e-9


def test_scale_invariance_non_finite_and_validation(x64):
  w = cr_mogm()
  weigh = jax.jit(w.weigh)
  s0 = w.init(4, jnp.float64)
  gram = BATCH.grams[-1]
  a = weigh(jnp.asarray(gram), s0, None)
  b = weigh(jnp.asarray(gram * 1e8), s0, None)
  np.testing.assert_allclose(np.asarray(a.weights), np.asarray(b.weights), rtol=1e-9)
  bad = weigh(jnp.full((4, 4), jnp.nan), a.state, None)
  assert np.all(np.isnan(np.asarray(bad.weights)))
  np.testing.assert_array_equal(np.asarray(bad.state.weights), np.asarray(a.state.weights))
  for beta in (-0.1, 1.0):
    with pytest.raises(ValueError, match="beta"):
      cr_mogm(beta)
