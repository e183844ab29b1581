"""Row-sparse task gradients of lookup tables: K per-task gradients without K dense table copies.

An embedding lookup ``table[ids]`` sends gradient only to the rows in ``ids``. Differentiating
with respect to the whole table makes every task's gradient a dense ``(num_rows, dim)`` array,
so K tasks cost K dense copies, and K dense look-ahead updates after them. Instead:

1. :func:`lookup_rows` finds the distinct rows of a batch and re-indexes the ids into them;
2. the loss runs on the compact table ``lookup.gather(table)`` (the same values for every
   looked-up id) and :func:`pub_optax.value_and_task_grads` gives ``(K, n, dim)`` gradients;
3. ``lookup.task_grads(g)`` wraps them as a :class:`RowSparse` leaf, which
   :func:`pub_optax.balance` (PUB, and every method built on it) takes in place of the dense
   ``(K, num_rows, dim)`` leaf.

The result equals the dense computation up to rounding when the inner optimizer acts on every
coordinate separately (Adam, RMSProp, SGD with momentum, Lion, ...; a global-norm clip of the
gradient is fine too, as the compact gradient has the dense one's norm): the rows outside the
batch then move by the same zero-gradient update for every task, so they enter the Gram matrix
and the balanced update as one shared term. Inner optimizers that couple coordinates of a table
(factored second moments, per-tensor clipping or trust ratios) are not exact on this path.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


@functools.partial(
  jax.tree_util.register_dataclass, data_fields=["rows", "values"], meta_fields=["num_rows"]
)
@dataclasses.dataclass(frozen=True)
class RowSparse:
  """Per-task gradients of a ``(num_rows, *row_shape)`` table that are zero outside ``rows``.

  Attributes:
    rows: ``(n,)`` integer ids of distinct table rows. Entries equal to ``num_rows``
      are padding (``jnp.unique`` with a static size) and carry no gradient.
    values: ``(K, n, *row_shape)``: task k's gradient at ``rows``.
    num_rows: the table's number of rows (static).

  Example:
    >>> import jax.numpy as jnp
    >>> g = RowSparse(jnp.array([0, 2]), jnp.ones((1, 2, 3)), num_rows=4)
    >>> g.shape, g.todense()[0, :, 0].tolist()
    ((1, 4, 3), [1.0, 0.0, 1.0, 0.0])
  """

  rows: Array
  values: Array
  num_rows: int

  @property
  def shape(self) -> tuple[int, ...]:
    """The dense shape ``(K, num_rows, *row_shape)``."""
    return (self.values.shape[0], self.num_rows) + tuple(self.values.shape[2:])

  @property
  def dtype(self):
    return self.values.dtype

  def todense(self) -> Array:
    """The dense ``(K, num_rows, *row_shape)`` gradients (padding rows dropped)."""
    dense = jnp.zeros(self.shape, self.values.dtype)
    return dense.at[:, self.rows].set(self.values, mode="drop")


def is_row_sparse(x) -> bool:
  """Whether ``x`` is a :class:`RowSparse` leaf (for ``jax.tree`` calls' ``is_leaf``)."""
  return isinstance(x, RowSparse)


class Lookup(NamedTuple):
  """The distinct rows a batch of ids looks up, and the ids re-indexed into them.

  Attributes:
    rows: ``(n,)`` sorted distinct ids, padded at the end with ``num_rows``.
    ids: the looked-up ids as positions in ``rows`` (``rows[ids]`` gives the ids back).
    num_rows: the table's number of rows.
  """

  rows: Array
  ids: Array
  num_rows: int

  def gather(self, table: Array) -> Array:
    """The compact table ``(n, *row_shape)``: the looked-up rows, zeros at padding."""
    if table.shape[0] != self.num_rows:
      raise ValueError(
        f"this lookup is for a table of {self.num_rows} rows, got a table of shape {table.shape}"
      )
    return table.at[self.rows].get(mode="fill", fill_value=0)

  def task_grads(self, values: Array) -> RowSparse:
    """Wraps ``(K, n, *row_shape)`` gradients of the compact table as a :class:`RowSparse`."""
    if values.ndim < 2 or values.shape[1] != self.rows.shape[0]:
      raise ValueError(
        f"expected per-task gradients of the compact table, shape (K, {self.rows.shape[0]}, ...), "
        f"got {values.shape}"
      )
    return RowSparse(self.rows, values, self.num_rows)


def lookup_rows(ids: Array, num_rows: int, size: int | None = None) -> Lookup:
  """The distinct table rows in ``ids``, with a static count so that it works under ``jax.jit``.

  Args:
    ids: integer ids of any shape, each in ``[0, num_rows)`` (checked when ``ids`` is
      concrete; under ``jit`` an id outside the table reads a zero row).
    num_rows: rows of the table the ids index.
    size: static number of distinct rows to hold; ``None`` takes ``min(ids.size,
      num_rows)``, which always suffices. Unused slots are padding.

  Returns:
    A :class:`Lookup`; ``lookup.gather(table)[lookup.ids]`` equals ``table[ids]``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, pub_optax
    >>> table = jnp.arange(10.0).reshape(5, 2)
    >>> ids = jnp.array([3, 1, 3])
    >>> lookup = pub_optax.lookup_rows(ids, num_rows=5)
    >>> lookup.rows.tolist(), lookup.ids.tolist()
    ([1, 3, 5], [1, 0, 1])
    >>> def losses(compact):  # two tasks reading the looked-up rows
    ...   x = compact[lookup.ids]
    ...   return jnp.stack([jnp.sum(x[:, 0]), jnp.sum(x[:, 1] ** 2)])
    >>> _, g = pub_optax.value_and_task_grads(losses)(lookup.gather(table))
    >>> sparse = lookup.task_grads(g)  # (K, 3, 2) at rows 1, 3 (and one padding row)
    >>> tx = pub_optax.pub_adam(0.1, num_tasks=2)
    >>> updates, _ = tx.update(sparse, tx.init(table), table)
    >>> updates.shape, [bool(jnp.any(updates[r] != 0)) for r in range(5)]
    ((5, 2), [False, True, False, True, False])
  """
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
  num_rows = int(num_rows)
  if num_rows < 1:
    raise ValueError(f"num_rows must be >= 1, got {num_rows}")
  size = min(ids.size, num_rows) if size is None else int(size)
  if size < 1:
    raise ValueError(f"size must be >= 1, got {size} (ids of shape {ids.shape})")
  if not isinstance(ids, jax.core.Tracer):  # concrete: check what jit cannot
    host = np.asarray(ids)
    if host.min() < 0 or host.max() >= num_rows:
      raise ValueError(
        f"ids must lie in [0, {num_rows}); got ids from {host.min()} to {host.max()}"
      )
    distinct = len(np.unique(host))
    if size < distinct:
      raise ValueError(f"size={size} is smaller than the {distinct} distinct ids")
  rows = jnp.unique(ids.ravel(), size=size, fill_value=num_rows)
  return Lookup(rows=rows, ids=jnp.searchsorted(rows, ids).astype(ids.dtype), num_rows=num_rows)


class TableRows:
  """The :class:`RowSparse` leaves of a task-gradient tree, as :func:`pub_optax.balance` uses them.

  ``balance`` runs its whole step on the *compact* tree (every RowSparse leaf replaced by its
  ``(K, n, ...)`` values, the params and the inner state gathered at the same rows), plus one
  zero-gradient inner step over the full tables: it moves every row outside the batch (the
  same move for every task) and gives the state there. :meth:`expand` and :meth:`merge_state`
  write the compact results into those full arrays.
  """

  def __init__(self, task_grads):
    leaves, self.treedef = jax.tree.flatten(task_grads, is_leaf=is_row_sparse)
    self.rows = [l.rows if is_row_sparse(l) else None for l in leaves]
    self.shapes = [
      l.shape[1:] if is_row_sparse(l) else None for l in leaves
    ]  # the tables' full shapes
    self.compact_grads = self.treedef.unflatten(
      [l.values if is_row_sparse(l) else l for l in leaves]
    )

  @staticmethod
  def of(task_grads) -> TableRows | None:
    """``TableRows`` of ``task_grads``, or ``None`` when it holds no RowSparse leaf."""
    tables = TableRows(task_grads)
    return tables if any(r is not None for r in tables.rows) else None

  def _map(self, fn, *trees):
    flat = [self.treedef.flatten_up_to(t) for t in trees]
    return self.treedef.unflatten(
      [fn(r, shape, *xs) for r, shape, *xs in zip(self.rows, self.shapes, *flat)]
    )

  def gather(self, tree):
    """Params-shaped ``tree`` with every table replaced by its rows (zeros at padding)."""
    return self._map(
      lambda r, shape, x: x if r is None else x.at[r].get(mode="fill", fill_value=0), tree
    )

  def zero_padding(self, tree):
    """``(K, ...)`` compact ``tree`` with the padding rows of every table set to zero."""

    def fn(r, shape, x):
      if r is None:
        return x
      valid = (r < shape[0]).reshape((1, -1) + (1,) * (x.ndim - 2))
      return jnp.where(valid, x, jnp.zeros((), x.dtype))

    return self._map(fn, tree)

  def expand(self, compact, base, scale):
    """Full arrays: ``scale · base`` outside the batch rows, ``compact`` on them.

    ``scale`` is a params-shaped tree of scalars (only read at the tables).
    """

    def fn(r, shape, c, b, s):
      if r is None:
        return c
      return (s * b).astype(c.dtype).at[r].set(c, mode="drop")

    return self._map(fn, compact, base, scale)

  def untouched_sq_norm(self, base, mask) -> Array:
    """``Σ base²`` over the rows outside the batch of the tables where ``mask`` is True."""
    total = jnp.zeros((), jnp.float32)
    for r, shape, b, m in zip(
      self.rows, self.shapes, self.treedef.flatten_up_to(base), self.treedef.flatten_up_to(mask)
    ):
      if r is None or not m:
        continue
      n = shape[0]
      b = b.astype(jnp.promote_types(b.dtype, jnp.float32))
      outside = jnp.ones((n,), b.dtype).at[r].set(0, mode="drop")
      total = total + jnp.sum(outside * jnp.sum(jnp.square(b).reshape(n, -1), axis=1))
    return total

  def _state_tags(self, inner, state) -> list[int]:
    """For every leaf of ``state``: the index of the param leaf it mirrors, or -1."""
    index_tree = self.treedef.unflatten(list(range(self.treedef.num_leaves)))
    try:
      tags = optax.tree_map_params(
        inner,
        lambda _, i: i,
        state,
        index_tree,
        transform_non_params=lambda v: jax.tree.map(lambda _: -1, v),
      )
    except (TypeError, ValueError, AttributeError) as err:
      raise ValueError(
        "row-sparse task gradients need to find the inner optimizer's parameter-shaped state "
        f"(optax.tree_map_params); it failed for this inner optimizer: {err}"
      ) from err
    tags = jax.tree.leaves(tags)
    if len(tags) != len(jax.tree.leaves(state)):
      raise ValueError(
        "row-sparse task gradients: could not match the inner state's leaves to the params"
      )
    return tags

  def _map_state(self, inner, fn, state, *others):
    """Applies ``fn(leaf, *other_leaves, rows, table_shape)`` to state leaves mirroring a table."""
    leaves, treedef = jax.tree.flatten(state)
    others = [jax.tree.leaves(o) for o in others]
    out = []
    for i, (leaf, tag) in enumerate(zip(leaves, self._state_tags(inner, state))):
      rows = self.rows[tag] if tag >= 0 else None
      out.append(
        leaf if rows is None else fn(leaf, *[o[i] for o in others], rows, self.shapes[tag])
      )
    return treedef.unflatten(out)

  def gather_state(self, inner, state):
    """The inner state at the batch rows of every table (zeros at padding)."""

    def fn(leaf, rows, shape):
      if tuple(leaf.shape) != tuple(shape):
        raise ValueError(
          f"row-sparse task gradients need an inner optimizer that keeps a parameter-shaped "
          f"state per coordinate; a state leaf of a table of shape {tuple(shape)} has shape "
          f"{tuple(leaf.shape)} (factored or per-tensor statistics are not supported on this path)"
        )
      return leaf.at[rows].get(mode="fill", fill_value=0)

    return self._map_state(inner, fn, state)

  def zero_gradient_step(self, inner, state, params, **extra):
    """The inner step with zero gradients on the full tables (other leaves left out).

    Returns ``(direction, state)``; leaves that are not tables come back empty.
    """
    tags = self._state_tags(inner, state)
    leaves, treedef = jax.tree.flatten(state)
    restricted = [
      jnp.zeros((0,), l.dtype) if t >= 0 and self.rows[t] is None else l
      for l, t in zip(leaves, tags)
    ]
    grads = self._map(
      lambda r, shape, g: jnp.zeros(shape if r is not None else (0,), g.dtype), self.compact_grads
    )
    if params is not None:
      params = self._map(
        lambda r, shape, p: p if r is not None else jnp.zeros((0,), jnp.asarray(p).dtype), params
      )
    return inner.update(grads, treedef.unflatten(restricted), params, **extra)

  def merge_state(self, inner, base_state, compact_state):
    """The new full inner state: ``base_state`` outside the batch rows, ``compact_state`` on them."""

    def fn(compact, base, rows, shape):
      del shape
      return base.at[rows].set(compact.astype(base.dtype), mode="drop")

    return self._map_state(inner, fn, compact_state, base_state)
