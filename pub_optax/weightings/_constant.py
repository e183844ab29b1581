"""Constant weighting: user-given task weights, the same at every step (TorchJD's ``Constant``).

The weights are a loss-kind rule: they define the loss ``Σ_k w_k L_k`` and read neither the
task vectors nor the losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


def _validated(weights) -> np.ndarray:
  """The weights as a finite, non-empty 1-D float64 array, else a ValueError naming them."""
  try:
    values = np.asarray(weights, dtype=np.float64)
  except (TypeError, ValueError) as err:
    raise ValueError(f"constant weights must be real numbers, got {weights!r}") from err
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f"constant weights must be a non-empty 1-D sequence, got shape {values.shape}")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"constant weights must be finite, got {values.tolist()}")
  return values


def constant(weights: Sequence[float] | Array) -> Weighting:
  r"""Constant, pre-determined task weights: ``w_k = c_k`` at every step.

  The weights define the loss ``Σ_k c_k L_k``. They are checked when the weighting is
  built (a non-empty 1-D sequence of finite numbers; signs are not restricted) and their
  number against ``K`` when its state is initialised.

  Args:
    weights: the ``K`` weights ``c_k`` (a sequence or a concrete array, not a traced value).

  Returns:
    A loss-kind Weighting named ``"constant"`` (``needs_losses=False``) whose state is the
    ``(K,)`` weight vector in the parameters' dtype (at least float32).

  Raises:
    ValueError: at construction for weights that are not a non-empty 1-D sequence of finite
      numbers; at ``init`` when their number is not ``K``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import constant
    >>> w = constant([0.7, 0.2, 0.1])
    >>> [round(float(x), 6) for x in w.weigh(None, w.init(3, jnp.float32)).weights]
    [0.7, 0.2, 0.1]

  References:
    TorchJD's ``Constant`` aggregator and scalarizer (Quinton & Rey, "Jacobian
    Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024).
  """
  values = _validated(weights)

  def init(num_tasks, dtype):
    if num_tasks != values.size:
      raise ValueError(
        f"constant weights have length {values.size} but the number of tasks is K = {num_tasks}"
      )
    return jnp.asarray(values, jnp.promote_types(dtype, jnp.float32))

  def weigh(task_losses, state):
    del task_losses
    return WeightingResult(state, state, jnp.zeros((), state.dtype))

  return Weighting(init=init, weigh=weigh, name="constant", kind="loss")
