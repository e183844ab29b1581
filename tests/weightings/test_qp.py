"""The shared non-negative QP solver: parity with scipy's NNLS, KKT conditions, degenerate inputs."""

import jax.numpy as jnp
import numpy as np
import pytest
from properties import batched
from scipy.optimize import nnls

from pub_optax.weightings._qp import nonneg_qp

K, BATCH = 6, 24


def _least_squares(rng, rows):
  a = rng.standard_normal((BATCH, rows, K))
  b = rng.standard_normal((BATCH, rows)) * 10.0 ** rng.uniform(-3, 3, size=(BATCH, 1))
  return a, b, a.transpose(0, 2, 1) @ a, -np.einsum("nrk,nr->nk", a, b)


@pytest.mark.parametrize("rows", [4, 12])  # 4 rows: Q = AᵀA is singular
def test_matches_scipy_nnls_on_least_squares_problems(x64, rows):
  a, b, q, c = _least_squares(np.random.default_rng(rows), rows)
  res = batched(nonneg_qp)(jnp.asarray(q), jnp.asarray(c))
  x = np.asarray(res.x)
  assert np.all(x >= 0)
  for i in range(BATCH):
    ref, _ = nnls(a[i], b[i])
    obj = lambda z: np.sum((a[i] @ z - b[i]) ** 2)
    assert obj(x[i]) <= obj(ref) * (1 + 1e-10) + 1e-12 * np.sum(b[i] ** 2), (rows, i)
  assert np.max(np.asarray(res.residual)) <= 1e-12
  assert np.all(np.asarray(res.iterations) < 8 * K + 16)


def test_degenerate_inputs_give_finite_answers(x64):
  q = np.zeros((BATCH, K, K))
  c = np.zeros((BATCH, K))
  c[1, :2] = [-1.0, 1.0]  # Q = 0 with a negative cost: unbounded, must stay finite
  x = np.asarray(batched(nonneg_qp)(jnp.asarray(q), jnp.asarray(c)).x)
  assert np.all(np.isfinite(x)) and np.all(x >= 0)
  assert np.all(x[0] == 0)


def test_errors():
  with pytest.raises(ValueError, match="square"):
    nonneg_qp(jnp.zeros((2, 3)), jnp.zeros(2))
  with pytest.raises(ValueError, match="shape"):
    nonneg_qp(jnp.eye(2), jnp.zeros(3))
