"""Equal, ones (sum) and RLW: values, loss kind (no Gram matrix), RLW on the simplex and keyed by the state."""

import jax
import jax.numpy as jnp
import numpy as np

from pub_optax.weightings._simple import equal, ones, rlw


def test_equal_and_ones_values_and_flags():
  for w, value in ((equal(), 0.25), (ones(), 1.0)):
    assert w.kind == "loss" and not w.needs_losses
    res = w.weigh(None, w.init(4, jnp.float32))
    np.testing.assert_array_equal(np.asarray(res.weights), value)
    assert res.weights.dtype == jnp.float32
  assert ones().name == "sum" and equal().name == "equal"


def test_rlw_draws_softmax_of_gaussians_from_its_key():
  w = rlw(seed=7)
  assert w.kind == "loss" and w.name == "rlw"
  state = w.init(5, jnp.float32)
  weigh = jax.jit(w.weigh)
  draws = []
  for _ in range(200):
    res = weigh(None, state)
    state = res.state
    draws.append(np.asarray(res.weights))
  draws = np.stack(draws)
  assert np.all(draws > 0)
  np.testing.assert_allclose(draws.sum(axis=1), 1.0, rtol=1e-6)
  assert len({tuple(d) for d in draws.round(6).tolist()}) == 200  # a new draw every step
  # Exchangeable tasks: measured 0.025 off with this seed, where a mean of 200 draws has a
  # standard error of 0.012; a bound 10x wider would pass a sampler that favours one task.
  np.testing.assert_allclose(draws.mean(axis=0), 0.2, atol=0.03)
  again = weigh(None, w.init(5, jnp.float32))
  key, sub = jax.random.split(jax.random.PRNGKey(7))
  np.testing.assert_allclose(
    np.asarray(again.weights), np.asarray(jax.nn.softmax(jax.random.normal(sub, (5,)))), rtol=1e-6
  )
