"""DualProj: project the mean task vector onto the dual cone of the task vectors.

DualProj (Quinton & Rey 2024, TorchJD; Equation 11 of GEM, Lopez-Paz & Ranzato
2017) takes the preference-weighted combination ``Jᵀu`` of the task vectors
(``u = 1/K``: the mean) and returns its Euclidean projection onto the dual cone
``{x : g_kᵀ x ≥ 0 for all k}``, the directions that conflict with no task. By
Proposition 1 of Quinton & Rey the projection is ``Jᵀw`` with

  w = argmin_{v ≥ u} vᵀ G v,

a single QP on the Gram matrix. With ``v = u + z`` it is the non-negative QP
``min_{z ≥ 0} ½ zᵀGz + (Gu)ᵀz``, solved exactly by
:func:`~pub_optax.weightings.nonneg_qp`. Its KKT conditions are

  z ≥ 0,   G w ≥ 0,   z_k (G w)_k = 0,

so every task has a non-negative inner product with the result, and the mean is
kept unchanged (``w = u``) when it already conflicts with no task. G is
normalised by its trace, as in TorchJD (the weights are invariant to scaling G);
TorchJD also adds ``10⁻⁴ I`` for its QP solver, which the exact solver does not
need (``reg_eps`` defaults to 0; ``1e-4`` reproduces TorchJD's weights).
"""

from __future__ import annotations

import jax

from pub_optax.weightings._base import (
  Weighting,
  check_gram,
  stateless_solver,
)
from pub_optax.weightings._linalg import flag_non_finite
from pub_optax.weightings._upgrad import dual_cone_problem, project_to_dual_cone

Array = jax.Array


def dualproj_weights(
  gram: Array,
  pref: Array | None = None,
  *,
  reg_eps: float = 0.0,
  max_iter: int | None = None,
) -> tuple[Array, Array]:
  r"""DualProj weights ``w = argmin_{v ≥ u} vᵀGv`` with ``u = pref`` (default ``1/K``).

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    pref: ``(K,)`` non-negative preference weights ``u``; ``None`` uses ``1/K``.
    reg_eps: ridge added to the trace-normalised G (TorchJD uses ``1e-4``).
    max_iter: active-set budget (``None``: ``8K + 16``).

  Returns:
    ``(weights, residual)``: ``(K,)`` weights with ``w ≥ u`` and ``G w ≥ 0``, and the
    QP's relative KKT residual. Invariant to scaling G; a zero G gives ``u``. NaN
    weights and an infinite residual when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import dualproj_weights
    >>> gram = jnp.array([[1.0, -0.75], [-0.75, 1.0]])  # unit vectors in conflict
    >>> w, _ = dualproj_weights(gram)  # the mean conflicts with neither: kept
    >>> [round(float(x), 4) for x in w]
    [0.5, 0.5]
    >>> gram = jnp.array([[4.0, -1.5], [-1.5, 1.0]])  # the mean conflicts with task 2
    >>> w, _ = dualproj_weights(gram)
    >>> [round(float(x), 4) for x in w], [round(float(x), 4) for x in gram @ w]
    ([0.5, 0.75], [0.875, 0.0])

  References:
    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2406.16232 (Proposition 1; the DualProj aggregator of TorchJD).
    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning",
    NeurIPS 2017 (Equation 11).
  """
  check_gram(gram)
  finite, q, u = dual_cone_problem(gram, pref, reg_eps)
  v, residual = project_to_dual_cone(q, u, max_iter)
  return flag_non_finite(finite, v, residual)


def dualproj(
  pref: Array | None = None, *, reg_eps: float = 0.0, max_iter: int | None = None
) -> Weighting:
  """DualProj as a stateless :class:`~pub_optax.weightings.Weighting` named ``"dualproj"``.

  Args:
    pref, reg_eps, max_iter: see :func:`dualproj_weights`.

  Returns:
    A Weighting; its residual is the QP's relative KKT residual.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import dualproj
    >>> w = dualproj()
    >>> res = w.weigh(jnp.eye(2), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # no conflict: the mean
    [0.5, 0.5]

  References:
    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232.
  """

  def weights_and_residual(gram):
    return tuple(dualproj_weights(gram, pref, reg_eps=reg_eps, max_iter=max_iter))

  return stateless_solver("dualproj", weights_and_residual)
