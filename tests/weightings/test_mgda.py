"""MGDA: structure, KKT of the min-norm problem, parity with a cvxpy QP, exact values, equivariances."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, standard_batch
from properties import (
  assert_min_norm_kkt,
  assert_non_conflicting,
  assert_on_simplex,
  assert_permutation_equivariant,
  assert_scale_invariant,
  weights_of,
)

from pub_optax.weightings._mgda import mgda, mgda_weights

BATCH = standard_batch(5)


def _weights(g):
  return mgda_weights(g).weights


def reference_mgda(vectors: np.ndarray) -> np.ndarray:
  """Independent solve: min ‖Jᵀw‖² over the simplex with cvxpy (test-only)."""
  w = cp.Variable(vectors.shape[0])
  cp.Problem(cp.Minimize(cp.sum_squares(vectors.T @ w)), [w >= 0, cp.sum(w) == 1]).solve(
    cp.CLARABEL
  )
  return w.value


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.float64, 1e-12)])
def test_structure_simplex_and_kkt_over_ranks_and_scales(dtype, tol):
  with jax.enable_x64(dtype == jnp.float64):
    w = weights_of(_weights, BATCH.grams, dtype)
  for g, wi, zero in zip(BATCH.grams, w, BATCH.zero):
    assert_on_simplex(wi, tol)
    if zero:
      np.testing.assert_allclose(wi, 0.2)  # documented rule: uniform weights
      continue
    assert_min_norm_kkt(g, wi, tol)
    assert_non_conflicting(g, wi, tol)
  assert_scale_invariant(w, BATCH, 1e-4 if dtype == jnp.float32 else 1e-9)


def test_min_norm_matches_cvxpy_qp(x64):
  w = weights_of(_weights, BATCH.grams, jnp.float64)
  for g, j, wi, zero in zip(BATCH.grams, BATCH.vectors, w, BATCH.zero):
    if zero:
      continue
    ref = reference_mgda(j / np.sqrt(np.max(np.diagonal(g))))
    scale = np.max(np.diagonal(g))
    # The min-norm point is unique (the weights need not be): compare the norms.
    assert wi @ g @ wi / scale <= ref @ g @ ref / scale + 1e-8


def test_exact_values_on_the_example(x64):
  """J = [[-4, 1, 1], [6, 1, 1]]: the min-norm point is (0, 1, 1), at w = (0.6, 0.4)."""
  w = mgda()
  assert w.name == "mgda" and w.kind == "gram" and not w.needs_losses
  res = jax.jit(w.weigh)(jnp.asarray(EXAMPLE_GRAM), w.init(2, jnp.float64), None)
  np.testing.assert_allclose(np.asarray(res.weights), [0.6, 0.4], rtol=1e-14)
  ref = reference_mgda(np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
  np.testing.assert_allclose(np.asarray(res.weights), ref, atol=1e-7)
  assert float(res.residual) <= 1e-15


def test_permutation_equivariance_on_unique_solutions(x64):
  assert_permutation_equivariant(_weights, BATCH, jnp.float64, 1e-8)
