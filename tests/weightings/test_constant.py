"""Constant weighting: the given weights at every step, validated at construction and at init."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.toy import optimize
from pub_optax.weightings._constant import constant


def test_returns_the_given_weights_at_every_step_and_is_jittable():
  w = constant([0.7, -0.2, 1.5])
  assert w.kind == "loss" and not w.needs_losses and w.name == "constant"
  state = w.init(3, jnp.float32)
  weigh = jax.jit(w.weigh)
  for _ in range(3):
    res = weigh(None, state)
    state = res.state
    np.testing.assert_allclose(np.asarray(res.weights), [0.7, -0.2, 1.5], rtol=1e-6)
    assert res.weights.dtype == jnp.float32 and float(res.residual) == 0.0


def test_weights_are_the_gradient_of_the_weighted_loss():
  c = jnp.array([0.3, 2.0])
  w = constant(c)
  losses = jnp.array([1.5, -4.0])
  expected = jax.grad(lambda l: jnp.sum(c * l))(losses)
  np.testing.assert_allclose(np.asarray(w.weigh(losses, w.init(2, jnp.float32)).weights), expected)


def test_dtype_follows_the_parameters_but_at_least_float32(x64):
  w = constant([1.0, 2.0])
  assert w.init(2, jnp.float16).dtype == jnp.float32
  assert w.init(2, jnp.float64).dtype == jnp.float64


@pytest.mark.parametrize(
  "bad, match",
  [
    ([1.0, float("nan")], "finite"),
    ([float("inf"), 1.0], "finite"),
    ([], "non-empty 1-D"),
    ([[1.0, 2.0]], "non-empty 1-D"),
    (["a", "b"], "real numbers"),
  ],
)
def test_bad_weights_raise_at_construction(bad, match):
  with pytest.raises(ValueError, match=match):
    constant(bad)


def test_length_is_checked_against_the_number_of_tasks():
  with pytest.raises(ValueError, match=r"length 3 but the number of tasks is K = 2"):
    constant([1.0, 2.0, 3.0]).init(2, jnp.float32)
  tx = pub_optax.balance(optax.scale_by_adam(), constant([1.0]), 1e-3, num_tasks=2)
  with pytest.raises(ValueError, match="K = 2"):
    tx.init(jnp.zeros(3))


def test_toy_runs_finite_from_the_five_starts_float32():
  tx = pub_optax.balance(
    optax.scale_by_adam(), constant([0.5, 0.5]), 1e-3, num_tasks=2, level="gradient"
  )
  x, losses = optimize(tx, dtype=jnp.float32)
  assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(losses)))
