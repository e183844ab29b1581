"""Parity of the Newton Nash solver with an independent reference: the Nash-MTL
concave-convex procedure solved with cvxpy (pub_optax.testing.NashCCP)."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("cvxpy")

from pub_optax import nash_weights  # noqa: E402
from pub_optax.testing import NashCCP, nash_weights_ccp  # noqa: E402

# Few distinct sizes: each (K, dtype) costs one XLA compilation of the Newton solver.
SIZES = (2, 5, 9, 16)
PER_SIZE = 6  # 24 Gram matrices in all


def _well_conditioned_gram(rng, k):
  """Gram of k unit-ish task vectors sharing one direction with correlations in
  [-0.5, 0.8] (some conflict), task norms within 10x, overall scale 1e-3..1e3."""
  p = 4 * k + 8
  shared = rng.standard_normal(p)
  shared /= np.linalg.norm(shared)
  coef = rng.uniform(-0.5, 0.8, size=k)
  own = rng.standard_normal((k, p))
  own /= np.linalg.norm(own, axis=1, keepdims=True)
  rows = coef[:, None] * shared + np.sqrt(1.0 - coef**2)[:, None] * own
  rows *= np.exp(rng.uniform(np.log(0.3), np.log(3.0), size=(k, 1)))
  return rows @ rows.T * 10.0 ** rng.uniform(-3.0, 3.0)


@pytest.fixture(scope="module")
def problems():
  """{K: (grams (n, K, K) float64, reference weights (n, K))} from the tight CCP."""
  rng = np.random.default_rng(20240611)
  out = {}
  for k in SIZES:
    grams = np.stack([_well_conditioned_gram(rng, k) for _ in range(PER_SIZE)])
    refs = []
    for g in grams:
      res = nash_weights_ccp(g)
      assert res.converged, (k, res)
      assert res.residual <= 1e-8, (k, res.residual)
      refs.append(res.weights)
    out[k] = (grams, np.stack(refs))
  return out


def _max_rel_diff(a, b):
  return float(np.max(np.abs(a - b) / np.abs(b)))


def test_newton_matches_ccp_float64(problems, x64):
  del x64
  solve = jax.jit(jax.vmap(nash_weights))
  count = 0
  for k, (grams, refs) in problems.items():
    res = solve(jnp.asarray(grams, jnp.float64))
    assert res.weights.dtype == jnp.float64
    assert bool(np.all(np.asarray(res.exact))), k
    err = _max_rel_diff(np.asarray(res.weights), refs)
    assert err <= 1e-4, (k, err)  # the bar; in practice ~1e-10
    assert err <= 1e-7, (k, err)
    count += len(grams)
  assert count >= 20


def test_newton_matches_ccp_float32(problems):
  solve = jax.jit(jax.vmap(nash_weights))
  for k, (grams, refs) in problems.items():
    res = solve(jnp.asarray(grams.astype(np.float32)))
    assert res.weights.dtype == jnp.float32
    err = _max_rel_diff(np.asarray(res.weights, np.float64), refs)
    assert err <= 1e-4, (k, err)  # float32 rounding of G alone costs ~cond(G)·6e-8


def test_reference_is_scale_equivariant():
  # G → sG must give α → α/√s: checks the normalise / un-normalise round trip.
  rng = np.random.default_rng(3)
  g = _well_conditioned_gram(rng, 4)
  base = nash_weights_ccp(g).weights
  for s in (1e-6, 1e-2, 1e4):
    scaled = nash_weights_ccp(s * g)
    assert scaled.converged
    np.testing.assert_allclose(scaled.weights, base / np.sqrt(s), rtol=1e-8)


def test_reference_closed_form():
  # Orthogonal task vectors: α_k = 1/‖d_k‖.
  res = nash_weights_ccp(np.diag([4.0, 1.0, 0.25]))
  np.testing.assert_allclose(res.weights, [0.5, 1.0, 2.0], rtol=1e-9)


def test_nash_mtl_settings_and_dpp():
  literal = NashCCP.nash_mtl(3)
  dpp = NashCCP.nash_mtl(3, parameterized=True)
  assert not literal.is_dpp  # the original problem: re-canonicalised at every solve
  assert dpp.is_dpp
  assert NashCCP(3).is_dpp
  assert literal.max_iter == 20 and literal.stop_rule == "nash_mtl" and literal.trust_region is None
  # A benign problem (aligned tasks, ‖G‖ ~ 1): the original procedure reaches the Nash point.
  g = np.array([[1.0, 0.3, 0.2], [0.3, 0.5, 0.1], [0.2, 0.1, 0.8]])
  ref = nash_weights_ccp(g).weights
  for solver in (literal, dpp):
    res = solver.solve(g)
    assert res.converged and res.iterations <= 20
    assert _max_rel_diff(res.weights, ref) <= 1e-4


def test_invalid_settings():
  with pytest.raises(ValueError, match="parameterized=False"):
    NashCCP(2, parameterized=False)
  with pytest.raises(ValueError, match="objective"):
    NashCCP(2, objective="mgda")
  with pytest.raises(ValueError, match="shape"):
    NashCCP(2).solve(np.eye(3))


def test_missing_cvxpy_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "cvxpy", None)  # makes `import cvxpy` fail
  with pytest.raises(ImportError, match=r'pip install "pub_optax\[test\]"'):
    NashCCP(2)
