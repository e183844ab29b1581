"""Transformations over the task axis: per-task preprocessing and task-aware accumulation.

Per-task gradients carry a leading task axis, so an ordinary optax transformation placed
before a balancing one would treat the K tasks as one tensor: ``optax.chain(
optax.clip_by_global_norm(1.0), pub_optax.pub_adam(...))`` clips the *joint* norm of all
tasks' gradients, and ``optax.MultiSteps`` accumulates params-shaped buffers. The two
wrappers here are the task-aware versions:

* :func:`per_task` maps a transformation over the task axis (each task's gradient is
  clipped, normalised, ... on its own), to be chained before any balancing method;
* :func:`multi_steps` averages the stacked task gradients (and task losses) over
  ``every_k`` calls and hands the mean to the balancing transformation once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax._sparse import is_row_sparse

Array = jax.Array


def _refuse_row_sparse(tree, name: str) -> None:
  if any(is_row_sparse(x) for x in jax.tree.leaves(tree, is_leaf=is_row_sparse)):
    raise ValueError(
      f"{name} does not take row-sparse (RowSparse) task gradients: their rows change "
      "from batch to batch; pass dense task gradients"
    )


def per_task(
  inner: optax.GradientTransformation, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
  r"""Applies ``inner`` to each task's gradient on its own: ``g_k ← inner(g_k)`` for all k.

  The update maps ``inner.update`` over the leading task axis with ``jax.vmap`` (params
  are shared by every task), so ``per_task(optax.clip_by_global_norm(1.0))`` clips each
  task's global norm to 1. Chain it *before* the balancing transformation, which is the
  one that removes the task axis.

  Args:
    inner: any optax transformation.
    num_tasks: ``None`` for a stateless ``inner`` (clipping, scaling, ...): one state,
      which must not depend on the gradients. With K, ``inner`` keeps one state per
      task (every state leaf gets a leading axis of size K).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` taking and returning ``(K, *shape)``
    leaves.

  Raises:
    ValueError: at ``update``, when ``num_tasks`` is ``None`` but ``inner``'s state
      changes with the gradients (pass ``num_tasks``), or for row-sparse gradients.

  Example:
    >>> import jax.numpy as jnp, optax, pub_optax
    >>> tx = optax.chain(pub_optax.per_task(optax.clip_by_global_norm(1.0)),
    ...                  pub_optax.pub_adam(1e-3, num_tasks=2))
    >>> clip = pub_optax.per_task(optax.clip_by_global_norm(1.0))
    >>> g = jnp.array([[3.0, 4.0], [0.3, 0.4]])
    >>> clipped, _ = clip.update(g, clip.init(jnp.zeros(2)))
    >>> clipped.tolist()
    [[0.6000000238418579, 0.800000011920929], [0.30000001192092896, 0.4000000059604645]]
  """
  inner = optax.with_extra_args_support(inner)
  if num_tasks is not None and (int(num_tasks) != num_tasks or num_tasks < 1):
    raise ValueError(f"num_tasks must be a positive integer or None, got {num_tasks!r}")

  def init_fn(params):
    state = inner.init(params)
    if num_tasks is None:
      return state
    return jax.tree.map(lambda s: jnp.repeat(jnp.asarray(s)[None], num_tasks, 0), state)

  def update_fn(task_grads, state, params=None, **extra):
    _refuse_row_sparse(task_grads, "per_task")
    axis = None if num_tasks is None else 0
    fn = lambda g, s: inner.update(g, s, params, **extra)
    try:
      return jax.vmap(fn, in_axes=(0, axis), out_axes=(0, axis))(task_grads, state)
    except ValueError as err:
      if num_tasks is None and "out_axes" in str(err):
        raise ValueError(
          "per_task(inner) without num_tasks needs a stateless inner transformation, but "
          "this one's state depends on the gradients: pass num_tasks=K to keep one state "
          "per task"
        ) from err
      raise

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MultiStepsState(NamedTuple):
  """State of :func:`multi_steps`.

  Attributes:
    mini_step: calls since the last inner step (int32, in ``[0, every_k)``).
    grads: the running mean of the stacked task gradients, ``(K, *shape)`` leaves.
    losses: the running mean of the task losses, ``(K,)`` (zeros when none are passed).
    inner: the balancing transformation's state.
  """

  mini_step: Array
  grads: Any
  losses: Array
  inner: Any


def multi_steps(
  inner: optax.GradientTransformation, every_k: int, *, num_tasks: int
) -> optax.GradientTransformationExtraArgs:
  r"""Gradient accumulation for balancing transformations: one balanced step every k calls.

  ``optax.MultiSteps`` keeps params-shaped buffers, so it cannot accumulate stacked task
  gradients. This wrapper keeps their running mean (and that of ``task_losses``, for
  methods that read them) and calls ``inner`` with the mean on every ``every_k``-th call;
  the other calls return zero updates and leave ``inner``'s state untouched, as
  ``optax.MultiSteps`` does. Balancing the mean gradient of k micro-batches is balancing
  the gradient of their union.

  Args:
    inner: a balancing transformation, e.g. :func:`pub_optax.pub_adam`.
    every_k: micro-batches per step (≥ 1).
    num_tasks: K.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`MultiStepsState`.

  Example:
    >>> import jax.numpy as jnp, pub_optax
    >>> tx = pub_optax.multi_steps(pub_optax.pub_adam(0.1, num_tasks=2), 2, num_tasks=2)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> u, state = tx.update(jnp.array([[1.0, 0.0], [0.0, 1.0]]), state, params)
    >>> u.tolist()
    [0.0, 0.0]
    >>> u, state = tx.update(jnp.array([[1.0, 0.0], [0.0, 1.0]]), state, params)
    >>> [round(x, 4) for x in u.tolist()]
    [-0.05, -0.05]
  """
  if int(every_k) != every_k or every_k < 1:
    raise ValueError(f"every_k must be a positive integer, got {every_k!r}")
  if int(num_tasks) != num_tasks or num_tasks < 1:
    raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    grads = jax.tree.map(
      lambda p: jnp.zeros((num_tasks, *jnp.shape(p)), jnp.result_type(p)), params
    )
    return MultiStepsState(
      mini_step=jnp.zeros((), jnp.int32),
      grads=grads,
      losses=jnp.zeros((num_tasks,), jnp.float32),
      inner=inner.init(params),
    )

  def update_fn(task_grads, state, params=None, *, task_losses=None, **extra):
    _refuse_row_sparse(task_grads, "multi_steps")
    n = state.mini_step + 1
    mean = lambda acc, new: acc + (new.astype(acc.dtype) - acc) / n.astype(acc.dtype)
    try:
      grads = jax.tree.map(mean, state.grads, task_grads)
    except ValueError as err:
      raise ValueError(
        f"multi_steps: task gradients must match the stacked (K, *param_shape) buffers: {err}"
      ) from err
    losses = state.losses if task_losses is None else mean(state.losses, jnp.asarray(task_losses))
    losses_arg = None if task_losses is None else losses

    def step():
      updates, inner_state = inner.update(
        grads, state.inner, params, task_losses=losses_arg, **extra
      )
      zeros = jax.tree.map(jnp.zeros_like, grads)
      return updates, MultiStepsState(
        jnp.zeros((), jnp.int32), zeros, jnp.zeros_like(losses), inner_state
      )

    def accumulate():
      updates, _ = jax.eval_shape(step)
      zero_updates = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), updates)
      return zero_updates, MultiStepsState(n, grads, losses, state.inner)

    return jax.lax.cond(n >= every_k, step, accumulate)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
