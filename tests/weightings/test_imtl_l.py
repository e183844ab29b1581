"""IMTL-L: weights e^s; s takes Adam steps on the s-gradient of Σ e^s L − s, so weights -> 1/L."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax.toy import optimize
from pub_optax.weightings._imtl_l import imtl_l


def _scalarised(s, losses):
  """The IMTL-L loss, written independently of the weighting."""
  return jnp.sum(jnp.exp(s) * losses - s)


def _run(weighting, losses_seq):
  losses_seq = jnp.asarray(losses_seq, jnp.float32)

  def step(state, losses):
    res = weighting.weigh(losses, state)
    return res.state, (res.weights, res.residual)

  state = weighting.init(losses_seq.shape[1], jnp.float32)
  return jax.jit(lambda s: jax.lax.scan(step, s, losses_seq))(state)


def test_weights_are_the_loss_gradient_and_s_follows_adam_on_its_gradient():
  w = imtl_l(learning_rate=0.1, init=0.3)
  assert w.kind == "loss" and w.needs_losses and w.name == "imtl_l"
  losses = jnp.array([2.0, 0.25, 1.0])
  state = w.init(3, jnp.float32)
  res = jax.jit(w.weigh)(losses, state)
  s = state.log_scales
  np.testing.assert_allclose(np.asarray(res.weights), jax.grad(_scalarised, 1)(s, losses), 1e-6)
  grad_s = jax.grad(_scalarised, 0)(s, losses)
  adam = optax.adam(0.1)
  step, _ = adam.update(grad_s, adam.init(s), s)
  np.testing.assert_allclose(np.asarray(res.state.log_scales), np.asarray(s + step), rtol=1e-6)
  np.testing.assert_allclose(float(res.residual), float(jnp.max(jnp.abs(grad_s))), rtol=1e-6)


def test_state_evolution_converges_to_inverse_losses():
  losses = np.array([4.0, 0.5, 1.0])
  state, (weights, residuals) = _run(imtl_l(learning_rate=0.02), np.tile(losses, (1500, 1)))
  weights = np.asarray(weights)
  np.testing.assert_allclose(weights[0], 1.0)  # init s = 0
  assert weights[1, 0] < 1.0 and weights[1, 1] > 1.0  # the first Adam step: s moves by -/+ lr
  np.testing.assert_allclose(np.asarray(weights[1]), np.exp([-0.02, 0.02, 0.0]), rtol=1e-5)
  np.testing.assert_allclose(weights[-1], 1.0 / losses, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(state.log_scales), -np.log(losses), atol=1e-3)
  assert float(residuals[-1]) < 1e-2 < float(residuals[0])


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"learning_rate": 0.0}, "learning_rate must be positive, got 0.0"),
    ({"learning_rate": -1e-3}, "learning_rate must be positive"),
    ({"init": float("inf")}, "init must be finite, got inf"),
    ({"b1": 1.0}, "b1 must lie in"),
    ({"b2": -0.1}, "b2 must lie in"),
    ({"eps": -1.0}, "eps must be non-negative"),
  ],
)
def test_bad_hyper_parameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    imtl_l(**kwargs)


def test_schedule_learning_rate_is_accepted():
  w = imtl_l(optax.constant_schedule(0.1))
  res = w.weigh(jnp.array([2.0, 1.0]), w.init(2, jnp.float32))
  assert np.all(np.isfinite(np.asarray(res.state.log_scales)))


def test_missing_losses_raise():
  w = imtl_l()
  with pytest.raises(ValueError, match="'imtl_l' weighting needs the task losses"):
    w.weigh(None, w.init(2, jnp.float32))


def test_toy_runs_finite_from_the_five_starts_float32():
  tx = pub_optax.balance(optax.scale_by_adam(), imtl_l(), 1e-3, num_tasks=2, level="gradient")
  x, losses = optimize(tx, dtype=jnp.float32)
  assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(losses)))
