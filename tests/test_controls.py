"""The control methods used by benchmarks/ranking.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pub_optax
from pub_optax._methods import METHODS, make_method


def test_pub_fixed_is_registered():
  info = METHODS["pub_fixed"]
  assert info.level == "update"
  assert "control" in info.description
  assert "2410.05806" in info.reference


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_pub_fixed_shared_update_is_sum_of_adam_lookaheads(num_tasks):
  rng = np.random.default_rng(num_tasks)
  params = {
    "shared": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
    "head": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
  }
  mask = {"shared": True, "head": False}
  lr = 1e-2
  tx = make_method("pub_fixed", lr, num_tasks=num_tasks, shared=mask)
  state = tx.init(params)
  adam = optax.scale_by_adam()
  adam_state = adam.init(params)
  for _ in range(3):  # a few steps so the Adam moments are not trivial
    grads = jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=(num_tasks,) + p.shape), jnp.float32), params
    )
    updates, state = tx.update(grads, state, params)
    # Expected: shared leaf -lr * Σ_k adam(g_k, s) (look-ahead, state not committed);
    # head leaf: Adam's update of the task sum; state advances with the sum (weights 1).
    lookahead = [
      adam.update(jax.tree.map(lambda g: g[k], grads), adam_state, params)[0]
      for k in range(num_tasks)
    ]
    summed = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
    committed, adam_state = adam.update(summed, adam_state, params)
    want_shared = -lr * sum(d["shared"] for d in lookahead)
    np.testing.assert_allclose(updates["shared"], want_shared, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(updates["head"], -lr * committed["head"], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(
      np.asarray(pub_optax.balance_state(state).weights), np.ones(num_tasks)
    )
    params = optax.apply_updates(params, updates)
