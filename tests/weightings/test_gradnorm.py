"""GradNorm: the update direction and size by hand, L(0) recorded at the first call, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pub_optax.weightings._gradnorm import gradnorm, gradnorm_step


def hand_step(w, vectors, losses, initial, alpha, lr):
  """Equation 2 of Chen et al. and its gradient in w, on explicit vectors (test-only)."""
  norms = np.linalg.norm(vectors, axis=1)
  weighted = w * norms  # G_W^(i)
  mean = weighted.mean()
  ratio = losses / initial
  r = ratio / ratio.mean()
  target = mean * r**alpha  # held constant
  grad = np.sign(weighted - target) * norms  # d/dw_i of Σ |w_j‖g_j‖ − target_j|
  new = np.maximum(w - lr * grad, 0.0)
  return new * len(w) / new.sum()


def test_update_matches_the_hand_computation_over_steps(x64):
  rng = np.random.default_rng(0)
  alpha, lr = 1.5, 0.05
  w = gradnorm(alpha, lr)
  weigh = jax.jit(w.weigh)
  state = w.init(3, jnp.float64)
  ref_w = np.ones(3)
  initial = None
  for t in range(6):
    j = rng.standard_normal((3, 4)) * np.array([[3.0], [1.0], [0.3]])
    losses = rng.uniform(0.5, 2.0, size=3) * (1.0 - 0.1 * t * np.array([1.0, 0.2, 0.5]))
    initial = losses if initial is None else initial
    res = weigh(jnp.asarray(j @ j.T), state, jnp.asarray(losses))
    np.testing.assert_allclose(np.asarray(res.weights), ref_w, rtol=1e-12)  # current weights
    ref_w = hand_step(ref_w, j, losses, initial, alpha, lr)
    state = res.state
    np.testing.assert_allclose(np.asarray(state.weights), ref_w, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(state.initial_losses), initial, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(state.weights).sum(), 3.0, rtol=1e-12)


def test_direction_equalises_weighted_norms_and_favours_slow_tasks(x64):
  norms = jnp.array([4.0, 1.0])
  # Equal training rates: the larger weighted norm loses weight.
  new, _ = gradnorm_step(jnp.ones(2), norms, jnp.ones(2), jnp.ones(2), 1.5, 0.01)
  assert float(new[0]) < 1.0 < float(new[1])
  # Task 1 trains much slower (higher loss ratio): its target exceeds its weighted norm.
  new, _ = gradnorm_step(jnp.ones(2), jnp.ones(2), jnp.array([1.0, 0.1]), jnp.ones(2), 1.5, 0.01)
  assert float(new[0]) > 1.0 > float(new[1])
  # Repeated steps with fixed norms and equal rates drive w_k‖g_k‖ to a common value.
  step = jax.jit(lambda w: gradnorm_step(w, norms, jnp.ones(2), jnp.ones(2), 1.5, 0.002)[0])
  w = jnp.ones(2)
  for _ in range(300):
    w = step(w)
  np.testing.assert_allclose(float(w[0] * 4.0), float(w[1]), rtol=2e-2)  # sign steps oscillate


def test_non_finite_and_validation(x64):
  w = gradnorm()
  s0 = w.init(2, jnp.float64)
  bad = w.weigh(jnp.eye(2), s0, jnp.array([1.0, jnp.inf]))
  assert np.all(np.isnan(np.asarray(bad.weights))) and not bool(bad.state.started)
  with pytest.raises(ValueError, match="task losses"):
    w.weigh(jnp.eye(2), s0, None)
  with pytest.raises(ValueError, match="alpha"):
    gradnorm(alpha=-1.0)
  with pytest.raises(ValueError, match="learning_rate"):
    gradnorm(learning_rate=0.0)
  assert w.needs_losses and w.kind == "gram"
