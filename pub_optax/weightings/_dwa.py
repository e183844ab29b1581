"""Dynamic Weight Average (DWA): loss weights from the ratio of the last two average losses.

A loss-kind weighting that needs the task losses: its state keeps the running sum of the
losses over the current period and the averages of the last two complete periods.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax._losses import _losses
from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


class DWAState(NamedTuple):
  """State of :func:`dwa`.

  Attributes:
    older: ``(K,)`` average losses of the period before the last complete one, ``L(t−2)``.
    newer: ``(K,)`` average losses of the last complete period, ``L(t−1)``.
    total: ``(K,)`` sum of the losses seen so far in the current period.
    count: number of calls so far in the current period (``0 ≤ count < period``).
    complete: number of complete periods, capped at 2.
  """

  older: Array
  newer: Array
  total: Array
  count: Array
  complete: Array


def _check(temperature: float, period: int) -> None:
  if not temperature > 0.0:
    raise ValueError(f"dwa temperature must be positive, got {temperature}")
  if isinstance(period, bool) or not isinstance(period, int) or period < 1:
    raise ValueError(f"dwa period must be a positive integer, got {period!r}")


def _rolled(state: DWAState, losses: Array, period: int) -> DWAState:
  """Adds ``losses`` to the current period; at its end, shifts its average into the history."""
  total, count = state.total + losses, state.count + 1
  done = count == period
  average = total / period
  return DWAState(
    older=jnp.where(done, state.newer, state.older),
    newer=jnp.where(done, average, state.newer),
    total=jnp.where(done, 0.0, total),
    count=jnp.where(done, 0, count),
    complete=jnp.where(done, jnp.minimum(state.complete + 1, 2), state.complete),
  )


def dwa(temperature: float = 2.0, *, period: int = 1) -> Weighting:
  r"""Dynamic Weight Average: ``w_k = K · softmax_k(r_k / T)``, ``r_k = L̄_k(t−1) / L̄_k(t−2)``.

  ``L̄_k(t)`` is task k's loss averaged over period ``t``, a period being ``period``
  consecutive calls (the paper's epoch; ``period=1`` compares single steps). A task whose
  loss decreased more slowly gets a larger ratio ``r_k`` and a larger weight; the weights
  sum to ``K``. Until two periods are complete the weights are all ``1`` (the paper's
  ``λ_k = 1`` for the first two epochs).

  At each call the weights come from the two previous complete periods only; the current
  losses are then added to the running sum of the current period, and when it holds
  ``period`` calls its average becomes ``L̄(t−1)`` and the previous one ``L̄(t−2)``.
  The ratios are meant for positive losses (the paper's losses). A ratio that is not
  finite (a zero average loss in the denominator, e.g. losses that start at exactly 0) is
  taken as ``1``, no measurable rate, and the residual counts such ratios, so a user can
  log them; with losses of changing sign the ratios lose their meaning.

  Args:
    temperature: softmax temperature ``T`` (the paper: 2; larger is more uniform).
    period: number of calls averaged into one loss value (1: every step).

  Returns:
    A loss-kind Weighting named ``"dwa"`` (``needs_losses=True``); state :class:`DWAState`;
    residual: the number of ratios that were not finite and were taken as 1.

  Raises:
    ValueError: for a non-positive temperature or a period that is not a positive integer.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import dwa
    >>> w = dwa(temperature=2.0)
    >>> state = w.init(2, jnp.float32)
    >>> for losses in ([1.0, 1.0], [0.5, 1.0], [0.25, 1.0]):
    ...   res = w.weigh(jnp.array(losses), state)
    ...   state = res.state
    >>> [round(float(x), 3) for x in res.weights]  # r = (0.5, 1): 2 softmax(r / 2)
    [0.876, 1.124]

  References:
    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.
  """
  _check(temperature, period)

  def init(num_tasks, dtype):
    zeros = jnp.zeros((num_tasks,), jnp.promote_types(dtype, jnp.float32))
    return DWAState(zeros, zeros, zeros, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def weigh(task_losses, state):
    k = state.total.shape[0]
    losses = _losses(task_losses, "dwa", k, state.total.dtype)
    ready = state.complete >= 2
    ratios = state.newer / jnp.where(ready, state.older, 1.0)
    finite = jnp.isfinite(ratios)
    dynamic = k * jax.nn.softmax(jnp.where(finite, ratios, 1.0) / temperature)
    weights = jnp.where(ready, dynamic, jnp.ones_like(dynamic))
    replaced = jnp.sum(~finite).astype(losses.dtype)
    return WeightingResult(weights, _rolled(state, losses, period), replaced)

  return Weighting(init=init, weigh=weigh, name="dwa", kind="loss", needs_losses=True)
