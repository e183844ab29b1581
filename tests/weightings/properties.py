"""Reusable property assertions for weightings (TorchJD's spirit), plus a cache of compiled batch calls.

Each assertion takes numpy arrays (float64 for the checks) and a tolerance
relative to the scale of the Gram matrix (its largest diagonal entry).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from matrices import SCALES, Batch, permuted


@functools.cache
def batched(fn):
  """``jax.jit(jax.vmap(fn))``, built once per function so that tests share compilations."""
  return jax.jit(jax.vmap(fn))


def weights_of(fn, grams: np.ndarray, dtype) -> np.ndarray:
  """``fn`` (Gram -> weights) on every matrix of the stack, computed in ``dtype``, as float64."""
  out = batched(fn)(jnp.asarray(grams, dtype))
  assert_structure(out, grams.shape[-1], dtype)
  return np.asarray(out, np.float64)


def scale_of(gram: np.ndarray) -> float:
  return float(max(np.max(np.diagonal(gram)), np.finfo(np.float64).tiny))


def assert_structure(weights, k: int, dtype) -> None:
  """Finite weights of shape ``(..., K)`` in the solve dtype (``dtype`` promoted to at least float32)."""
  assert weights.shape[-1] == k, weights.shape
  assert weights.dtype == jnp.promote_types(dtype, jnp.float32), weights.dtype
  assert np.all(np.isfinite(np.asarray(weights))), weights


def assert_on_simplex(w: np.ndarray, atol: float) -> None:
  assert np.all(w >= -atol), w
  assert abs(np.sum(w) - 1.0) <= atol * max(len(w), 1), np.sum(w)


def assert_non_conflicting(gram: np.ndarray, w: np.ndarray, rtol: float) -> None:
  """Every task's inner product with the joint direction is ≥ 0: ``(Gw)_k ≥ −tol``."""
  tol = rtol * scale_of(gram) * max(np.sum(np.abs(w)), 1.0)
  assert np.all(gram @ w >= -tol), (gram @ w, tol)


def assert_min_norm_kkt(gram: np.ndarray, w: np.ndarray, rtol: float) -> None:
  """KKT of ``min_{w∈Δ} wᵀGw``: ``(Gw)_k ≥ wᵀGw`` everywhere, with equality on the support."""
  gw = gram @ w / scale_of(gram)
  n2 = w @ gw
  assert np.all(gw >= n2 - rtol), (gw, n2)
  support = w > rtol
  assert np.all(np.abs(gw[support] - n2) <= rtol), (gw, n2, w)


def assert_permutation_equivariant(fn, batch: Batch, dtype, rtol: float, mask=None) -> None:
  """``w(P G Pᵀ) = P w(G)`` on the matrices selected by ``mask`` (default: full rank)."""
  mask = batch.full if mask is None else mask
  w = weights_of(fn, batch.grams, dtype)
  other, perm = permuted(batch)
  w_perm = weights_of(fn, other.grams, dtype)
  for a, b in zip(w[mask], w_perm[mask]):
    np.testing.assert_allclose(b, a[perm], rtol=rtol, atol=rtol * np.max(np.abs(a)))


def assert_scale_invariant(w: np.ndarray, batch: Batch, rtol: float) -> None:
  """The weights of one matrix at every scale of :data:`SCALES` agree."""
  for group in batch.scaled:
    ref = w[group[SCALES.index(1.0)]]
    for i in group:
      np.testing.assert_allclose(
        w[i], ref, rtol=rtol, atol=rtol * np.max(np.abs(ref)), err_msg=f"matrix {i}"
      )
