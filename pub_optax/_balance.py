"""One mechanism that applies any task weighting to per-task gradients or to per-task updates.

``balance`` is an optax transformation whose ``update`` takes per-task gradients
stacked on a leading task axis (every leaf ``(K, *param_shape)``) and returns one
params-shaped update. It balances either

* ``level="gradient"``: the gradients g_k (Nash-MTL, MGDA, PCGrad, ... as published):
  the joint gradient ``Σ α̂_k g_k`` on shared leaves is fed to the inner optimizer; or
* ``level="update"``: the inner optimizer's per-task look-ahead updates
  ``d_k = inner(g_k, s)`` (PUB): shared leaves move by ``−η Σ α̂_k d_k``.

In both cases task-specific leaves receive the inner optimizer's ordinary update
of the task-summed gradient, and the inner state advances once per step with the
weighted gradient ``Σ α̂_k g_k`` on shared leaves and ``Σ_k g_k`` elsewhere.
Loss-level weightings (``needs_gram=False``: uncertainty, FAMO, RLW) define the
weighted loss ``Σ_k w_k L_k``, so their weights apply to every leaf.

Step of ``level="update"`` (Yuan, Cai & Dong, arXiv 2410.05806):

1. ``d_k = inner.update(g_k, s)`` for every task at once with ``jax.vmap``
   (look-ahead, the state is not committed);
2. ``M = D Dᵀ`` over the shared leaves only, accumulated in float32 or wider;
3. ``α = weighting(M)`` (Nash bargaining for PUB), recomputed every
   ``refresh_every`` steps under ``jax.lax.cond`` and reused in between;
4. ``α̂ = scaling(α)``; shared leaves: ``Δθ = −η Σ_k α̂_k d_k``;
5. one committed ``inner.update`` with the weighted gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from pub_optax._gram import gram_matrix, weighted_sum
from pub_optax._sparse import TableRows, is_row_sparse
from pub_optax.weightings._base import Weighting

Array = jax.Array
SharedSpec = Any | Callable[[Any], Any] | None

LEVELS = ("gradient", "update")
SCALINGS = ("raw", "rms", "convex")


class BalanceState(NamedTuple):
  """State of :func:`balance` (and so of ``pub``, ``pub_adam`` and the gradient-level methods).

  Attributes:
    count: int32 number of updates taken.
    inner: the inner optimizer's state; with ``per_task_state=True`` every leaf
      has a leading task axis.
    weights: ``(K,)`` task weights α̂ applied at the last step (after scaling).
    weighting: the weighting's own state (the previous raw weights for Nash).
    residual: solver diagnostic of the last refresh (relative residual of the
      weighting's defining conditions; 0 for closed-form weightings).
  """

  count: Array
  inner: optax.OptState
  weights: Array
  weighting: Any
  residual: Array


def _tree_dtype(tree) -> Any:
  leaves = jax.tree.leaves(tree)
  dtypes = [jnp.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype for x in leaves]
  return jnp.promote_types(jnp.result_type(*dtypes) if dtypes else jnp.float32, jnp.float32)


def _is_static_bool(x) -> bool:
  return isinstance(x, bool) or (
    hasattr(x, "dtype")
    and not isinstance(x, jax.Array)
    and x.dtype == bool
    and getattr(x, "shape", ()) == ()
  )


def resolve_shared(shared: SharedSpec, reference) -> Any:
  """Returns the shared-leaf mask as a pytree of Python bools matching ``reference``.

  Args:
    shared: ``None`` (every leaf is shared), a pytree of bools with the structure
      of the params, or a callable mapping the params to such a pytree.
    reference: the params (or a params-shaped tree of ``jax.ShapeDtypeStruct``).

  Raises:
    ValueError: the mask's structure differs from the params' or a leaf is not a
      static bool.
  """
  if shared is None:
    return jax.tree.map(lambda _: True, reference)
  mask = shared(reference) if callable(shared) else shared
  want = jax.tree.structure(reference)
  got = jax.tree.structure(mask)
  if want != got:
    raise ValueError(
      "the `shared` mask does not match the params: it must have the params' tree "
      f"structure with one bool per leaf.\n  params: {want}\n  shared: {got}"
    )
  bad = [
    jax.tree_util.keystr(p)
    for p, m in jax.tree_util.tree_leaves_with_path(mask)
    if not _is_static_bool(m)
  ]
  if bad:
    raise ValueError(
      "the `shared` mask must hold static Python bools (it decides the program's "
      f"structure); non-bool leaves at {bad[:5]}"
    )
  return jax.tree.map(bool, mask)


def _check_task_axis(task_grads, num_tasks: int, params) -> None:
  """Trace-time checks that every leaf carries the same leading task axis of size K."""
  paths_leaves = jax.tree_util.tree_leaves_with_path(task_grads, is_leaf=is_row_sparse)
  if not paths_leaves:
    raise ValueError("task gradients are an empty pytree")
  for path, leaf in paths_leaves:
    where = jax.tree_util.keystr(path) or "<root>"
    if is_row_sparse(leaf):
      if leaf.rows.ndim != 1 or leaf.values.ndim < 2 or leaf.values.shape[1] != leaf.rows.shape[0]:
        raise ValueError(
          f"row-sparse task gradients at {where} need rows of shape (n,) and values of shape "
          f"(K, n, ...); got rows {leaf.rows.shape} and values {leaf.values.shape}"
        )
      if not jnp.issubdtype(leaf.rows.dtype, jnp.integer):
        raise ValueError(
          f"row-sparse task gradients at {where} have rows of dtype {leaf.rows.dtype}, not integers"
        )
    if len(leaf.shape) == 0:
      raise ValueError(
        f"task gradients at {where} are a scalar: every leaf needs a leading task "
        f"axis of size K = {num_tasks}, shape (K, *param_shape)"
      )
    if leaf.shape[0] != num_tasks:
      sizes = sorted({l.shape[0] for _, l in paths_leaves if len(l.shape) > 0})
      raise ValueError(
        f"task gradients at {where} have leading axis {leaf.shape[0]}, but the "
        f"state was initialised for K = {num_tasks} tasks (leading axes seen: {sizes}); "
        "pass gradients stacked as (K, *param_shape), e.g. from value_and_task_grads"
      )
  if params is not None:
    structure = jax.tree.structure(task_grads, is_leaf=is_row_sparse)
    if jax.tree.structure(params) != structure:
      raise ValueError(
        "task gradients and params have different tree structures:\n"
        f"  params: {jax.tree.structure(params)}\n  grads:  {structure}"
      )
    for (path, g), p in zip(paths_leaves, jax.tree.leaves(params)):
      if tuple(g.shape) != (num_tasks,) + tuple(jnp.shape(p)):
        raise ValueError(
          f"task gradients at {jax.tree_util.keystr(path)} have shape {tuple(g.shape)}; "
          f"expected (K, *param_shape) = {(num_tasks,) + tuple(jnp.shape(p))} "
          "(missing task axis?)"
        )


def scale_weights(weights: Array, scaling: str, num_shared: int) -> Array:
  """Applies a scaling rule to the raw weights.

  * ``"raw"``: unchanged.
  * ``"convex"``: ``α / Σα`` (identical task vectors then give back the inner step).
  * ``"rms"``: ``α · sqrt(P / K)`` with P the number of shared coordinates. Exact
    Nash weights give a joint vector of norm √K, so this sets its RMS per shared
    coordinate to 1 (an Adam-sized step) while keeping the Nash direction, and a
    joint vector that shrinks because the tasks cancel (a Pareto-stationary
    point, no Nash solution) keeps shrinking instead of being blown up. It is
    meant for Nash weights; for weightings on the simplex use ``"convex"``.
  """
  if scaling == "raw":
    return weights
  if scaling == "convex":
    total = jnp.sum(weights)
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), weights)
  return weights * jnp.sqrt(num_shared / weights.shape[0]).astype(weights.dtype)


def balance(
  inner: optax.GradientTransformation,
  weighting: Weighting,
  learning_rate: optax.ScalarOrSchedule,
  *,
  num_tasks: int,
  level: str = "update",
  shared: SharedSpec = None,
  refresh_every: int = 1,
  scaling: str = "raw",
  per_task_state: bool = False,
  weight_decay: chex.Numeric = 0.0,
  weight_decay_mask: SharedSpec = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Balances K tasks with ``weighting`` at gradient or update level.

  Args:
    inner: learning-rate-free inner direction, e.g. ``optax.scale_by_adam()``.
    weighting: a :class:`~pub_optax.weightings.Weighting` (Gram matrix -> weights).
    learning_rate: float or optax schedule (``η``).
    num_tasks: K, the size of the leading task axis of the gradients (≥ 1).
    level: ``"update"`` (PUB: weigh the inner optimizer's per-task updates) or
      ``"gradient"`` (classic: weigh the per-task gradients).
    shared: which leaves are shared by the tasks and balanced: ``None`` (all), a
      pytree of bools matching the params, or a callable on the params. Other
      leaves get the inner update of the task-summed gradient.
    refresh_every: recompute the weights every this many steps (≥ 1) and reuse
      them in between (``jax.lax.cond``; the solver is warm-started).
    scaling: ``"raw"``, ``"rms"`` or ``"convex"``; see :func:`scale_weights`.
    per_task_state: keep one inner state per task (AdaTask-style); the per-task
      updates are then real updates (each task's state advances with its own
      gradient) and task-specific leaves receive ``Σ_k d_k``. Memory K× the inner
      state. Only with ``level="update"``.
    weight_decay: decoupled weight decay, applied once per step
      (``Δθ −= η·λ·θ``); needs ``params``.
    weight_decay_mask: which leaves decay (same forms as ``shared``).

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Its ``update(task_grads, state,
    params=None, *, task_losses=None, **extra)`` returns params-shaped updates (in
    the params' dtype) and a :class:`BalanceState`. Extra keyword arguments are
    passed on to ``inner``. A leaf of ``task_grads`` may be a
    :class:`~pub_optax.RowSparse` (the gradients of a lookup table at the batch's
    rows, see :mod:`pub_optax.sparse`): the step then runs on those rows plus one
    zero-gradient inner step for the rest, the dense result for a coordinate-wise
    ``inner``, without K dense copies of the table.

  Non-finite gradients give non-finite updates and inner state, as in optax. To
  skip such steps with the whole state (weights included) left untouched, wrap
  the transformation in :func:`pub_optax.apply_if_finite` — optax's own
  ``apply_if_finite`` cannot wrap it, because it answers a rejected step with
  zeros shaped like the stacked input instead of the params.

  Example:
    >>> import jax.numpy as jnp, optax, pub_optax
    >>> tx = pub_optax.balance(optax.scale_by_adam(), pub_optax.weightings.nash(),
    ...                        1e-3, num_tasks=2, scaling="rms")
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])}
    >>> updates, state = tx.update(grads, state, params)
    >>> updates["w"].shape, state.weights.shape
    ((3,), (2,))
  """
  if level not in LEVELS:
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
  if scaling not in SCALINGS:
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
  if per_task_state and level != "update":
    raise ValueError(
      "per_task_state=True needs level='update' (per-task inner states produce per-task updates)"
    )
  if not isinstance(num_tasks, jax.core.Tracer) and int(num_tasks) < 1:
    raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
  if not isinstance(refresh_every, jax.core.Tracer) and int(refresh_every) < 1:
    raise ValueError(f"refresh_every must be a positive number of steps, got {refresh_every}")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    k = int(num_tasks)  # concrete at init, also under optax.inject_hyperparams
    wdtype = _tree_dtype(params)
    inner_state = inner.init(params)
    if per_task_state:
      inner_state = jax.tree.map(lambda s: jnp.repeat(jnp.asarray(s)[None], k, axis=0), inner_state)
    return BalanceState(
      count=jnp.zeros((), jnp.int32),
      inner=inner_state,
      weights=jnp.ones((k,), wdtype),
      weighting=weighting.init(k, wdtype),
      residual=jnp.zeros((), wdtype),
    )

  def update_fn(task_grads, state, params=None, *, task_losses=None, **extra):
    k = state.weights.shape[0]
    _check_task_axis(task_grads, k, params)
    reference = (
      params
      if params is not None
      else jax.tree.map(
        lambda g: jax.ShapeDtypeStruct(g.shape[1:], g.dtype), task_grads, is_leaf=is_row_sparse
      )
    )
    mask = resolve_shared(shared, reference)
    if weighting.needs_losses:
      if task_losses is None:
        raise ValueError(
          f"the {weighting.name!r} weighting needs the task losses: call update(..., task_losses=losses)"
        )
    if task_losses is not None and jnp.shape(task_losses) != (k,):
      raise ValueError(f"task_losses must have shape (K,) = ({k},), got {jnp.shape(task_losses)}")
    num_shared = sum(
      math.prod(jnp.shape(r))
      for r, m in zip(jax.tree.leaves(reference), jax.tree.leaves(mask))
      if m
    )

    # Row-sparse table gradients (pub_optax.sparse): the step below runs on the batch rows
    # only; the rows outside move by one zero-gradient inner step, the same for every task.
    tables = TableRows.of(task_grads)
    if tables is None:
      grads, inner_state, inner_params = task_grads, state.inner, params
    else:
      if per_task_state:
        raise ValueError(
          "per_task_state=True does not take row-sparse task gradients (it keeps K dense "
          "inner states); pass dense gradients"
        )
      grads = tables.compact_grads
      inner_params = None if params is None else tables.gather(params)
      inner_state = tables.gather_state(inner, state.inner)
      base_direction, base_state = tables.zero_gradient_step(inner, state.inner, params, **extra)

    # 1. The vectors to balance: gradients, or the inner optimizer's per-task updates.
    task_states = None
    if level == "update":
      state_axis = 0 if per_task_state else None
      vectors, task_states = jax.vmap(
        lambda g, s: inner.update(g, s, inner_params, **extra), in_axes=(0, state_axis)
      )(grads, inner_state)
    else:
      vectors = grads
    if tables is not None:
      vectors = tables.zero_padding(vectors)

    # 2-4. Gram over shared leaves -> weights -> scaling, refreshed every N steps.
    def solve():
      if weighting.needs_gram:
        gram = gram_matrix(vectors, mask)
        if tables is not None and level == "update":  # rows outside the batch: d_k = base for all k
          gram = gram + tables.untouched_sq_norm(base_direction, mask).astype(gram.dtype)
      else:
        gram = jnp.zeros((k, k), state.weights.dtype)
      res = weighting.weigh(gram, state.weighting, task_losses)
      raw = jnp.asarray(res.weights, state.weights.dtype)
      return (
        scale_weights(raw, scaling, num_shared),
        res.state,
        jnp.asarray(res.residual, state.residual.dtype),
      )

    if isinstance(refresh_every, int) and refresh_every == 1:
      weights, weighting_state, residual = solve()
    else:
      weights, weighting_state, residual = jax.lax.cond(
        state.count % refresh_every == 0,
        solve,
        lambda: (state.weights, state.weighting, state.residual),
      )

    # 5. Combine: weighted sum on shared leaves, plain task sum elsewhere. Loss-level
    # weightings define the loss Σ w_k L_k, so their weights reach every leaf.
    weigh_all = not weighting.needs_gram

    def combine(stacked):
      return jax.tree.map(
        lambda x, m: weighted_sum(weights, x) if (m or weigh_all) else jnp.sum(x, axis=0),
        stacked,
        mask,
      )

    if per_task_state:
      direction, inner_state = combine(vectors), task_states
    else:
      committed, inner_state = inner.update(combine(grads), inner_state, inner_params, **extra)
      if level == "update":
        direction = jax.tree.map(
          lambda v, c, m: weighted_sum(weights, v) if m else c, vectors, committed, mask
        )
      else:
        direction = committed
    if tables is not None:
      # Outside the batch rows a balanced leaf moves by Σ_k α̂_k · base, a committed one by base.
      total = jnp.sum(weights)
      scale = jax.tree.map(lambda m: total if (m and level == "update") else 1.0, mask)
      direction = tables.expand(direction, base_direction, scale)
      inner_state = tables.merge_state(inner, base_state, inner_state)

    if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
      if params is None:
        raise ValueError("weight_decay needs params: call update(grads, state, params)")
      decay_mask = None if weight_decay_mask is None else resolve_shared(weight_decay_mask, params)
      decay = optax.add_decayed_weights(weight_decay, decay_mask)
      direction, _ = decay.update(direction, decay.init(params), params)

    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    out_dtypes = reference
    updates = jax.tree.map(lambda d, r: (-lr * d).astype(r.dtype), direction, out_dtypes)
    new_state = BalanceState(
      count=optax.safe_increment(state.count),
      inner=inner_state,
      weights=weights,
      weighting=weighting_state,
      residual=residual,
    )
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
