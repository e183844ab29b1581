"""Skipping non-finite steps for transformations that reduce a task axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def apply_if_finite(
  inner: optax.GradientTransformation, max_consecutive_errors: int
) -> optax.GradientTransformationExtraArgs:
  """``optax.apply_if_finite`` for transformations whose output is not shaped like their input.

  ``optax.apply_if_finite`` answers a rejected step with zeros shaped like its
  *input*; a balancing transformation takes ``(K, *param_shape)`` gradients and
  returns params-shaped updates, so it cannot be wrapped by it. This wrapper has
  the same semantics and the same state (``optax.ApplyIfFiniteState``): a step
  whose task gradients (or ``task_losses``) contain a NaN or Inf returns zero
  updates and leaves the whole inner state — moments, task weights, solver warm
  start — untouched; after ``max_consecutive_errors`` such steps in a row the
  update is applied anyway, as in optax.

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
    checked = jax.tree.leaves((updates, extra_args.get("task_losses")))
    isfinite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in checked]))
    notfinite_count = jnp.where(isfinite, 0, optax.safe_increment(state.notfinite_count))

    def apply():
      return inner.update(updates, state.inner_state, params, **extra_args)

    def reject():
      out_shape, _ = jax.eval_shape(apply)
      return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape), state.inner_state

    new_updates, inner_state = jax.lax.cond(
      isfinite | (notfinite_count > max_consecutive_errors), apply, reject
    )
    return new_updates, optax.ApplyIfFiniteState(
      notfinite_count=notfinite_count,
      last_finite=isfinite,
      total_notfinite=jnp.where(
        isfinite, state.total_notfinite, optax.safe_increment(state.total_notfinite)
      ),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init, update)
