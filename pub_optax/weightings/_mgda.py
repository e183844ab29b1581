"""MGDA: the min-norm point of the convex hull of the task vectors, solved exactly on device.

MGDA (Désidéri 2012; Sener & Koltun 2018) takes the joint direction ``Σ_k w_k g_k``
of smallest norm over the simplex:

  w* = argmin_{w ≥ 0, Σw = 1}  wᵀ G w.

Its KKT conditions are ``(Gw)_k ≥ wᵀGw`` for every task, with equality where
``w_k > 0``; so every task vector has inner product at least ``‖Σ w_k g_k‖²`` with
the joint direction (a common descent direction), which is zero exactly at
Pareto-stationary points.

Instead of Frank-Wolfe (inexact after a fixed number of steps), the simplex QP is
solved exactly through a classic homogenisation: for the lifted vectors
``(g_k, 1)``,

  v* = argmin_{v ≥ 0}  ‖Σ v_k g_k‖² + (Σ v_k − 1)²   gives   w* = v* / Σ v*,

a non-negative least-squares problem on ``Q = G + 11ᵀ`` (G normalised by its
largest diagonal entry) that :func:`~pub_optax.weightings.nonneg_qp` solves by
an active-set method to machine precision, for any K and any rank of G. A zero
Gram matrix gives the uniform weights ``1/K``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import (
  Weighting,
  check_gram,
  solve_dtype,
  stateless_solver,
  unit_gram,
)
from pub_optax.weightings._linalg import finite_gram, flag_non_finite
from pub_optax.weightings._qp import nonneg_qp

Array = jax.Array


class MGDAResult(NamedTuple):
  """Result of :func:`mgda_weights`.

  Attributes:
    weights: ``(K,)`` weights on the simplex (``w ≥ 0``, ``Σw = 1``).
    residual: violation of the KKT conditions ``(Gw)_k ≥ wᵀGw`` (equality on the
      support), relative to the largest squared task norm ``max_k G_kk``.
    iterations: active-set steps taken.
  """

  weights: Array
  residual: Array
  iterations: Array


def simplex_kkt_residual(gram: Array, weights: Array) -> Array:
  """Violation of the min-norm KKT conditions at ``weights``, relative to ``max_k G_kk``."""
  scale = jnp.maximum(jnp.max(jnp.diagonal(gram)), jnp.finfo(gram.dtype).tiny)
  gw = gram @ weights / scale
  norm2 = weights @ gw
  below = jnp.max(jnp.maximum(norm2 - gw, 0.0))
  on_support = jnp.max(jnp.where(weights > 0, jnp.abs(gw - norm2), 0.0))
  outside = jnp.max(jnp.maximum(-weights, 0.0)) + jnp.abs(jnp.sum(weights) - 1.0)
  return jnp.maximum(jnp.maximum(below, on_support), outside)


def mgda_weights(gram: Array, *, max_iter: int | None = None) -> MGDAResult:
  r"""Weights of the min-norm convex combination of the task vectors (MGDA).

  Args:
    gram: ``(K, K)`` Gram matrix ``G = J Jᵀ`` of the task vectors, any scale.
    max_iter: active-set budget, see :func:`~pub_optax.weightings.nonneg_qp`.

  Returns:
    An :class:`MGDAResult`. The weights are invariant to scaling ``G``; NaN, with an
    infinite residual, when G has a non-finite entry. When the
    minimiser is not unique (e.g. two identical tasks) one of the minimisers is
    returned; the joint vector ``Σ w_k g_k`` is always the unique min-norm point.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import mgda_weights
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal, norms 2 and 1
    >>> [round(float(w), 4) for w in mgda_weights(gram).weights]
    [0.2, 0.8]

  References:
    Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
    optimization", Comptes Rendus Mathématique 350, 2012.
    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018.
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  finite, gram = finite_gram(gram)
  gn, scale, nonzero = unit_gram(gram)
  res = nonneg_qp(gn + 1.0, -jnp.ones((k,), dtype), max_iter=max_iter)
  total = jnp.sum(res.x)
  ok = nonzero & (total > 0) & jnp.all(jnp.isfinite(res.x))
  uniform = jnp.full((k,), 1.0 / k, dtype)
  weights = jnp.where(ok, res.x / jnp.where(ok, total, 1.0), uniform)
  weights, residual = flag_non_finite(finite, weights, simplex_kkt_residual(gn, weights))
  return MGDAResult(weights, residual, res.iterations)


def mgda(max_iter: int | None = None) -> Weighting:
  """MGDA as a :class:`~pub_optax.weightings.Weighting` (stateless).

  Args:
    max_iter: active-set budget per solve (``None``: ``8K + 16``).

  Returns:
    A Weighting named ``"mgda"``; its residual is :attr:`MGDAResult.residual`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import mgda
    >>> w = mgda()
    >>> res = w.weigh(jnp.array([[1.0, -1.0], [-1.0, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # opposite tasks: Pareto-stationary
    [0.5, 0.5]

  References:
    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
  """

  def weights_and_residual(gram):
    res = mgda_weights(gram, max_iter=max_iter)
    return res.weights, res.residual

  return stateless_solver("mgda", weights_and_residual)
