"""UPGrad: project every task vector onto the dual cone of all of them, then average.

UPGrad (Quinton & Rey 2024, TorchJD) replaces each task vector ``g_i`` by its
Euclidean projection onto the dual cone ``{x : g_kᵀ x ≥ 0 for all k}`` (the
directions that conflict with no task) and averages the projections with the
preference weights ``p`` (default ``1/K``). By their Proposition 1 the
projection of ``Jᵀu`` is ``Jᵀv`` with

  v = argmin_{v ≥ u} vᵀ G v,

so on the Gram matrix UPGrad is K small QPs, one per task with ``u = p_i e_i``,
and the weights are ``w = Σ_i v^(i)``. Writing ``v = u + z`` turns each into the
non-negative QP ``min_{z ≥ 0} ½ zᵀGz + (Gu)ᵀz``, solved exactly by
:func:`~pub_optax.weightings.nonneg_qp` (all K at once with ``jax.vmap``).

The KKT conditions give ``G v^(i) ≥ 0``, so the joint direction conflicts with no
task: ``(G w)_k ≥ 0`` for every k. G is normalised by its trace, as in TorchJD;
TorchJD also adds ``10⁻⁴ I`` for its QP solver, which this exact solver does not
need (``reg_eps`` defaults to 0; a positive value reproduces TorchJD's weights).
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
)
from pub_optax.weightings._linalg import finite_gram, flag_non_finite
from pub_optax.weightings._qp import nonneg_qp

Array = jax.Array


def dual_cone_problem(gram: Array, pref: Array | None, reg_eps: float):
  """``(finite, Q, p)``: the finite flag of G, ``G / trace(G) + reg_eps·I`` and the preference.

  ``p`` defaults to ``1/K`` and must have shape ``(K,)``. Shared by UPGrad and DualProj.
  """
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  finite, gram = finite_gram(gram)
  g = symmetric_gram(gram)
  trace = jnp.sum(jnp.diagonal(g))
  nonzero = trace > jnp.finfo(dtype).tiny
  q = jnp.where(nonzero, g / jnp.where(nonzero, trace, 1.0), 0.0) + reg_eps * jnp.eye(
    k, dtype=dtype
  )
  p = jnp.full((k,), 1.0 / k, dtype) if pref is None else jnp.asarray(pref, dtype)
  if p.shape != (k,):
    raise ValueError(f"pref must have shape ({k},) to match gram, got {p.shape}")
  return finite, q, p


def project_to_dual_cone(q: Array, u: Array, max_iter: int | None) -> tuple[Array, Array]:
  """``(argmin_{v ≥ u} vᵀQv, KKT residual)``: ``v = u + x`` with ``x ≥ 0`` from the NNQP."""
  res = nonneg_qp(q, q @ u, max_iter=max_iter)
  return u + res.x, res.residual


def upgrad_weights(
  gram: Array,
  pref: Array | None = None,
  *,
  reg_eps: float = 0.0,
  max_iter: int | None = None,
) -> tuple[Array, Array]:
  r"""UPGrad weights ``w = Σ_i argmin_{v ≥ p_i e_i} vᵀGv``.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    pref: ``(K,)`` non-negative preference weights; ``None`` uses ``1/K``.
    reg_eps: ridge added to the trace-normalised G (TorchJD uses ``1e-4``).
    max_iter: active-set budget per projection (``None``: ``8K + 16``).

  Returns:
    ``(weights, residual)``: ``(K,)`` weights, ``w ≥ p``, and the largest relative
    KKT residual of the K projections. Invariant to scaling G. NaN weights and an
    infinite residual when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import upgrad_weights
    >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])  # conflicting unit vectors at 120°
    >>> w, _ = upgrad_weights(gram)
    >>> [round(float(x), 4) for x in w], [round(float(x), 4) for x in gram @ w]
    ([0.75, 0.75], [0.375, 0.375])

  References:
    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2406.16232 (Proposition 1 and the UPGrad aggregator).
  """
  check_gram(gram)
  finite, q, p = dual_cone_problem(gram, pref, reg_eps)
  vs, residuals = jax.vmap(lambda u: project_to_dual_cone(q, u, max_iter))(jnp.diag(p))
  return flag_non_finite(finite, jnp.sum(vs, axis=0), jnp.max(residuals))


def upgrad(
  pref: Array | None = None, *, reg_eps: float = 0.0, max_iter: int | None = None
) -> Weighting:
  """UPGrad as a stateless :class:`~pub_optax.weightings.Weighting` named ``"upgrad"``.

  Args:
    pref, reg_eps, max_iter: see :func:`upgrad_weights`.

  Returns:
    A Weighting; its residual is the projections' largest KKT residual.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import upgrad
    >>> w = upgrad()
    >>> res = w.weigh(jnp.eye(2), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # no conflict: the mean
    [0.5, 0.5]

  References:
    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232.
  """

  return stateless_solver(
    "upgrad", lambda gram: tuple(upgrad_weights(gram, pref, reg_eps=reg_eps, max_iter=max_iter))
  )
