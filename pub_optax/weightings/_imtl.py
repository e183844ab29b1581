"""IMTL-G: the joint direction has equal projections onto every unit task vector.

IMTL-G (Liu et al. 2021) picks weights ``w`` with ``Σ_k w_k = 1`` such that
``d = Σ_k w_k g_k`` makes the same projection ``c`` onto every unit task vector
``u_k = g_k / ‖g_k‖``:

  g_kᵀ d / ‖g_k‖ = c  for all k,   i.e.   G w = c n,  n_k = sqrt(G_kk),  1ᵀw = 1.

On the Gram matrix this is one (K+1)×(K+1) linear system in ``(w, c)``,

  [ G   −n ] [w]   [0]
  [ 1ᵀ   0 ] [c] = [1],

solved in closed form (LU, or the SVD pseudo-inverse when the system is
singular, so it stays finite). For invertible G it equals the published formula
``w ∝ G⁻¹ n``. Writing it with ``c`` as an unknown keeps it exact where
``1ᵀG⁻¹n`` vanishes: two opposite task vectors (a Pareto-stationary point) give
``c = 0`` and the weights ``w_k ∝ 1/‖g_k‖`` that cancel the tasks exactly, instead
of the blow-up of ``G⁻¹n / 1ᵀG⁻¹n``. When the system has many solutions (linearly
dependent tasks, zero tasks, a zero matrix) the minimum-norm ``(w, c)`` is
returned; a zero Gram matrix gives ``1/K``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import (
  Weighting,
  check_gram,
  solve_dtype,
  stateless_solver,
  symmetric_gram,
  unit_gram,
)
from pub_optax.weightings._linalg import finite_gram, flag_non_finite

Array = jax.Array


def imtl_g_residual(gram: Array, weights: Array) -> Array:
  """Spread of the projections ``(Gw)_k / sqrt(G_kk)`` over the non-zero tasks, relative to ``max_k sqrt(G_kk)``."""
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
  top = jnp.max(norms)
  live = norms > jnp.finfo(gram.dtype).eps * top
  proj = jnp.where(live, gram @ weights / jnp.where(live, norms, 1.0), 0.0)
  hi = jnp.max(jnp.where(live, proj, -jnp.inf))
  lo = jnp.min(jnp.where(live, proj, jnp.inf))
  size = jnp.maximum(top * jnp.sum(jnp.abs(weights)), jnp.finfo(gram.dtype).tiny)
  return jnp.where(jnp.any(live), (hi - lo) / size, 0.0)


def imtl_g_weights(gram: Array) -> Array:
  r"""IMTL-G weights: ``Σw = 1`` and equal projections of ``Σ w_k g_k`` onto every ``g_k/‖g_k‖``.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.

  Returns:
    ``(K,)`` weights summing to 1 (they can be negative when tasks conflict
    strongly, as in the original method); invariant to scaling G. NaN weights
    when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import imtl_g_weights
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal, norms 2 and 1
    >>> [round(float(w), 4) for w in imtl_g_weights(gram)]  # d = (2/3)(u1 + u2)
    [0.3333, 0.6667]

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.
    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2406.16232 (the Gram-matrix form).
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  ok, gram = finite_gram(gram)  # the SVD does not return on non-finite input
  gn, scale, nonzero = unit_gram(gram)
  n = jnp.sqrt(jnp.maximum(jnp.diagonal(gn), 0.0))
  top = jnp.concatenate([gn, -n[:, None]], axis=1)
  bottom = jnp.concatenate([jnp.ones((1, k), dtype), jnp.zeros((1, 1), dtype)], axis=1)
  system = jnp.concatenate([top, bottom], axis=0)
  rhs = jnp.zeros((k + 1,), dtype).at[k].set(1.0)
  # Numerically singular systems (rank-deficient task sets) get the minimum-norm
  # solution from the SVD; the others LU, which is backward stable (equal
  # projections to working precision even when G is ill-conditioned).
  u, sv, vt = jnp.linalg.svd(system)
  cutoff = 10.0 * (k + 1) * jnp.finfo(dtype).eps * sv[0]
  singular = sv[-1] <= cutoff
  inv_sv = jnp.where(sv > cutoff, 1.0 / jnp.where(sv > cutoff, sv, 1.0), 0.0)
  min_norm = vt.T @ (inv_sv * (u.T @ rhs))
  lu = jnp.linalg.solve(jnp.where(singular, jnp.eye(k + 1, dtype=dtype), system), rhs)
  sol = jnp.where(singular, min_norm, lu)
  weights = sol[:k]
  total = jnp.sum(weights)
  usable = jnp.all(jnp.isfinite(weights)) & (jnp.abs(total) > 0)
  weights = jnp.where(
    usable, weights / jnp.where(usable, total, 1.0), jnp.full((k,), 1.0 / k, dtype)
  )
  return jnp.where(ok, weights, jnp.nan)


def imtl_g() -> Weighting:
  """IMTL-G as a stateless :class:`~pub_optax.weightings.Weighting` named ``"imtl_g"``.

  Its residual is :func:`imtl_g_residual` (0 up to rounding; inf, with NaN weights, when
  G has a non-finite entry).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import imtl_g
    >>> w = imtl_g()
    >>> res = w.weigh(jnp.array([[1.0, -2.0], [-2.0, 4.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # opposite tasks cancel exactly
    [0.6667, 0.3333]

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.
  """

  def weights_and_residual(gram):
    weights = imtl_g_weights(gram)
    ok, safe = finite_gram(symmetric_gram(gram).astype(weights.dtype))
    return flag_non_finite(ok, weights, imtl_g_residual(safe, jnp.where(ok, weights, 0.0)))

  return stateless_solver("imtl_g", weights_and_residual)
