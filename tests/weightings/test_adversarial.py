"""Every Gram weighting on hard matrices: finite weights, their sign promise, an honest residual.

The matrices come from :func:`matrices.adversarial_grams` (zero rows, rank one,
exactly opposed and cancelling tasks, near duplicates, squared task norms mixed
over 1e-30…1e30). One vmapped call per (weighting, K, dtype) solves a whole batch.
A second test checks the non-finite rule: a Gram with a NaN or ±Inf entry gives
NaN weights and an infinite residual, promptly.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrices import adversarial_grams

from pub_optax.weightings import (
  aligned_mtl,
  cagrad_weights,
  imtl_g,
  mgda_weights,
  nash_weights,
  pcgrad,
  upgrad_weights,
)

# (K, matrices) per dtype: one compilation each, so few sizes with many matrices; at K = 64
# the QP weightings solve K (UPGrad) or dozens of (CAGrad) active-set problems per matrix.
SIZES = {
  jnp.float32: ((2, 2048), (16, 256), (64, 32)),
  jnp.float64: ((1, 256), (5, 1024), (64, 32)),
}
LARGE_K_CAP = {"upgrad": 4, "cagrad": 4}
TOL = {jnp.float32: 1e-3, jnp.float64: 1e-9}


def _unit(g):
  return g / max(float(np.max(np.diagonal(g))), np.finfo(np.float64).tiny)


def _nash(g):
  res = nash_weights(g)
  return res.weights, res.residual


def _mgda(g):
  res = mgda_weights(g)
  return res.weights, res.residual


def _imtl(g):
  w = imtl_g()
  res = w.weigh(g, w.init(g.shape[0], g.dtype), None)
  return res.weights, res.residual


def _cagrad(g):
  res = cagrad_weights(g)
  return res.weights, res.residual


def _aligned(g):
  w = aligned_mtl()
  res = w.weigh(g, w.init(g.shape[0], g.dtype), None)
  return res.weights, res.residual


def _pcgrad(g):
  w = pcgrad()
  res = w.weigh(g, w.init(g.shape[0], g.dtype), None)
  return res.weights, res.residual


def _nash_residual(g, w, eps):
  d = np.diagonal(g)
  act = d > eps**2 * d.max()
  if not act.any():
    return 0.0
  ga, wa = _unit(g)[np.ix_(act, act)], w[act] * np.sqrt(d.max())
  return np.linalg.norm(ga @ wa - 1.0 / wa) / np.linalg.norm(1.0 / wa)


def _mgda_residual(g, w, eps):
  del eps
  gw = _unit(g) @ w
  n2 = w @ gw
  on_support = np.max(np.where(w > 0, np.abs(gw - n2), 0.0))
  return max(np.max(np.maximum(n2 - gw, 0.0)), on_support)


def _imtl_residual(g, w, eps):
  norms = np.sqrt(np.maximum(np.diagonal(g), 0.0))
  live = norms > eps * norms.max()  # the tasks the residual covers
  if not live.any():
    return 0.0
  proj = (g @ w)[live] / norms[live]
  return (proj.max() - proj.min()) / (norms.max() * np.sum(np.abs(w)))


def _conflict(g, w, eps):
  """How far the joint direction conflicts with a task, relative to the sizes involved."""
  del eps
  return np.max(np.maximum(-(_unit(g) @ w), 0.0)) / max(np.sum(np.abs(w)), 1.0)


# name: (gram -> (weights, residual), lower bound on the weights or None, independent residual)
WEIGHTINGS = {
  "nash": (_nash, 0.0, _nash_residual),
  "mgda": (_mgda, 0.0, _mgda_residual),
  "imtl_g": (_imtl, None, _imtl_residual),
  "upgrad": (lambda g: upgrad_weights(g), "1/K", _conflict),
  "cagrad": (_cagrad, 0.0, None),
  "aligned_mtl": (_aligned, None, None),
  "pcgrad": (_pcgrad, 1.0, None),
}


@functools.cache
def _batched(name):
  return jax.jit(jax.vmap(WEIGHTINGS[name][0]))


def _solve(name, grams, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    w, r = _batched(name)(jnp.asarray(grams, dtype))
    assert w.dtype == dtype and r.dtype == dtype
    return np.asarray(w, np.float64), np.asarray(r, np.float64)


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_finite_signed_and_honest_on_adversarial_matrices(name, fast_compiles):
  _, lower, independent = WEIGHTINGS[name]
  count = 0
  for dtype, sizes in SIZES.items():
    for k, n in sizes:
      n = min(n, LARGE_K_CAP.get(name, n)) if k == 64 else n
      grams, _ = adversarial_grams(k, n)
      grams = grams.astype(dtype).astype(np.float64)  # what the solver sees
      w, r = _solve(name, grams, dtype)
      assert np.all(np.isfinite(w)), (name, k, dtype)
      assert np.all(np.isfinite(r) & (r >= 0)), (name, k, dtype)
      if lower is not None:
        floor = 1.0 / k if lower == "1/K" else lower
        slack = 1e-6 if dtype == jnp.float32 else 1e-12
        assert np.all(w >= floor - slack * np.maximum(np.abs(w), 1.0)), (name, k, dtype)
      if independent is not None:
        eps = np.finfo(dtype).eps
        truth = np.array([independent(g, wi, eps) for g, wi in zip(grams, w)])
        honest = truth <= 2.0 * r + TOL[dtype]
        assert np.all(honest), (name, k, dtype, truth[~honest][:4], r[~honest][:4])
      count += n
  assert count >= 3500


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_non_finite_gram_gives_nan_weights_and_infinite_residual(name, fast_compiles):
  k, n = SIZES[jnp.float32][0]  # the adversarial test's batch shape: no new compilation
  bad = []
  for value in (np.nan, np.inf, -np.inf):
    for i, j in ((0, 0), (0, 1), (1, 1)):
      b = np.array([[2.0, -1.0], [-1.0, 3.0]])
      b[i, j] = value
      bad.append(b)
  bad.append(np.full((k, k), np.inf))
  grams = np.concatenate([np.stack(bad), np.resize(np.eye(k), (n - len(bad), k, k))])
  w, r = _solve(name, grams, jnp.float32)
  assert np.all(np.isnan(w[: len(bad)])), (name, w[: len(bad)])
  assert np.all(np.isposinf(r[: len(bad)])), (name, r[: len(bad)])
  assert np.all(np.isfinite(w[len(bad) :])) and np.all(np.isfinite(r[len(bad) :]))
