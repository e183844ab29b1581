r"""MoDo: task weights that take one projected gradient step on the simplex per training step.

MoDo (multi-objective gradient with double sampling; Chen, Fernando, Ying & Chen, 2023)
follows MGDA's min-norm problem with a single stochastic step per iteration instead of an
exact solve. With λ the weights of the previous step (``1/K`` at first) and G the Gram
matrix of the task gradients,

.. math::

  \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma\,(G\lambda + \rho\lambda)\big),
  \qquad d = \sum_k \lambda_k g_k,

with ``Π_Δ`` the Euclidean projection onto the simplex. For a fixed G the iteration is
projected gradient descent on ``½ λᵀ(G + ρI)λ`` over the simplex, so for ``γ`` below
``2 / ‖G + ρI‖`` it converges to the ρ-regularised min-norm weights.

Double sampling: the paper builds ``G = J_1 J_2ᵀ`` from two independent mini-batches (an
unbiased estimate of the Gram matrix of the expected gradients) and the direction from a
third one (or their mean); LibMTL and TorchJD take those batches from the user. A Gram
weighting sees one set of task vectors, so here ``G = J Jᵀ`` and the direction come from
the same mini-batch, which biases ``G`` by the gradients' variance.

The step ``γ(Gλ + ρλ)`` is in the units of G, so the weights are not invariant to scaling
the gradients (as in the paper and its implementations): γ is tuned together with the
loss scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import Weighting, WeightingResult, check_gram, symmetric_gram
from pub_optax.weightings._linalg import finite_gram, flag_non_finite
from pub_optax.weightings._sdmgrad import project_to_simplex

Array = jax.Array


def simplex_step(gram: Array, weights: Array, step, rho) -> Array:
  r"""One projected gradient step ``Π_Δ(λ − step·(Gλ + ρλ))`` (MoDo's and MoCo's weight update).

  Args:
    gram: ``(K, K)`` Gram matrix (finite).
    weights: ``(K,)`` current weights λ.
    step: step size (γ).
    rho: ℓ2 regularisation ρ ≥ 0.

  Returns:
    ``(K,)`` weights on the simplex, in the solve dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import simplex_step
    >>> lam = simplex_step(jnp.array([[4.0, 0.0], [0.0, 1.0]]), jnp.array([0.5, 0.5]), 0.1, 0.0)
    >>> [round(float(x), 4) for x in lam]  # (0.5 - 0.2, 0.5 - 0.05) projected: + 0.125 each
    [0.425, 0.575]
  """
  g = symmetric_gram(gram)
  lam = jnp.asarray(weights, g.dtype)
  return project_to_simplex(lam - step * (g @ lam + rho * lam))


def modo(gamma: float = 1e-3, rho: float = 0.1) -> Weighting:
  r"""MoDo as a :class:`~pub_optax.weightings.Weighting` named ``"modo"``, one step per call.

  Args:
    gamma: γ > 0, the step size of the weights (LibMTL's ``MoDo_gamma`` default,
      1e-3; TorchJD 0.18's ``MoDoWeighting`` defaults to 0.1).
    rho: ρ ≥ 0, the ℓ2 regularisation of the weight update (``MoDo_rho``, 0.1 in
      LibMTL and TorchJD).

  Returns:
    A Weighting whose state is λ (``1/K`` at first) and whose weights are the updated
    λ, on the simplex; residual 0. A non-finite Gram matrix gives NaN weights, an
    infinite residual and leaves λ unchanged.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import modo
    >>> w = modo(gamma=0.1, rho=0.0)
    >>> res = w.weigh(jnp.array([[4.0, 0.0], [0.0, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # λ moves towards the smaller gradient
    [0.425, 0.575]

  References:
    Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning:
    Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023 (JMLR 2024).
  """
  gamma, rho = float(gamma), float(rho)
  if not gamma > 0.0:
    raise ValueError(f"gamma must be positive, got {gamma}")
  if not rho >= 0.0:
    raise ValueError(f"rho must be non-negative, got {rho}")

  def init(num_tasks, dtype):
    return jnp.full((num_tasks,), 1.0 / num_tasks, jnp.promote_types(dtype, jnp.float32))

  def weigh(gram, state, task_losses=None):
    del task_losses
    check_gram(gram)
    ok, safe = finite_gram(symmetric_gram(gram))
    lam = simplex_step(safe, state, gamma, rho).astype(state.dtype)
    weights, residual = flag_non_finite(ok, lam, jnp.zeros((), lam.dtype))
    return WeightingResult(weights, jnp.where(ok, lam, state), residual)

  return Weighting(init=init, weigh=weigh, name="modo")
