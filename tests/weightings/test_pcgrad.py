"""PCGrad on the Gram matrix equals PCGrad on explicit vectors with the same random orders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, standard_batch
from properties import assert_structure, batched

from pub_optax.weightings._pcgrad import pcgrad, pcgrad_weights, random_orders

BATCH = standard_batch(5)


def direct_pcgrad(vectors: np.ndarray, orders: np.ndarray) -> np.ndarray:
  """Algorithm 1 of Yu et al. on explicit vectors (independent of the Gram form)."""
  out = np.zeros(vectors.shape[1])
  for i, order in enumerate(orders):
    g = vectors[i].copy()
    for j in order:
      if j == i:
        continue
      inner = g @ vectors[j]
      norm2 = vectors[j] @ vectors[j]
      if inner < 0 and norm2 > 0:
        g = g - inner / norm2 * vectors[j]
    out += g
  return out


@jax.jit
def _orders(seed):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(BATCH.grams))
  return jax.vmap(lambda kk: random_orders(kk, 5))(keys)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_equals_the_direct_algorithm_with_the_same_orders(dtype, tol):
  orders = np.asarray(_orders(0))
  with jax.enable_x64(dtype == jnp.float64):
    w = batched(pcgrad_weights)(jnp.asarray(BATCH.grams, dtype), jnp.asarray(orders))
  assert_structure(w, 5, dtype)
  w = np.asarray(w, np.float64)
  for j, wi, order in zip(BATCH.vectors, w, orders):
    ref = direct_pcgrad(j, order)
    size = np.abs(j).max() * np.abs(wi).sum() + np.finfo(float).tiny
    np.testing.assert_allclose(j.T @ wi, ref, atol=tol * size)


def test_random_orders_are_permutations_and_differ_between_tasks():
  orders = np.asarray(_orders(1))
  for per_task in orders:
    assert all(sorted(row) == list(range(5)) for row in per_task.tolist())
  assert len({tuple(r) for r in orders.reshape(-1, 5).tolist()}) > 60  # of 160 draws among 120


def test_exact_values_no_conflict_and_state_key(x64):
  w = pcgrad(seed=3)
  weigh = jax.jit(w.weigh)
  s0 = w.init(2, jnp.float64)
  res = weigh(jnp.asarray(EXAMPLE_GRAM), s0, None)
  # g1^PC = g1 + (22/38) g2 and g2^PC = g2 + (22/18) g1 (two tasks: the order is irrelevant).
  np.testing.assert_allclose(np.asarray(res.weights), [1 + 22 / 18, 1 + 22 / 38], rtol=1e-14)
  assert not np.array_equal(np.asarray(res.state), np.asarray(s0))  # the key advances
  res = weigh(jnp.asarray([[2.0, 1.0], [1.0, 3.0]]), res.state, None)
  np.testing.assert_allclose(np.asarray(res.weights), [1.0, 1.0])  # no conflict: the sum
