"""Geometric mean of the task losses (GLS): weights its gradient in the losses.

A stateless loss-kind weighting that needs the task losses, which must be positive.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


def _positive_weights(name: str, task_losses) -> WeightingResult:
  if task_losses is None:
    raise ValueError(
      f"the {name!r} weighting needs the task losses: call update(..., task_losses=losses)"
    )
  losses = jnp.asarray(task_losses)
  losses = jax.lax.stop_gradient(losses.astype(jnp.promote_types(losses.dtype, jnp.float32)))
  if losses.ndim != 1 or losses.shape[0] < 1:
    raise ValueError(f"task_losses must have shape (K,) with K >= 1, got {losses.shape}")
  k = losses.shape[0]
  mean = jnp.exp(jnp.mean(jnp.log(losses)))
  weights = mean / (k * losses)
  residual = jnp.where(jnp.all(losses > 0), 0.0, jnp.inf).astype(losses.dtype)
  return WeightingResult(weights, (), residual)


def _no_state(num_tasks, dtype):
  del num_tasks, dtype
  return ()


def geometric_mean() -> Weighting:
  r"""Geometric mean of the losses: weights ``w_k = (Π_j L_j)^{1/K} / (K L_k)``.

  The loss ``G(L) = (Π_k L_k)^{1/K} = exp(mean_k log L_k)`` has the gradient
  ``∂G/∂L_k = G / (K L_k)`` in the losses, so the model follows
  ``∇G = Σ_k w_k ∇L_k``: each task is weighted by the inverse of its loss, times the
  current geometric mean. The rule has no hyper-parameter and no state.

  This is the geometric loss strategy (GLS) of Chennupati et al.; LibMTL's ``GLS``
  back-propagates ``(Π_k L_k)^{1/K}`` (the same rule; the weights it returns for logging
  are not these gradients) and TorchJD's ``GeometricMean``/``GLS`` compute
  ``exp(mean log L)``. :func:`gls` is the same weighting under that name.

  The losses must be positive. Non-positive losses are not clipped: a zero loss gives a
  NaN weight for its task, a negative one NaN weights for all, and the residual is then
  ``inf`` (0 otherwise), so a user can detect it.

  Returns:
    A stateless loss-kind Weighting named ``"geometric_mean"`` (``needs_losses=True``);
    residual 0 for positive losses, ``inf`` otherwise.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import geometric_mean
    >>> w = geometric_mean()
    >>> res = w.weigh(jnp.array([1.0, 4.0]), w.init(2, jnp.float32))
    >>> [float(x) for x in res.weights], float(res.residual)  # G = 2: (2 / 2, 2 / 8)
    ([1.0, 0.25], 0.0)

  References:
    Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops
    2019; TorchJD's ``GeometricMean`` scalarizer.
  """

  def weigh(task_losses, state):
    del state
    return _positive_weights("geometric_mean", task_losses)

  return Weighting(
    init=_no_state, weigh=weigh, name="geometric_mean", kind="loss", needs_losses=True
  )


def gls() -> Weighting:
  r"""GLS, the geometric loss strategy: :func:`geometric_mean` under the name ``"gls"``.

  Weights ``w_k = (Π_j L_j)^{1/K} / (K L_k)``, the gradient of ``(Π_k L_k)^{1/K}``
  (LibMTL's ``GLS``); positive losses only (see :func:`geometric_mean`).

  Returns:
    A stateless loss-kind Weighting named ``"gls"`` (``needs_losses=True``).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import gls
    >>> w = gls()
    >>> [float(x) for x in w.weigh(jnp.array([2.0, 8.0]), w.init(2, jnp.float32)).weights]
    [1.0, 0.25]

  References:
    Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019.
  """

  def weigh(task_losses, state):
    del state
    return _positive_weights("gls", task_losses)

  return Weighting(init=_no_state, weigh=weigh, name="gls", kind="loss", needs_losses=True)
