"""Skipping non-finite steps for transformations that reduce a task axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of ``tree`` is finite (a scalar bool)."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [jnp.array(True)]))


def apply_if_finite(
  inner: optax.GradientTransformation, max_consecutive_errors: int
) -> optax.GradientTransformationExtraArgs:
  """``optax.apply_if_finite`` for transformations whose output is not shaped like their input.

  ``optax.apply_if_finite`` answers a rejected step with zeros shaped like its
  *input*; a balancing transformation takes ``(K, *param_shape)`` gradients and
  returns params-shaped updates, so it cannot be wrapped by it. This wrapper has
  the same state (``optax.ApplyIfFiniteState``) and optax's semantics, extended to
  what the step produces: a step whose task gradients, ``task_losses``, updates or
  new inner state contain a NaN or Inf (e.g. a Gram matrix that overflows from
  finite gradients) returns zero updates and leaves the whole inner state —
  moments, task weights, solver warm start — untouched; after
  ``max_consecutive_errors`` such steps in a row the update is applied anyway, as
  in optax. The choice is an elementwise select, so no predicate travels to the
  host.

  Args:
    inner: e.g. :func:`pub_optax.pub_adam`.
    max_consecutive_errors: non-finite steps tolerated in a row.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, pub_optax
    >>> tx = pub_optax.apply_if_finite(pub_optax.pub_adam(0.1, num_tasks=2), 3)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([[1.0, jnp.nan], [0.0, 1.0]]), state, params)
    >>> updates.tolist(), int(state.total_notfinite)
    ([0.0, 0.0], 1)
  """
  inner = optax.with_extra_args_support(inner)

  def init(params):
    return optax.ApplyIfFiniteState(
      notfinite_count=jnp.zeros([], jnp.int32),
      last_finite=jnp.array(True, jnp.bool_),
      total_notfinite=jnp.zeros([], jnp.int32),
      inner_state=inner.init(params),
    )

  def update(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    checked = (updates, extra_args.get("task_losses"), new_updates, new_inner)
    isfinite = _all_finite(checked)
    notfinite_count = jnp.where(isfinite, 0, optax.safe_increment(state.notfinite_count))
    accept = isfinite | (notfinite_count > max_consecutive_errors)
    # Selected elementwise, not under lax.cond: no predicate has to reach the host.
    new_updates = jax.tree.map(lambda u: jnp.where(accept, u, jnp.zeros_like(u)), new_updates)
    inner_state = jax.tree.map(lambda n, o: jnp.where(accept, n, o), new_inner, state.inner_state)
    return new_updates, optax.ApplyIfFiniteState(
      notfinite_count=notfinite_count,
      last_finite=isfinite,
      total_notfinite=jnp.where(
        isfinite, state.total_notfinite, optax.safe_increment(state.total_notfinite)
      ),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init, update)
