"""MoCo: tracked gradients, the projected weight step and the direction replayed in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.weightings import moco

# Compilation is most of these tests' time; they do not depend on optimised code.
pytestmark = pytest.mark.usefixtures("fast_compiles")

K = 3
SHAPES = ((2, 3), (4,))


def simplex_projection(v):
  """Euclidean projection onto the simplex by bisection on the threshold θ, test-only."""
  lo, hi = v.min() - 1.0, v.max()
  for _ in range(200):
    theta = 0.5 * (lo + hi)
    lo, hi = (theta, hi) if np.maximum(v - theta, 0).sum() > 1 else (lo, theta)
  return np.maximum(v - 0.5 * (lo + hi), 0)


def paper_moco(steps, beta, beta_sigma, gamma, gamma_sigma, rho):
  """Algorithm 1 of Fernando et al. with LibMTL's decaying step sizes, test-only."""
  y = np.zeros((K, sum(int(np.prod(s)) for s in SHAPES)))
  lam = np.full(K, 1 / K)
  out = []
  for t, leaves in enumerate(steps, start=1):
    g = np.concatenate([v.reshape(K, -1) for v in leaves], axis=1)
    y = y - beta / t**beta_sigma * (y - g)
    lam = simplex_projection(lam - gamma / t**gamma_sigma * (y @ y.T + rho * np.eye(K)) @ lam)
    out.append((lam, y.copy(), lam @ y))
  return out


def _steps(seed, n):
  """``n`` steps of task vectors in two leaves, tasks of different sizes."""
  rng = np.random.default_rng(seed)
  size = lambda s: np.array([2.0, 0.5, 1.0]).reshape((K,) + (1,) * len(s))
  return [tuple(rng.normal(size=(K, *s)) * size(s) for s in SHAPES) for _ in range(n)]


@pytest.mark.parametrize("hyper", [(0.5, 0.5, 0.1, 0.5, 0.0), (0.9, 0.0, 0.02, 1.0, 0.3)])
def test_tracking_weights_and_direction_follow_the_algorithm(hyper, x64):
  w = moco(*hyper)
  shared = tuple(jax.ShapeDtypeStruct(s, jnp.float64) for s in SHAPES)
  state = w.init(K, jnp.float64, shared)
  weigh = jax.jit(w.weigh)
  steps = _steps(0, 4)
  for leaves, (lam, y, direction) in zip(steps, paper_moco(steps, *hyper)):
    res = weigh(tuple(jnp.asarray(v) for v in leaves), state, None)
    state = res.state
    np.testing.assert_allclose(np.asarray(res.weights), lam, atol=1e-12)
    tracked = np.concatenate([np.asarray(t).reshape(K, -1) for t in state.tracked], axis=1)
    np.testing.assert_allclose(tracked, y, rtol=1e-12, atol=1e-12)
    got = np.concatenate([np.asarray(d).ravel() for d in res.direction])
    np.testing.assert_allclose(got, direction, rtol=1e-12, atol=1e-12)
  assert int(state.count) == 4


def test_the_tracked_vectors_replace_the_gradients_in_the_step():
  params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(4), "head": jnp.zeros(2)}
  tx = pub_optax.balance(
    optax.identity(), moco(), 1.0, num_tasks=K, level="gradient",
    shared={"w": True, "b": True, "head": False},
  )  # fmt: skip
  leaves = _steps(1, 1)[0]
  head = jnp.ones((K, 2))
  grads = {"w": jnp.asarray(leaves[0], jnp.float32), "b": jnp.asarray(leaves[1], jnp.float32), "head": head}  # fmt: skip
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  ((lam, _, direction),) = paper_moco([leaves], 0.5, 0.5, 0.1, 0.5, 0.0)
  got = np.concatenate([np.asarray(updates["w"]).ravel(), np.asarray(updates["b"])])
  np.testing.assert_allclose(got, -direction, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["head"]), -K * np.ones(2))  # Σ_k g_k elsewhere
  np.testing.assert_allclose(np.asarray(pub_optax.balance_state(state).weights), lam, rtol=1e-5)


def test_bad_arguments_are_refused():
  for kwargs, match in (
    ({"beta": 0.0}, "beta must be in"),
    ({"gamma": -1.0}, "gamma must be positive"),
    ({"rho": -0.1}, "rho must be non-negative"),
    ({"beta_sigma": -1.0}, "beta_sigma must be non-negative"),
  ):
    with pytest.raises(ValueError, match=match):
      moco(**kwargs)
