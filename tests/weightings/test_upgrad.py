"""UPGrad: structure, non-conflicting joint direction, parity with a cvxpy dual-cone projection, exact values."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, EXAMPLE_J, standard_batch
from properties import (
  assert_non_conflicting,
  assert_permutation_equivariant,
  assert_scale_invariant,
  weights_of,
)

from pub_optax.weightings._upgrad import upgrad, upgrad_weights

BATCH = standard_batch(5)


def _weights(g):
  return upgrad_weights(g)[0]


def reference_upgrad(vectors: np.ndarray) -> np.ndarray:
  """Independent implementation: project each g_i/K onto {x : Jx ≥ 0} in the parameter space."""
  k, p = vectors.shape
  total = np.zeros(p)
  for i in range(k):
    x = cp.Variable(p)
    cp.Problem(cp.Minimize(cp.sum_squares(x - vectors[i] / k)), [vectors @ x >= 0]).solve(
      cp.CLARABEL
    )
    total += x.value
  return total


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_structure_and_non_conflicting_over_ranks_and_scales(dtype, tol):
  with jax.enable_x64(dtype == jnp.float64):
    w = weights_of(_weights, BATCH.grams, dtype)
  assert np.all(w >= 0.2 - tol)  # v^(i) ≥ e_i / K
  for g, wi in zip(BATCH.grams, w):
    assert_non_conflicting(g, wi, tol)
  np.testing.assert_allclose(w[BATCH.zero], 0.2)
  assert_scale_invariant(w, BATCH, 1e-3 if dtype == jnp.float32 else 1e-8)


def test_direction_matches_a_cvxpy_projection(x64):
  w = weights_of(_weights, BATCH.grams, jnp.float64)
  for g, j, wi, zero in zip(BATCH.grams[::3], BATCH.vectors[::3], w[::3], BATCH.zero[::3]):
    if zero:
      continue
    j = j / np.sqrt(np.trace(g))  # unit-size problem for the reference solver's tolerances
    # the reference solver's accuracy: measured 4.6e-7; a ridge of 1e-4 on G moves it by 3.1e-3
    np.testing.assert_allclose(j.T @ wi, reference_upgrad(j), atol=1e-5)


def test_exact_values_on_the_example(x64):
  """g1 = (-4,1,1), g2 = (6,1,1) conflict: each projection removes the component against the other."""
  w = upgrad()
  res = jax.jit(w.weigh)(jnp.asarray(EXAMPLE_GRAM), w.init(2, jnp.float64), None)
  expected = [(1 + 22 / 18) / 2, (1 + 22 / 38) / 2]
  np.testing.assert_allclose(np.asarray(res.weights), expected, rtol=1e-13)
  np.testing.assert_allclose(
    EXAMPLE_J.T @ np.asarray(res.weights), reference_upgrad(EXAMPLE_J), atol=1e-6
  )
  no_conflict = np.array([[2.0, 1.0], [1.0, 3.0]])
  res = jax.jit(w.weigh)(jnp.asarray(no_conflict), w.init(2, jnp.float64), None)
  np.testing.assert_allclose(np.asarray(res.weights), [0.5, 0.5], rtol=1e-14)  # the mean


def test_permutation_equivariance(x64):
  assert_permutation_equivariant(_weights, BATCH, jnp.float64, 1e-7)
