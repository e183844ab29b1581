"""STCH: weights are the loss-gradient of μ log Σ exp(p(L − z)/μ); they go to the worst task as μ -> 0."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.toy import optimize
from pub_optax.weightings._stch import stch


def _scalarised(losses, mu, p, z):
  """The smooth Tchebycheff loss, written independently of the weighting."""
  return mu * jnp.log(jnp.sum(jnp.exp(p * (losses - z) / mu)))


@pytest.mark.parametrize("mu", [0.1, 1.0, 5.0])
def test_weights_are_the_gradient_of_the_scalarised_loss(mu):
  losses = jnp.array([0.8, 1.3, 0.2, 2.0])
  p = jnp.array([0.1, 0.4, 0.3, 0.2])
  z = jnp.array([0.1, 0.0, -0.5, 0.3])
  w = stch(mu, preference=p, ideal=z)
  assert w.kind == "loss" and w.needs_losses and w.name == "stch"
  res = jax.jit(w.weigh)(losses, w.init(4, jnp.float32))
  expected = jax.grad(_scalarised)(losses, mu, p, z)
  np.testing.assert_allclose(np.asarray(res.weights), np.asarray(expected), rtol=1e-5)
  assert float(res.residual) == 0.0


def test_defaults_are_the_uniform_preference_and_the_origin():
  losses = jnp.array([1.0, 2.0, 3.0])
  w = stch()
  state = w.init(3, jnp.float32)
  np.testing.assert_allclose(np.asarray(state.preference), 1.0 / 3.0)
  np.testing.assert_array_equal(np.asarray(state.ideal), 0.0)
  expected = jax.grad(_scalarised)(losses, 1.0, jnp.full(3, 1.0 / 3.0), jnp.zeros(3))
  np.testing.assert_allclose(np.asarray(w.weigh(losses, state).weights), expected, rtol=1e-6)


def test_small_mu_puts_the_weight_on_the_worst_task_large_mu_spreads_it():
  losses = jnp.array([1.0, 3.0, 2.5])
  p = jnp.array([0.5, 0.2, 0.3])  # p ∘ L = (0.5, 0.6, 0.75): task 2 is the worst
  weights = []
  for mu in (1.0, 0.1, 0.01, 1e-4):
    w = stch(mu, preference=p)
    weights.append(np.asarray(w.weigh(losses, w.init(3, jnp.float32)).weights))
  concentration = [wt[2] / p[2] for wt in weights]
  assert all(a < b for a, b in zip(concentration, concentration[1:]))
  np.testing.assert_allclose(weights[-1], [0.0, 0.0, 0.3], atol=1e-6)
  w = stch(1e4, preference=p)
  np.testing.assert_allclose(
    np.asarray(w.weigh(losses, w.init(3, jnp.float32)).weights), p / 3, 1e-3
  )


def test_state_is_unchanged_across_steps_and_jit():
  w = stch(0.5, ideal=[0.1, 0.2])
  state = w.init(2, jnp.float32)
  weigh = jax.jit(w.weigh)
  for losses in ([1.0, 2.0], [0.5, 0.4], [3.0, 0.1]):
    res = weigh(jnp.array(losses), state)
    jax.tree.map(np.testing.assert_array_equal, res.state, state)
    state = res.state


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"mu": 0.0}, "mu must be positive and finite, got 0.0"),
    ({"mu": float("inf")}, "mu must be positive and finite, got inf"),
    ({"preference": [0.5, -0.5]}, r"preference must be non-negative and not all zero"),
    ({"preference": [0.0, 0.0]}, r"preference must be non-negative and not all zero"),
    ({"preference": [float("nan"), 1.0]}, "preference must be finite"),
    ({"ideal": [[0.0]]}, "ideal must be a non-empty 1-D sequence"),
    ({"ideal": [0.0, float("inf")]}, "ideal must be finite"),
  ],
)
def test_bad_hyper_parameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    stch(**kwargs)


def test_lengths_are_checked_against_the_number_of_tasks():
  with pytest.raises(ValueError, match="preference has length 3 but the number of tasks is K = 2"):
    stch(preference=[1.0, 1.0, 1.0]).init(2, jnp.float32)
  with pytest.raises(ValueError, match="ideal has length 1 but the number of tasks is K = 2"):
    stch(ideal=[0.0]).init(2, jnp.float32)
  with pytest.raises(ValueError, match="'stch' weighting needs the task losses"):
    stch().weigh(None, stch().init(2, jnp.float32))


def test_toy_runs_finite_from_the_five_starts_float32():
  tx = pub_optax.balance(optax.scale_by_adam(), stch(), 1e-3, num_tasks=2, level="gradient")
  x, losses = optimize(tx, dtype=jnp.float32)
  assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(losses)))
