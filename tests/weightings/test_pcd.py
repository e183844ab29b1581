"""PCD: the constrained problem solved by enumerating working sets in numpy, the special cases."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax.weightings import PCDState, pcd, pcd_weights

# Compilation is most of these tests' time; they do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

K = 4


def enumerated_pcd(j, sq_norm_ema, count, tau, beta=0.999, eps=1e-8):
  """PCD on explicit gradients: every working set of constraints tried (the reference code's
  method), the feasible KKT point kept, rescaled to ‖g_1‖. Test-only."""
  sq = np.sum(j**2, axis=1)
  ema = beta * sq_norm_ema + (1 - beta) * sq
  scales = 1 / np.sqrt(ema / (1 - beta ** (count + 1)) + eps)
  g = j * scales[:, None]
  for r in range(K):
    for active in itertools.combinations(range(1, K), r):
      a = list(active)
      mu = np.linalg.solve(g[a] @ g[a].T, tau * np.sum(g[a] ** 2, 1) - g[a] @ g[0]) if a else []
      if np.any(np.asarray(mu) < -1e-12):
        continue
      d = g[0] + np.asarray(mu) @ g[a] if a else g[0].copy()
      if np.all(g[1:] @ d >= tau * np.sum(g[1:] ** 2, 1) - 1e-10):
        return d * np.linalg.norm(j[0]) / np.linalg.norm(d), ema
  raise AssertionError("no feasible working set")


def _gradients(seed):
  """Four task gradients in 6 dimensions of different sizes, the secondaries pulled away from
  the primary so that some constraints bind."""
  rng = np.random.default_rng(seed)
  j = rng.normal(size=(K, 6)) * rng.uniform(0.1, 10.0, size=(K, 1))
  unit = j[0] / np.linalg.norm(j[0])
  j[1:] -= (
    rng.uniform(0.0, 1.5, size=(K - 1, 1)) * np.linalg.norm(j[1:], axis=1, keepdims=True) * unit
  )
  return j


@functools.cache
def _weigh(tau, eps=1e-8):
  w = pcd(tau, eps=eps)
  return w, jax.jit(w.weigh)


@pytest.mark.parametrize("tau", [0.02, 0.3])
def test_direction_is_the_constrained_minimiser_over_several_calls(tau, x64):
  w, weigh = _weigh(tau)
  state, ema = w.init(K, jnp.float64), np.zeros(K)
  for step in range(3):
    j = _gradients(step)
    res = weigh(jnp.asarray(j @ j.T), state, None)
    want, ema = enumerated_pcd(j, ema, step, tau)
    np.testing.assert_allclose(np.asarray(res.weights) @ j, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())  # fmt: skip
    np.testing.assert_allclose(np.asarray(res.state.sq_norm_ema), ema, rtol=1e-12)
    assert int(res.state.count) == step + 1 and float(res.residual) < 1e-9
    state = res.state


def test_opposite_secondaries_drop_the_constraints_and_a_zero_primary_stops():
  w, weigh = _weigh(0.02)
  g = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0], [0.0, -1.0, -2.0], [0.3, 0.0, 1.0]])
  res = weigh(jnp.asarray(g @ g.T, jnp.float32), w.init(K, jnp.float32), None)
  np.testing.assert_allclose(np.asarray(res.weights), [1.0, 0.0, 0.0, 0.0], atol=1e-6)
  g[0] = 0.0
  res = weigh(jnp.asarray(g @ g.T, jnp.float32), w.init(K, jnp.float32), None)
  np.testing.assert_array_equal(np.asarray(res.weights), 0.0)
  assert int(res.state.count) == 1  # the moving average still advanced


def test_scaling_a_secondary_gradient_at_every_call_leaves_the_direction(x64):
  w, weigh = _weigh(0.3, eps=0.0)
  a = b = w.init(K, jnp.float64)
  scale = np.array([1.0, 1e4, 1.0, 1e-3])[:, None]
  for step in range(2):
    j = _gradients(step + 5)
    ra, rb = weigh(jnp.asarray(j @ j.T), a, None), weigh(jnp.asarray((scale * j) @ (scale * j).T), b, None)  # fmt: skip
    np.testing.assert_allclose(np.asarray(rb.weights) @ (scale * j), np.asarray(ra.weights) @ j, rtol=1e-8)  # fmt: skip
    a, b = ra.state, rb.state


def test_non_finite_gram_keeps_the_average_and_bad_arguments_are_refused():
  state = PCDState(jnp.array([1.0, 2.0]), jnp.array(3, jnp.int32))
  res = jax.jit(lambda g, s: pcd_weights(g, s))(jnp.array([[1.0, jnp.nan], [jnp.nan, 1.0]]), state)
  assert np.all(np.isnan(np.asarray(res.weights))) and np.isposinf(float(res.residual))
  np.testing.assert_array_equal(np.asarray(res.state.sq_norm_ema), [1.0, 2.0])
  assert int(res.state.count) == 3
  with pytest.raises(ValueError, match="one per secondary task"):
    pcd(tau=(0.1, 0.2)).init(K, jnp.float32)
  for kwargs, match in (({"tau": 1.5}, "tau"), ({"beta": 1.0}, "beta"), ({"eps": -1.0}, "eps")):
    with pytest.raises(ValueError, match=match):
      pcd(**kwargs)
