"""The paper's toy (Fig. 2): PUB reaches the joint optimum from all five starts; Adam on the sum does not."""

import jax.numpy as jnp
import numpy as np
import optax

import pub_optax
from pub_optax.toy import OPTIMUM_LOSS, STARTS, optimize
from pub_optax.weightings import stateless

_SUM = stateless("sum", lambda g: jnp.ones(g.shape[0], g.dtype))


def _adam_on_sum():
  return pub_optax.balance(optax.scale_by_adam(), _SUM, 1e-3, num_tasks=2, level="gradient")


def test_pub_raw_reaches_the_joint_optimum_from_every_start_float64(x64):
  _, losses = optimize(pub_optax.pub_adam(1e-3, num_tasks=2, scaling="raw"), dtype=jnp.float64)
  assert np.all(np.abs(np.asarray(losses) - OPTIMUM_LOSS) < 0.1), losses


def test_rms_is_raw_on_the_toy(x64):
  raw, _ = optimize(
    pub_optax.pub_adam(1e-3, num_tasks=2, scaling="raw"), num_steps=2000, dtype=jnp.float64
  )
  rms, _ = optimize(
    pub_optax.pub_adam(1e-3, num_tasks=2, scaling="rms"), num_steps=2000, dtype=jnp.float64
  )
  np.testing.assert_allclose(raw, rms, rtol=1e-12)  # P = K = 2: sqrt(P/K) = 1


def test_adam_on_the_sum_stalls_where_the_paper_says(x64):
  _, losses = optimize(_adam_on_sum(), dtype=jnp.float64)
  dist = np.abs(np.asarray(losses) - OPTIMUM_LOSS).max(axis=1)
  off = [STARTS[i] for i in np.flatnonzero(dist > 1.0)]
  assert off == [(-8.5, 7.5), (9.0, 9.0)], losses


def test_pub_float32_is_finite_and_near_the_optimum():
  x, losses = optimize(pub_optax.pub_adam(1e-3, num_tasks=2, scaling="raw"), dtype=jnp.float32)
  assert np.all(np.isfinite(np.asarray(x)))
  assert np.all(np.abs(np.asarray(losses) - OPTIMUM_LOSS) < 0.5), losses
