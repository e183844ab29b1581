"""The generic multi-task train step: per-task losses -> per-task gradients -> transformation -> params.

Model families (ranking, vision) only supply a function ``losses_fn(params, rest,
batch) -> ((K,) task losses, new_rest)``; this module turns it into a jittable step
that works with every pub_optax transformation and reports what a user logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax._balance import balance_state
from pub_optax._grads import value_and_task_grads


class StepOutput(NamedTuple):
  """What one train step returns.

  Attributes:
    params, rest, opt_state: the new model parameters, other model state
      (BatchNorm statistics, RNG counters) and optimizer state.
    losses: ``(K,)`` task losses of the batch (before the update).
    weights: ``(K,)`` task weights the transformation applied (NaN for methods
      without a :class:`~pub_optax.BalanceState`).
    shared_update_rms: RMS of the applied update over the shared parameters.
  """

  params: Any
  rest: Any
  opt_state: Any
  losses: jax.Array
  weights: jax.Array
  shared_update_rms: jax.Array


def shared_update_rms(updates, mask) -> jax.Array:
  """RMS of ``updates`` over the leaves where ``mask`` is True (0 when there are none)."""
  shared = [u for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(mask)) if m]
  if not shared:
    return jnp.zeros((), jnp.float32)
  total = sum(jnp.sum(jnp.square(u.astype(jnp.float32))) for u in shared)
  return jnp.sqrt(total / sum(u.size for u in shared))


def make_train_step(
  tx: optax.GradientTransformation,
  shared_mask,
  losses_fn: Callable,
  lookups: Callable | None = None,
) -> Callable:
  """A pure train step ``(params, rest, opt_state, batch) -> StepOutput`` for ``jax.jit``.

  One forward pass and one vmapped VJP give the per-task gradients; the task
  losses travel to the transformation as ``task_losses=`` (loss-level methods need them).

  Args:
    tx: a transformation taking stacked per-task gradients.
    shared_mask: the model's shared-parameter mask (for the logged update RMS).
    losses_fn: ``losses_fn(params, rest, batch) -> ((K,) losses, new_rest)``.
    lookups: optional ``lookups(params, batch) -> (compact_params, compact_batch,
      to_task_grads)`` (e.g. :meth:`MultiTaskModel.embedding_lookups
      <pub_optax.ranking.models.MultiTaskModel.embedding_lookups>`): the loss runs
      on the looked-up table rows only and ``to_task_grads`` turns their gradients into
      :class:`~pub_optax.RowSparse` leaves, so no dense per-task table gradient exists.

  Returns:
    The step function.

  Example:
    >>> import jax.numpy as jnp, pub_optax
    >>> from pub_optax import make_train_step
    >>> def losses_fn(p, rest, batch):
    ...   return jnp.stack([jnp.sum((p - batch) ** 2), jnp.sum(p ** 2)]), rest
    >>> tx = pub_optax.pub_adam(0.1, num_tasks=2)
    >>> step = make_train_step(tx, True, losses_fn)
    >>> out = step(jnp.ones(3), (), tx.init(jnp.ones(3)), jnp.zeros(3))
    >>> out.losses.tolist()
    [3.0, 3.0]
  """

  def step(params, rest, opt_state, batch) -> StepOutput:
    diff_params, diff_batch, to_task_grads = (
      (params, batch, None) if lookups is None else lookups(params, batch)
    )
    (losses, new_rest), grads = value_and_task_grads(
      lambda p, r: losses_fn(p, r, diff_batch), has_aux=True
    )(diff_params, rest)
    if to_task_grads is not None:
      grads = to_task_grads(grads)
    updates, opt_state = tx.update(grads, opt_state, params, task_losses=losses)
    params = optax.apply_updates(params, updates)
    balance = balance_state(opt_state)
    weights = balance.weights if balance is not None else jnp.full(losses.shape, jnp.nan)
    return StepOutput(
      params, new_rest, opt_state, losses, weights, shared_update_rms(updates, shared_mask)
    )

  return step
