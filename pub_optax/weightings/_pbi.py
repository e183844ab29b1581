"""PBI: penalty-based boundary intersection of the task losses, weights its gradient in the losses.

A loss-kind weighting that needs the task losses; its state holds the unit preference
direction and the ideal point in the parameters' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pub_optax._losses import _losses
from pub_optax.weightings._base import Weighting, WeightingResult
from pub_optax.weightings._stch import _sized, _vector

Array = jax.Array


class PBIState(NamedTuple):
  """State of :func:`pbi`: the unit ``(K,)`` preference direction ``p̂`` and ideal point ``z``."""

  direction: Array
  ideal: Array


def pbi(
  theta: float = 5.0,
  *,
  preference: Sequence[float] | Array | None = None,
  ideal: Sequence[float] | Array | None = None,
  eps: float = 1e-12,
) -> Weighting:
  r"""Penalty-based boundary intersection: weights ``w = p̂ + θ r / ‖r‖``, the gradient of ``d1 + θ d2``.

  MOEA/D's PBI splits the shifted losses ``u = L − z`` into the distance along the unit
  preference direction ``p̂ = p / ‖p‖`` and the distance to that line,

    d1 = ⟨u, p̂⟩,    r = u − d1 p̂,    d2 = ‖r‖,    g(L) = d1 + θ d2,

  and penalises the latter. The weights are its gradient in the losses,
  ``∂g/∂L = p̂ + θ r / ‖r‖`` (``r ⟂ p̂``), so the model follows ``∇g = Σ_k w_k ∇L_k``:
  the ``θ`` term pulls the losses back onto the preference ray. The weights can be
  negative (a task ahead of the ray is pushed back). As in TorchJD, ``d2`` is computed as
  ``sqrt(‖r‖² + eps)`` so that the gradient stays finite on the ray (``r = 0``: weights
  ``p̂``); a residual ``‖r‖`` within the rounding of ``u`` (``8 K ε_mach ‖u‖``) counts as
  ``r = 0``, so losses on the ray in float32 get ``p̂`` rather than ``θ`` times a unit
  vector of rounding noise.

  Args:
    theta: penalty ``θ ≥ 0`` on ``d2`` (MOEA/D's experiments: 5; 0 gives the plain
      projection ``d1``, weights ``p̂``).
    preference: ``(K,)`` non-negative preference ``p`` (default: all equal, ``p̂ = 1/√K``).
    ideal: ``(K,)`` ideal point ``z``, a lower bound of the losses (default 0).
    eps: the positive constant under the square root of ``d2``.

  Returns:
    A loss-kind Weighting named ``"pbi"`` (``needs_losses=True``); state
    :class:`PBIState`; residual ``d2``, the distance of the losses from the ray.

  Raises:
    ValueError: for a negative or non-finite ``theta``, an ``eps`` that is not positive and finite, a preference
      with a negative or non-finite entry (or all zero), a non-finite ideal point, or (at
      ``init``) a preference or ideal point whose length is not ``K``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import pbi
    >>> w = pbi(theta=5.0, preference=[1.0, 0.0])
    >>> res = w.weigh(jnp.array([2.0, 3.0]), w.init(2, jnp.float32))
    >>> [round(float(x), 4) for x in res.weights], round(float(res.residual), 4)
    ([1.0, 5.0], 3.0)

  References:
    Zhang & Li, "MOEA/D: A Multiobjective Evolutionary Algorithm Based on
    Decomposition", IEEE Transactions on Evolutionary Computation 2007; TorchJD's ``PBI``
    scalarizer.
  """
  if not (theta >= 0.0 and math.isfinite(theta)):
    raise ValueError(f"pbi theta must be non-negative and finite, got {theta}")
  if not (eps > 0.0 and math.isfinite(eps)):
    raise ValueError(f"pbi eps must be positive and finite, got {eps}")
  pref = _vector("pbi", "preference", preference, nonnegative=True)
  ideal_point = _vector("pbi", "ideal", ideal, nonnegative=False)

  def init(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    p = _sized("pbi", "preference", pref, num_tasks, 1.0)
    z = _sized("pbi", "ideal", ideal_point, num_tasks, 0.0)
    return PBIState(jnp.asarray(p / np.linalg.norm(p), dt), jnp.asarray(z, dt))

  def weigh(task_losses, state):
    p_hat = state.direction
    losses = _losses(task_losses, "pbi", p_hat.shape[0], p_hat.dtype)
    u = losses - state.ideal
    r = u - jnp.dot(u, p_hat) * p_hat
    # r is computed from u with an error of a few ulps of ‖u‖ per task: a residual within
    # that rounding is the ray itself (r = 0), not a direction to push the losses along.
    noise = 8 * p_hat.shape[0] * jnp.finfo(u.dtype).eps * jnp.sqrt(jnp.dot(u, u))
    r = jnp.where(jnp.sqrt(jnp.dot(r, r)) > noise, r, 0.0)
    d2 = jnp.sqrt(jnp.dot(r, r) + eps)
    weights = p_hat + theta * r / d2
    return WeightingResult(weights, state, d2)

  return Weighting(init=init, weigh=weigh, name="pbi", kind="loss", needs_losses=True)
