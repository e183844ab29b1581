"""CR-MOGM: MGDA weights exponentially averaged over steps, for convergent stochastic MGDA.

Zhou et al. (2022) show that stochastic gradient manipulation (MGDA, PCGrad,
CAGrad, ...) can fail to converge to a Pareto-optimal point when the composite
weights are determined solely by the current mini-batch gradients, and fix it
by averaging the weights over steps:

  λ_t = β λ_{t−1} + (1 − β) λ̂_t,

with ``λ̂_t`` the weights the base method computes from the current Gram matrix
``G_t``. Here the base method is MGDA (:func:`~pub_optax.weightings.mgda_weights`,
the min-norm point of the convex hull, solved exactly), so every ``λ_t`` stays on
the simplex. The state holds ``λ_{t−1}`` and whether a step has been taken: the
first call returns ``λ̂_1`` itself (the average starts at the first MGDA
solution, not at an arbitrary prior). For a constant G the weights reach MGDA's
at once; after a change of G they approach the new MGDA weights geometrically,
``λ_t − λ* = β^t (λ_0 − λ*)``. The weights are invariant to scaling G. A Gram
matrix with a non-finite entry gives NaN weights and leaves the state unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import Weighting, WeightingResult
from pub_optax.weightings._mgda import mgda_weights

Array = jax.Array


class CRMOGMState(NamedTuple):
  """State of :func:`cr_mogm`: the previous averaged weights and whether they exist yet."""

  weights: Array
  started: Array


def cr_mogm_update(previous: Array, current: Array, beta: float) -> Array:
  """One averaging step ``β · previous + (1 − β) · current``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import cr_mogm_update
    >>> cr_mogm_update(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), 0.75).tolist()
    [0.75, 0.25]
  """
  return beta * previous + (1.0 - beta) * current


def cr_mogm(beta: float = 0.9, *, max_iter: int | None = None) -> Weighting:
  r"""CR-MOGM over MGDA as a :class:`~pub_optax.weightings.Weighting` named ``"cr_mogm"``.

  Args:
    beta: averaging factor β ∈ [0, 1) (0 is plain MGDA). The paper analyses a
      schedule of averaging factors; 0.9 is this package's constant default.
    max_iter: MGDA's active-set budget per solve.

  Returns:
    A Weighting with state :class:`CRMOGMState`; its residual is the KKT residual
    of the current MGDA solve.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import cr_mogm
    >>> w = cr_mogm(beta=0.5)
    >>> state = w.init(2, jnp.float32)
    >>> res = w.weigh(jnp.array([[4.0, 0.0], [0.0, 1.0]]), state, None)
    >>> [round(float(x), 4) for x in res.weights]  # first step: MGDA
    [0.2, 0.8]
    >>> res = w.weigh(jnp.array([[1.0, 0.0], [0.0, 4.0]]), res.state, None)
    >>> [round(float(x), 4) for x in res.weights]  # halfway to MGDA's [0.8, 0.2]
    [0.5, 0.5]

  References:
    Zhou, Zhang, Jiang, Zhong, Gu & Zhu, "On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond", NeurIPS 2022.
  """
  beta = float(beta)
  if not 0.0 <= beta < 1.0:
    raise ValueError(f"beta must be in [0, 1), got {beta}")

  def init(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    return CRMOGMState(jnp.full((num_tasks,), 1.0 / num_tasks, dt), jnp.zeros((), bool))

  def weigh(gram, state, task_losses=None):
    del task_losses
    res = mgda_weights(gram, max_iter=max_iter)
    current = res.weights.astype(state.weights.dtype)
    averaged = cr_mogm_update(state.weights, current, beta)
    weights = jnp.where(state.started, averaged, current)
    residual = res.residual.astype(weights.dtype)
    # A non-finite G gives NaN weights for this step and leaves the average untouched.
    ok = jnp.all(jnp.isfinite(current))
    new_state = CRMOGMState(jnp.where(ok, weights, state.weights), state.started | ok)
    return WeightingResult(weights, new_state, residual)

  return Weighting(init=init, weigh=weigh, name="cr_mogm")
