"""Trace-time checks of per-task gradients: every leaf ``(K, *param_shape)``, nothing guessed.

A balancing transformation knows K (from its state) and the parameters' shapes (recorded at
``init``), so it can tell stacked task gradients from params-shaped ones whether or not
``params`` is passed to ``update``. Every check here runs on shapes only, at trace time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax._sparse import is_row_sparse


def shape_templates(params):
  """Zero-size ``(0, *shape)`` arrays that record each parameter's shape and dtype.

  They cost no memory, travel with the optimizer state (jit, serialization, sharding) and
  let :func:`check_task_grads` see a missing task axis even when ``params`` is not passed.
  """
  return jax.tree.map(lambda p: jnp.zeros((0, *jnp.shape(p)), jnp.result_type(p)), params)


def _where(path) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def _check_row_sparse(where: str, leaf) -> None:
  if leaf.rows.ndim != 1 or leaf.values.ndim < 2 or leaf.values.shape[1] != leaf.rows.shape[0]:
    raise ValueError(
      f"row-sparse task gradients at {where} need rows of shape (n,) and values of shape "
      f"(K, n, ...); got rows {leaf.rows.shape} and values {leaf.values.shape}"
    )
  if not jnp.issubdtype(leaf.rows.dtype, jnp.integer):
    raise ValueError(
      f"row-sparse task gradients at {where} have rows of dtype {leaf.rows.dtype}, not integers"
    )


def check_task_grads(task_grads, num_tasks: int, templates) -> None:
  """Raises a ValueError unless every leaf of ``task_grads`` is ``(K, *param_shape)``.

  Args:
    task_grads: the per-task gradients (leaves may be :class:`~pub_optax.RowSparse`).
    num_tasks: K.
    templates: :func:`shape_templates` of the params the state was initialised with.
  """
  leaves = jax.tree_util.tree_leaves_with_path(task_grads, is_leaf=is_row_sparse)
  if not leaves:
    raise ValueError("task gradients are an empty pytree")
  want = jax.tree.structure(templates)
  got = jax.tree.structure(task_grads, is_leaf=is_row_sparse)
  if want != got:
    raise ValueError(
      "task gradients and the params the state was initialised with have different tree "
      f"structures:\n  params: {want}\n  grads:  {got}"
    )
  for (path, g), t in zip(leaves, jax.tree.leaves(templates)):
    where = _where(path)
    if is_row_sparse(g):
      _check_row_sparse(where, g)
    expected = (num_tasks, *t.shape[1:])
    if tuple(g.shape) == expected:
      continue
    if tuple(g.shape) == tuple(t.shape[1:]):
      raise ValueError(
        f"task gradients at {where} have the parameter's own shape {tuple(g.shape)}: they "
        f"need a leading task axis, shape (K, *param_shape) = {expected}; compute them "
        "with pub_optax.value_and_task_grads (optax.MultiSteps and other wrappers that "
        "accumulate params-shaped gradients cannot feed a balancing transformation: use "
        "pub_optax.multi_steps)"
      )
    raise ValueError(
      f"task gradients at {where} have shape {tuple(g.shape)}; expected (K, *param_shape) = "
      f"{expected} for the K = {num_tasks} tasks the state was initialised with"
    )


def check_task_losses(task_losses, num_tasks: int, name: str, needs_losses: bool) -> None:
  """Raises a ValueError when a weighting needs losses that are missing or mis-shaped."""
  if needs_losses and task_losses is None:
    raise ValueError(
      f"the {name!r} weighting needs the task losses: call update(..., task_losses=losses)"
    )
  if task_losses is not None and jnp.shape(task_losses) != (num_tasks,):
    raise ValueError(
      f"task_losses must have shape (K,) = ({num_tasks},), got {jnp.shape(task_losses)}"
    )
