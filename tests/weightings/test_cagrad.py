"""CAGrad: optimality (primal value vs cvxpy, dual certificate, the radius constraint), exact values."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import EXAMPLE_GRAM, standard_batch
from properties import assert_permutation_equivariant, assert_scale_invariant, weights_of
from scipy.optimize import minimize

from pub_optax.weightings._cagrad import cagrad, cagrad_weights

BATCH = standard_batch(5)
C = 0.4


def _weights(g):
  return cagrad_weights(g, C, rescale=False).weights


def dual_solution(alpha):
  """w* from α = 1/K + λ w* (rescale=False): λ = Σα − 1 because Σw* = 1."""
  lam = alpha.sum(axis=-1, keepdims=True) - 1.0
  return (alpha - 1.0 / alpha.shape[-1]) / np.where(lam > 0, lam, 1.0)


def objective(gram, w, c=C):
  b = gram.sum(axis=1) / len(gram)
  return w @ b + c * np.sqrt(b.mean()) * np.sqrt(max(w @ gram @ w, 0.0))


def reference_value(gram, c=C):
  """min over the simplex of g_wᵀg0 + c‖g0‖‖g_w‖ with cvxpy (test-only)."""
  lam, v = np.linalg.eigh(gram)
  j = (v * np.sqrt(np.maximum(lam, 0.0))).T  # any J with JᵀJ... rows: G = jᵀj
  b = gram.sum(axis=1) / len(gram)
  w = cp.Variable(len(gram))
  prob = cp.Problem(
    cp.Minimize(b @ w + c * np.sqrt(b.mean()) * cp.norm(j @ w)), [w >= 0, cp.sum(w) == 1]
  )
  prob.solve(cp.CLARABEL)
  return prob.value


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.float64, 1e-10)])
def test_structure_radius_and_dual_certificate(dtype, tol):
  """d = Jᵀα satisfies ‖d − g0‖ = r, and min_k g_kᵀd equals the dual value F(w*):
  by weak duality this certifies that both d and w* are optimal."""
  with jax.enable_x64(dtype == jnp.float64):
    alpha = weights_of(_weights, BATCH.grams, dtype)
  np.testing.assert_allclose(alpha[BATCH.zero], 0.2)  # zero matrix: the mean
  for g, a, w, full in zip(BATCH.grams, alpha, dual_solution(alpha), BATCH.full):
    if not full:
      continue
    s = np.max(np.diagonal(g))
    r2 = C**2 * g.sum() / 25
    dev = a - 0.2  # d − g0 = Jᵀ(α − 1/K)
    assert abs(dev @ g @ dev - r2) <= tol * s, (dev @ g @ dev, r2)
    assert np.all(w >= -tol) and abs(np.sum(w) - 1) <= tol
    assert abs(np.min(g @ a) - objective(g, w)) <= tol * s
  full_groups = BATCH._replace(scaled=[grp for grp in BATCH.scaled if BATCH.full[grp[0]]])
  assert_scale_invariant(alpha, full_groups, 1e-3 if dtype == jnp.float32 else 1e-8)


def test_primal_value_matches_cvxpy(x64):
  alpha = weights_of(_weights, BATCH.grams, jnp.float64)
  for g, w, zero in zip(BATCH.grams, dual_solution(alpha), BATCH.zero):
    if zero:
      continue
    gn = g / np.max(np.diagonal(g))
    assert objective(gn, w) <= reference_value(gn) + 1e-7


def test_exact_values_on_the_example_against_scipy(x64):
  """J = [[-4,1,1],[6,1,1]]: F decreases towards the vertex w* = e_1, so d = g0 + r g1/‖g1‖."""
  f = lambda x: objective(EXAMPLE_GRAM, np.array([x[0], 1 - x[0]]))
  ref = minimize(f, x0=[0.5], bounds=[(0.0, 1.0)], method="L-BFGS-B").x[0]
  assert ref == pytest.approx(1.0, abs=1e-6)
  lam = C * np.sqrt(3.0) / np.sqrt(18.0)  # r / ‖g1‖ with ‖g0‖² = 3
  w = cagrad(C)
  res = jax.jit(w.weigh)(jnp.asarray(EXAMPLE_GRAM), w.init(2, jnp.float64), None)
  np.testing.assert_allclose(
    np.asarray(res.weights), np.array([0.5 + lam, 0.5]) / (1 + C**2), rtol=1e-12
  )


def test_permutation_equivariance(x64):
  assert_permutation_equivariant(_weights, BATCH, jnp.float64, 1e-7)
