"""IMTL-G: equal projections, Σw = 1, parity with the closed form G⁻¹n, exact values, equivariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, standard_batch
from properties import assert_permutation_equivariant, assert_scale_invariant, weights_of

from pub_optax.weightings._imtl import imtl_g, imtl_g_residual, imtl_g_weights

BATCH = standard_batch(5)


def _projections(gram, w):
  norms = np.sqrt(np.diagonal(gram))
  return gram @ w / norms


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.float64, 1e-10)])
def test_structure_sum_and_equal_projections(dtype, tol):
  with jax.enable_x64(dtype == jnp.float64):
    w = weights_of(imtl_g_weights, BATCH.grams, dtype)
    residuals = np.asarray(
      jax.vmap(imtl_g_residual)(jnp.asarray(BATCH.grams, dtype), jnp.asarray(w, dtype))
    )
  np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=10 * tol)
  for g, wi, full in zip(BATCH.grams, w, BATCH.full):
    if full and (dtype == jnp.float64 or np.linalg.cond(g) < 1e4):  # float32 resolves cond < 1e4
      p = _projections(g, wi)
      spread = (p.max() - p.min()) / (np.sqrt(np.max(np.diagonal(g))) * np.sum(np.abs(wi)))
      assert spread <= tol, spread
  np.testing.assert_allclose(w[BATCH.zero], 0.2, rtol=1e-6)  # zero matrix: 1/K
  full_groups = BATCH._replace(scaled=[grp for grp in BATCH.scaled if BATCH.full[grp[0]]])
  assert_scale_invariant(w, full_groups, 1e-3 if dtype == jnp.float32 else 1e-8)
  if dtype == jnp.float64:
    assert np.max(residuals[BATCH.full]) <= tol


def test_matches_the_closed_form_on_full_rank_matrices(x64):
  w = weights_of(imtl_g_weights, BATCH.grams, jnp.float64)
  for g, wi in zip(BATCH.grams[BATCH.full], w[BATCH.full]):
    v = np.linalg.solve(g, np.sqrt(np.diagonal(g)))  # Liu et al.: w ∝ G⁻¹ n
    np.testing.assert_allclose(wi, v / v.sum(), rtol=1e-7, atol=1e-9 * np.abs(v / v.sum()).max())


def test_exact_values_on_the_example_and_opposite_tasks(x64):
  """Two tasks: w_k ∝ 1/‖g_k‖ (the unit vectors get equal projections)."""
  n1, n2 = np.sqrt(18.0), np.sqrt(38.0)
  w = imtl_g()
  res = jax.jit(w.weigh)(jnp.asarray(EXAMPLE_GRAM), w.init(2, jnp.float64), None)
  np.testing.assert_allclose(np.asarray(res.weights), [n2 / (n1 + n2), n1 / (n1 + n2)], rtol=1e-12)
  assert float(res.residual) <= 1e-14
  opposite = np.array([[1.0, -3.0], [-3.0, 9.0]])  # g2 = -3 g1: cancel exactly with w = (3/4, 1/4)
  res = jax.jit(w.weigh)(jnp.asarray(opposite), w.init(2, jnp.float64), None)
  np.testing.assert_allclose(np.asarray(res.weights), [0.75, 0.25], rtol=1e-10)


def test_permutation_equivariance(x64):
  assert_permutation_equivariant(imtl_g_weights, BATCH, jnp.float64, 1e-8)
