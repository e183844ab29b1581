"""STCH: smooth Tchebycheff scalarisation of the task losses, weights its gradient in the losses.

A loss-kind weighting that needs the task losses; its state holds the preference and the
ideal point in the parameters' dtype.
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

Array = jax.Array


class STCHState(NamedTuple):
  """State of :func:`stch`: the ``(K,)`` preference ``p`` and ideal point ``z``."""

  preference: Array
  ideal: Array


def _vector(method: str, name: str, values, nonnegative: bool) -> np.ndarray | None:
  """``values`` as a finite 1-D float64 array (None stays None), else a ValueError.

  Shared by the scalarisations that take a preference and an ideal point.
  """
  if values is None:
    return None
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1 or array.size == 0:
    raise ValueError(f"{method} {name} must be a non-empty 1-D sequence, got shape {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{method} {name} must be finite, got {array.tolist()}")
  if nonnegative and (np.any(array < 0) or not np.any(array > 0)):
    raise ValueError(f"{method} {name} must be non-negative and not all zero, got {array.tolist()}")
  return array


def _sized(method: str, name: str, values, num_tasks: int, default: float) -> np.ndarray:
  """``values``, or ``default`` repeated K times for None; a ValueError unless of length K."""
  if values is None:
    return np.full((num_tasks,), default)
  if values.size != num_tasks:
    raise ValueError(
      f"{method} {name} has length {values.size} but the number of tasks is K = {num_tasks}"
    )
  return values


def stch(
  mu: float = 1.0,
  *,
  preference: Sequence[float] | Array | None = None,
  ideal: Sequence[float] | Array | None = None,
) -> Weighting:
  r"""Smooth Tchebycheff: weights ``w = p ∘ softmax(p ∘ (L − z) / μ)``.

  Lin et al. minimise the smooth Tchebycheff scalarisation

    g_μ(L) = μ log Σ_k exp(p_k (L_k − z_k) / μ),

  a smooth upper bound of ``max_k p_k (L_k − z_k)`` that is within ``μ log K`` of it. The
  weights are its gradient in the losses, ``∂g_μ/∂L_k = p_k softmax_k(p ∘ (L − z) / μ)``,
  so the model follows ``∇g_μ = Σ_k w_k ∇L_k``; as ``μ → 0`` all the weight goes to the
  task of the largest ``p_k (L_k − z_k)``, as ``μ → ∞`` the weights tend to ``p / K``.
  The weights sum to at most ``max_k p_k`` (to 1/K with the default preference).

  This is the scalarisation as the paper defines it (and TorchJD's ``STCH`` scalarizer):
  a fixed preference ``p`` (default ``1/K``, the centre of the simplex the paper samples
  from) and a fixed ideal point ``z`` (default 0, for non-negative losses). The paper's
  multi-task code (and LibMTL's ``STCH``) runs a different variant: the sum of
  ``log L_k`` for 4 warm-up epochs, then ``K μ log Σ_k exp(log(L_k / n_k) / μ)`` with
  ``n`` the average losses of the last warm-up epoch, no preference and ``μ = 1``; it
  is not implemented here. ``μ = 1`` (that code's default) is the default here too; the
  paper's Pareto-set experiments use ``μ = 0.01``.

  Args:
    mu: smoothing ``μ > 0`` (smaller: closer to the maximum).
    preference: ``(K,)`` non-negative preference ``p`` (default ``1/K`` each).
    ideal: ``(K,)`` ideal point ``z`` (default 0).

  Returns:
    A loss-kind Weighting named ``"stch"`` (``needs_losses=True``); state
    :class:`STCHState`; residual 0.

  Raises:
    ValueError: for a ``mu`` that is not positive and finite, a preference with a negative
      or non-finite entry (or all zero), a non-finite ideal point, or (at ``init``) a
      preference or ideal point whose length is not ``K``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import stch
    >>> w = stch(mu=0.5)
    >>> res = w.weigh(jnp.array([1.0, 1.0 + jnp.log(3.0)]), w.init(2, jnp.float32))
    >>> [round(float(x), 4) for x in res.weights]  # (1/2) softmax((0, log 3) / 1)
    [0.125, 0.375]

  References:
    Lin, Zhang, Zhang, Liu, Wang & Zhang, "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization", ICML 2024.
  """
  if not (mu > 0.0 and math.isfinite(mu)):
    raise ValueError(f"stch mu must be positive and finite, got {mu}")
  pref = _vector("stch", "preference", preference, nonnegative=True)
  ideal_point = _vector("stch", "ideal", ideal, nonnegative=False)

  def init(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    p = _sized("stch", "preference", pref, num_tasks, 1.0 / num_tasks)
    z = _sized("stch", "ideal", ideal_point, num_tasks, 0.0)
    return STCHState(jnp.asarray(p, dt), jnp.asarray(z, dt))

  def weigh(task_losses, state):
    p = state.preference
    losses = _losses(task_losses, "stch", p.shape[0], p.dtype)
    weights = p * jax.nn.softmax(p * (losses - state.ideal) / mu)
    return WeightingResult(weights, state, jnp.zeros((), p.dtype))

  return Weighting(init=init, weigh=weigh, name="stch", kind="loss", needs_losses=True)
