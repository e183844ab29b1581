r"""MoCo: MGDA-style weights on tracked task gradients, for an unbiased stochastic direction.

Stochastic MGDA is biased: the min-norm weights of noisy gradients are not those of the
expected gradients. MoCo (Fernando et al., 2023) tracks every task's gradient with a
moving estimate ``y_k`` and takes one projected step on the weights per iteration
(Algorithm 1 of the paper). At step ``t = 1, 2, …``, with ``g_k`` the task vectors,

.. math::

  y_k &\leftarrow y_k - \beta_t\,(y_k - g_k), \qquad \beta_t = \beta / t^{\sigma_\beta},\\
  \lambda &\leftarrow \Pi_\Delta\big(\lambda - \gamma_t\,(Y Y^\top + \rho I)\,\lambda\big),
  \qquad \gamma_t = \gamma / t^{\sigma_\gamma},\\
  d &= \sum_k \lambda_k\, y_k,

with ``Y`` the tracked vectors as rows, ``y_k = 0`` and ``λ = 1/K`` at first. The tracked
vectors replace the gradients in the direction, so MoCo is a coordinate-kind rule: its state
holds ``y_k`` for every shared coordinate (memory K× the shared parameters), kept in the
vectors' dtype promoted to float32.

Relation to the implementations: the decaying step sizes and their defaults are LibMTL's
(``MoCo_beta``, ``MoCo_beta_sigma``, ``MoCo_gamma``, ``MoCo_gamma_sigma``, ``MoCo_rho``).
LibMTL (and TorchJD's implementation of the same code) also differs from the paper in two
ways not followed here: it replaces the simplex projection by a softmax, and it rescales
every task gradient to the norm of its loss, ``g_k ‖g_k‖⁻¹ L_k``, before tracking. The
paper's projection of each ``y_k`` onto a ball of radius ``L_k`` (a bound on the gradient
norm used by the analysis) is left out, as in both implementations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax._gram import leaf_gram, weighted_sum
from pub_optax.weightings._base import (
  CoordinateResult,
  Weighting,
  check_task_axis_state,
  coordinatewise,
  task_axis_zeros,
)
from pub_optax.weightings._modo import simplex_step

Array = jax.Array


class MoCoState(NamedTuple):
  """State of :func:`moco`.

  Attributes:
    count: int32 number of steps taken (``t − 1`` at step t).
    tracked: tuple of the tracked task vectors ``y_k``, one ``(K, *leaf_shape)`` array
      per shared leaf.
    weights: ``(K,)`` the weights λ of the last step (``1/K`` at first).
  """

  count: Array
  tracked: tuple
  weights: Array


def moco(
  beta: float = 0.5,
  beta_sigma: float = 0.5,
  gamma: float = 0.1,
  gamma_sigma: float = 0.5,
  rho: float = 0.0,
) -> Weighting:
  r"""MoCo as a coordinate-kind :class:`~pub_optax.weightings.Weighting` named ``"moco"``.

  Args:
    beta: β ∈ (0, 1], the tracking rate at the first step (LibMTL's default 0.5).
    beta_sigma: σ_β ≥ 0, its decay exponent, ``β_t = β / t^σ_β`` (0.5).
    gamma: γ > 0, the weights' step size at the first step (0.1).
    gamma_sigma: σ_γ ≥ 0, its decay exponent (0.5).
    rho: ρ ≥ 0, the ℓ2 regularisation of the weight update (0).

  Returns:
    A coordinate-kind Weighting with state :class:`MoCoState`; its weights are λ
    (on the simplex) and its direction ``Σ_k λ_k y_k``. Like MoDo's, the weight
    step is in the units of ``Y Yᵀ``: not invariant to scaling the gradients.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from pub_optax.weightings import moco
    >>> w = moco()
    >>> vectors = (jnp.array([[2.0, 0.0], [0.0, 1.0]]),)
    >>> state = w.init(2, jnp.float32, (jax.ShapeDtypeStruct((2,), jnp.float32),))
    >>> res = w.weigh(vectors, state, None)  # y = g / 2, λ = Π(1/2 − 0.1·(1/2, 1/8))
    >>> [round(float(x), 5) for x in res.weights], [round(float(x), 5) for x in res.direction[0]]
    ([0.48125, 0.51875], [0.48125, 0.25938])

  References:
    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023.
  """
  beta, beta_sigma = float(beta), float(beta_sigma)
  gamma, gamma_sigma, rho = float(gamma), float(gamma_sigma), float(rho)
  if not 0.0 < beta <= 1.0:
    raise ValueError(f"beta must be in (0, 1], got {beta}")
  if not gamma > 0.0:
    raise ValueError(f"gamma must be positive, got {gamma}")
  for name, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma), ("rho", rho)):
    if not value >= 0.0:
      raise ValueError(f"{name} must be non-negative, got {value}")

  def init(num_tasks, dtype, shared):
    dtype = jnp.promote_types(dtype, jnp.float32)
    weights = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    return MoCoState(jnp.zeros((), jnp.int32), task_axis_zeros(num_tasks, shared), weights)

  def rule(vectors, state, task_losses=None):
    del task_losses
    check_task_axis_state("moco: the tracked vectors", state.tracked, vectors)
    dtype = state.weights.dtype
    t = (state.count + 1).astype(dtype)
    beta_t, gamma_t = beta / t**beta_sigma, gamma / t**gamma_sigma
    tracked = tuple(
      y - (beta_t * (y - v.astype(y.dtype))).astype(y.dtype) for y, v in zip(state.tracked, vectors)
    )
    k = vectors[0].shape[0]
    grams = [leaf_gram(y.reshape(k, -1)) for y in tracked]
    gram = sum(grams[1:], grams[0])
    lam = simplex_step(gram, state.weights, gamma_t, rho).astype(dtype)
    direction = tuple(weighted_sum(lam, y).astype(v.dtype) for y, v in zip(tracked, vectors))
    new_state = MoCoState(optax.safe_increment(state.count), tracked, lam)
    return CoordinateResult(direction, lam, new_state, jnp.zeros((), dtype))

  return coordinatewise("moco", init, rule)
