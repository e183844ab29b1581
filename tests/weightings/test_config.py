"""ConFIG: equal cosines on full rank, parity with the published formula on explicit vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, EXAMPLE_J, standard_batch
from properties import assert_permutation_equivariant, assert_scale_invariant, weights_of

from pub_optax.weightings._config import config, config_weights

BATCH = standard_batch(5)


def _weights(g):
  return config_weights(g)[0]


def reference_config(vectors: np.ndarray, pref=None) -> np.ndarray:
  """Equation 2 of Liu et al. on explicit vectors, as TorchJD's ConFIG (test-only)."""
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  units = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
  pref = np.ones(len(vectors)) if pref is None else pref
  direction = np.linalg.pinv(units, rcond=1e-10) @ pref
  unit = direction / np.linalg.norm(direction)
  return np.sum(vectors @ unit) * unit


# float32 solves on the Gram matrix err by about cond(unit vectors)²·eps: 2.0e-4 for the worst
# random matrix of the batch (cond 58), measured 1.7e-4 (of max|ref|); bound 10x that.
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-3), (jnp.float64, 1e-10)])
def test_matches_the_published_formula_on_explicit_vectors(dtype, tol):
  with jax.enable_x64(dtype == jnp.float64):
    w = weights_of(_weights, BATCH.grams, dtype)
  for j, wi, zero in zip(BATCH.vectors, w, BATCH.zero):
    if zero:
      np.testing.assert_allclose(wi, 0.2)  # documented rule
      continue
    ref = reference_config(j)
    np.testing.assert_allclose(j.T @ wi, ref, atol=tol * np.abs(ref).max())


def test_equal_cosines_on_full_rank(x64):
  w = weights_of(_weights, BATCH.grams, jnp.float64)
  for g, wi in zip(BATCH.grams[BATCH.full], w[BATCH.full]):
    proj = g @ wi / np.sqrt(np.diagonal(g))  # g_kᵀd / ‖g_k‖
    np.testing.assert_allclose(proj, proj.mean(), rtol=1e-9)
    # and the length is the sum of the projections of the task vectors
    d_norm = np.sqrt(wi @ g @ wi)
    np.testing.assert_allclose(np.sum(g @ wi) / d_norm, d_norm, rtol=1e-9)


def test_scale_invariant_and_permutation_equivariant(x64):
  w = weights_of(_weights, BATCH.grams, jnp.float64)
  assert_scale_invariant(w, BATCH._replace(scaled=BATCH.scaled[:2]), 1e-9)
  assert_permutation_equivariant(_weights, BATCH, jnp.float64, 1e-9)


def test_example_preference_and_residual(x64):
  w, residual = config_weights(jnp.asarray(EXAMPLE_GRAM))
  np.testing.assert_allclose(EXAMPLE_J.T @ np.asarray(w), reference_config(EXAMPLE_J), rtol=1e-12)
  assert float(residual) < 1e-12
  pref = np.array([1.0, 2.0])
  w, _ = config_weights(jnp.asarray(EXAMPLE_GRAM), jnp.asarray(pref))
  np.testing.assert_allclose(
    EXAMPLE_J.T @ np.asarray(w), reference_config(EXAMPLE_J, pref), rtol=1e-12
  )
  # Dependent tasks with different directions: J_u u = 1 has no exact solution.
  j = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  _, residual = config_weights(jnp.asarray(j @ j.T))
  assert float(residual) > 0.1
  with pytest.raises(ValueError, match="pref"):
    config_weights(jnp.eye(2), jnp.ones(3))


def test_weighting_is_config_weights(x64):
  w = config()
  res = jax.jit(w.weigh)(jnp.asarray(EXAMPLE_GRAM), w.init(2, jnp.float64), None)
  np.testing.assert_allclose(np.asarray(res.weights), np.asarray(_weights(EXAMPLE_GRAM)))
  assert float(res.residual) < 1e-12
