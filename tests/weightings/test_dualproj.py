"""DualProj: KKT of the dual-cone projection, parity with a cvxpy projection, TorchJD's example."""

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

from pub_optax.weightings._dualproj import dualproj, dualproj_weights

BATCH = standard_batch(5)


def _weights(g):
  return dualproj_weights(g)[0]


def reference_dualproj(vectors: np.ndarray) -> np.ndarray:
  """Independent solve in parameter space: project the mean onto {x : Jx ≥ 0} (test-only)."""
  x = cp.Variable(vectors.shape[1])
  mean = vectors.mean(axis=0)
  cp.Problem(cp.Minimize(cp.sum_squares(x - mean)), [vectors @ x >= 0]).solve(cp.CLARABEL)
  return x.value


def assert_projection_kkt(gram, w, k, rtol):
  """``z = w − 1/K ≥ 0``, ``Gw ≥ 0`` and ``z_k (Gw)_k = 0``, relative to the trace of G."""
  trace = max(np.trace(gram), np.finfo(float).tiny)
  gw = gram @ w / trace
  z = w - 1.0 / k
  assert np.all(z >= -rtol), z
  assert np.all(gw >= -rtol), gw
  assert np.all(np.abs(z * gw) <= rtol * max(np.max(np.abs(w)), 1.0)), (z, gw)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_kkt_over_ranks_and_scales(dtype, tol):
  with jax.enable_x64(dtype == jnp.float64):
    w = weights_of(_weights, BATCH.grams, dtype)
  for g, wi, zero in zip(BATCH.grams, w, BATCH.zero):
    if zero:
      np.testing.assert_allclose(wi, 0.2)  # documented rule: the mean
      continue
    assert_projection_kkt(g, wi, 5, tol)
    assert_non_conflicting(g, wi, tol)
  rtol = 1e-4 if dtype == jnp.float32 else 1e-9
  # Unique weights on full rank; on low rank only the projection Jᵀw is unique.
  assert_scale_invariant(w, BATCH._replace(scaled=BATCH.scaled[:2]), rtol)
  for group in BATCH.scaled[2:]:
    unit = [BATCH.vectors[i].T @ w[i] / np.sqrt(np.max(np.diagonal(BATCH.grams[i]))) for i in group]
    np.testing.assert_allclose(unit, np.broadcast_to(unit[2], np.shape(unit)), atol=10 * rtol)


def test_matches_cvxpy_projection_in_parameter_space(x64):
  w = weights_of(_weights, BATCH.grams, jnp.float64)
  for j, wi, zero in zip(BATCH.vectors, w, BATCH.zero):
    if zero:
      continue
    unit = j / np.sqrt(np.max(np.sum(j * j, axis=1)))
    ref = reference_dualproj(unit)
    # Clarabel's accuracy: measured 1.6e-6; a ridge of 1e-4 on G moves the direction by 2.4e-2
    np.testing.assert_allclose(unit.T @ wi, ref, atol=1e-4 * max(np.abs(ref).max(), 1.0))


def test_permutation_equivariant(x64):
  assert_permutation_equivariant(_weights, BATCH, jnp.float64, 1e-9)


def test_torchjd_example_and_non_conflicting_mean_is_kept(x64):
  # TorchJD's docstring: DualProj()(J) = [0.5563, 1.1109, 1.1109] (reg_eps = 1e-4).
  w, _ = dualproj_weights(jnp.asarray(EXAMPLE_GRAM), reg_eps=1e-4)
  # Published to 4 decimals (±5e-5): measured 2.1e-5; without the ridge the values move 7.4e-4.
  np.testing.assert_allclose(EXAMPLE_J.T @ np.asarray(w), [0.5563, 1.1109, 1.1109], atol=1e-4)
  # Exact (reg_eps = 0): the projection zeroes the conflict with task 1 (the mean conflicts
  # with it): (Gw)_1 = 0 and w_2 = 1/2.
  w, _ = dualproj_weights(jnp.asarray(EXAMPLE_GRAM))
  w = np.asarray(w)
  np.testing.assert_allclose(w, [22 / 36, 0.5], rtol=1e-12)
  np.testing.assert_allclose((EXAMPLE_GRAM @ w)[0], 0.0, atol=1e-12)
  gram = np.array([[2.0, 1.0], [1.0, 3.0]])  # no conflict: the mean
  np.testing.assert_allclose(np.asarray(dualproj_weights(jnp.asarray(gram))[0]), 0.5)


def test_weighting_and_preference(x64):
  w = dualproj(pref=jnp.array([0.2, 0.8]))
  res = jax.jit(w.weigh)(jnp.asarray(EXAMPLE_GRAM), w.init(2, jnp.float64), None)
  wi = np.asarray(res.weights)
  assert np.all(wi >= np.array([0.2, 0.8]) - 1e-12)
  assert np.all(EXAMPLE_GRAM @ wi >= -1e-9)
  assert float(res.residual) < 1e-12
  with pytest.raises(ValueError, match="pref"):
    dualproj_weights(jnp.eye(3), jnp.ones(2))
