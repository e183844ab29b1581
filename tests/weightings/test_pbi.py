"""PBI: weights are the loss-gradient of d1 + θ d2 (jax.grad of an independent formula)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.toy import optimize
from pub_optax.weightings._pbi import pbi


def _scalarised(losses, theta, p, z):
  """d1 + θ d2, written independently of the weighting (plain norm: off the ray)."""
  u = losses - z
  unit = p / jnp.linalg.norm(p)
  d1 = u @ unit
  return d1 + theta * jnp.linalg.norm(u - d1 * unit)


@pytest.mark.parametrize("theta", [0.0, 1.0, 5.0])
def test_weights_are_the_gradient_of_the_scalarised_loss(theta):
  losses = jnp.array([0.8, 1.3, 0.2])
  p = jnp.array([0.2, 0.5, 0.3])
  z = jnp.array([0.1, 0.0, -0.5])
  w = pbi(theta, preference=p, ideal=z)
  assert w.kind == "loss" and w.needs_losses and w.name == "pbi"
  res = jax.jit(w.weigh)(losses, w.init(3, jnp.float32))
  expected = jax.grad(_scalarised)(losses, theta, p, z)
  np.testing.assert_allclose(np.asarray(res.weights), np.asarray(expected), rtol=1e-5, atol=1e-6)
  u = losses - z
  unit = p / jnp.linalg.norm(p)
  d2 = float(jnp.linalg.norm(u - (u @ unit) * unit))
  np.testing.assert_allclose(float(res.residual), d2, rtol=1e-6)


def test_defaults_are_the_diagonal_direction_and_the_origin():
  w = pbi()
  state = w.init(2, jnp.float32)
  np.testing.assert_allclose(np.asarray(state.direction), 1 / np.sqrt(2), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(state.ideal), 0.0)
  losses = jnp.array([1.0, 3.0])
  expected = jax.grad(_scalarised)(losses, 5.0, jnp.ones(2), jnp.zeros(2))
  np.testing.assert_allclose(np.asarray(w.weigh(losses, state).weights), expected, rtol=1e-5)
  # The task ahead of the ray (task 0, smaller loss) gets a negative weight.
  assert float(w.weigh(losses, state).weights[0]) < 0.0


def test_on_the_ray_the_weights_are_the_direction_and_finite():
  w = pbi(5.0, preference=[1.0, 2.0])
  res = w.weigh(jnp.array([0.5, 1.0]), w.init(2, jnp.float32))
  np.testing.assert_allclose(np.asarray(res.weights), np.array([1.0, 2.0]) / np.sqrt(5), 1e-5)
  assert float(res.residual) < 1e-5  # 0 on the ray; measured 1.0e-6 (float32 rounding)


@pytest.mark.parametrize("scale", [15.0916, -15.0916, 3.3, 1e4])
def test_losses_on_the_ray_in_float32_give_the_direction_not_rounding_noise(scale):
  # Without the rounding threshold, (-15.0916, -15.0916) gave weights (-2.13, -2.13):
  # θ times a unit vector of float32 rounding noise along p̂.
  w = pbi(5.0)
  res = jax.jit(w.weigh)(jnp.full((2,), scale, jnp.float32), w.init(2, jnp.float32))
  np.testing.assert_allclose(np.asarray(res.weights), 1 / np.sqrt(2), rtol=1e-6)


def test_state_is_unchanged_across_steps_and_jit():
  w = pbi(ideal=[-1.0, -2.0])
  state = w.init(2, jnp.float32)
  weigh = jax.jit(w.weigh)
  for losses in ([1.0, 2.0], [0.5, 0.4], [3.0, 0.1]):
    res = weigh(jnp.array(losses), state)
    assert np.all(np.isfinite(np.asarray(res.weights)))
    jax.tree.map(np.testing.assert_array_equal, res.state, state)
    state = res.state


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"theta": -1.0}, "theta must be non-negative and finite, got -1.0"),
    ({"theta": float("nan")}, "theta must be non-negative and finite, got nan"),
    ({"eps": 0.0}, "eps must be positive and finite, got 0.0"),
    ({"preference": [1.0, -1.0]}, "preference must be non-negative and not all zero"),
    ({"preference": [0.0, 0.0]}, "preference must be non-negative and not all zero"),
    ({"ideal": [float("nan"), 0.0]}, "pbi ideal must be finite"),
  ],
)
def test_bad_hyper_parameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pbi(**kwargs)


def test_lengths_are_checked_against_the_number_of_tasks():
  with pytest.raises(
    ValueError, match="pbi preference has length 3 but the number of tasks is K = 2"
  ):
    pbi(preference=[1.0, 1.0, 1.0]).init(2, jnp.float32)
  with pytest.raises(ValueError, match="'pbi' weighting needs the task losses"):
    pbi().weigh(None, pbi().init(2, jnp.float32))


def test_toy_runs_finite_from_the_five_starts_float32():
  tx = pub_optax.balance(optax.scale_by_adam(), pbi(), 1e-3, num_tasks=2, level="gradient")
  x, losses = optimize(tx, dtype=jnp.float32)
  assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(losses)))
