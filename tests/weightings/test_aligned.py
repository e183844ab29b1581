"""Aligned-MTL: the aligned system is orthogonal with equal norms σ_min; parity with numpy; exact values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, standard_batch
from properties import assert_permutation_equivariant, assert_scale_invariant, batched, weights_of

from pub_optax.weightings._aligned import aligned_mtl, aligned_mtl_weights

BATCH = standard_batch(5)


def reference_aligned(gram: np.ndarray) -> np.ndarray:
  """Independent numpy version of the published recipe (eigh, rank cut, σ_min V Λ^-1/2 Vᵀ 1)."""
  lam, v = np.linalg.eigh(gram)
  keep = lam > lam.max() * len(gram) * np.finfo(np.float64).eps
  lam, v = lam[keep], v[:, keep]
  return np.sqrt(lam.min()) * (v / np.sqrt(lam)) @ v.T @ np.ones(len(gram))


def _balance_matrix(g):
  """B with B e_i = aligned_mtl_weights(G, pref=e_i)."""
  return jax.vmap(lambda p: aligned_mtl_weights(g, p))(jnp.eye(g.shape[0], dtype=g.dtype)).T


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.float64, 1e-10)])
def test_aligned_system_is_orthogonal_with_norm_sigma_min(dtype, tol):
  with jax.enable_x64(dtype == jnp.float64):
    w = weights_of(aligned_mtl_weights, BATCH.grams, dtype)
    b = np.asarray(batched(_balance_matrix)(jnp.asarray(BATCH.grams, dtype)), np.float64)
  np.testing.assert_allclose(w[BATCH.zero], 1.0)  # zero matrix: w = pref
  for g, bi, full in zip(BATCH.grams, b, BATCH.full):
    if full:
      aligned = bi.T @ g @ bi  # Gram of the aligned task vectors
      lam_min = np.linalg.eigvalsh(g).min()
      np.testing.assert_allclose(aligned / lam_min, np.eye(5), atol=tol * np.linalg.cond(g))
  full_groups = BATCH._replace(scaled=[grp for grp in BATCH.scaled if BATCH.full[grp[0]]])
  assert_scale_invariant(w, full_groups, 1e-3 if dtype == jnp.float32 else 1e-8)


def test_matches_numpy_and_exact_example(x64):
  w = weights_of(aligned_mtl_weights, BATCH.grams, jnp.float64)
  for g, wi, full in zip(BATCH.grams, w, BATCH.full):
    if full:
      np.testing.assert_allclose(wi, reference_aligned(g), rtol=1e-8)
  lam, v = np.linalg.eigh(EXAMPLE_GRAM)  # 28 ± sqrt(584)
  expected = np.sqrt(lam[0]) * (v / np.sqrt(lam)) @ v.T @ np.ones(2)
  wt = aligned_mtl()
  res = jax.jit(wt.weigh)(jnp.asarray(EXAMPLE_GRAM), wt.init(2, jnp.float64), None)
  np.testing.assert_allclose(np.asarray(res.weights), expected, rtol=1e-12)
  np.testing.assert_allclose(np.sort(lam), 28 + np.array([-1, 1]) * np.sqrt(584.0))


def test_permutation_equivariance(x64):
  assert_permutation_equivariant(aligned_mtl_weights, BATCH, jnp.float64, 1e-8)
