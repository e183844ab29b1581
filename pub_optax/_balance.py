"""One mechanism that applies any task weighting to per-task gradients or to per-task updates.

:func:`scale_by_balance` is a learning-rate-free optax transformation whose ``update`` takes
per-task gradients stacked on a leading task axis (every leaf ``(K, *param_shape)``) and
returns one params-shaped direction. It balances either

* ``level="gradient"``: the gradients g_k (Nash-MTL, MGDA, PCGrad, ... as published):
  the joint gradient ``Σ α̂_k g_k`` on shared leaves is fed to the inner optimizer; or
* ``level="update"``: the inner optimizer's per-task look-ahead updates
  ``d_k = inner(g_k, s)`` (PUB): shared leaves move along ``Σ α̂_k d_k``.

In both cases task-specific leaves receive the inner optimizer's ordinary update of the
task-summed gradient, and the inner state advances once per step with the weighted gradient
``Σ α̂_k g_k`` on shared leaves and ``Σ_k g_k`` elsewhere. Loss-kind weightings (uncertainty,
FAMO, RLW, equal) define the weighted loss ``Σ_k w_k L_k``, so their weights apply to every
leaf and no Gram matrix is built. Coordinate-kind weightings (GradDrop, trimmed mean, MoCo,
ExcessMTL) combine the shared leaves of the K vectors themselves, ``u = rule(v_1, …, v_K)``,
in place of ``Σ α̂_k v_k``; see :func:`scale_by_balance`.

:func:`balance` is ``optax.chain(scale_by_balance(...), optax.add_decayed_weights(λ),
optax.scale_by_learning_rate(η))``, as ``optax.adamw`` chains ``scale_by_adam``: weight decay
is added once per step to the balanced direction, never once per task.

Step of ``level="update"`` (Yuan, Cai & Dong, arXiv 2410.05806):

1. ``d_k = inner.update(g_k, s)`` for every task at once with ``jax.vmap``
   (look-ahead, the state is not committed);
2. ``M = D Dᵀ`` over the shared leaves only, accumulated in float32 or wider;
3. ``α = weighting(M)`` (Nash bargaining for PUB), recomputed every
   ``refresh_every`` steps under ``jax.lax.cond`` and reused in between;
4. ``α̂ = scaling(α)``; shared leaves move along ``Σ_k α̂_k d_k``;
5. one committed ``inner.update`` with the weighted gradient.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from pub_optax._gram import gram_matrix, task_sum, weighted_sum
from pub_optax._masks import SharedSpec, resolve_shared, unwrap_variables
from pub_optax._sparse import TableRows
from pub_optax._task_axis import check_task_grads, check_task_losses, shape_templates
from pub_optax.weightings._base import Weighting

Array = jax.Array
Level = Literal["gradient", "update"]
Scaling = Literal["raw", "rms", "convex"]
Lookahead = Literal["full", "fresh"]
Commit = Literal["scaled", "convex"]

LEVELS: tuple[Level, ...] = ("gradient", "update")
SCALINGS: tuple[Scaling, ...] = ("raw", "rms", "convex")
LOOKAHEADS: tuple[Lookahead, ...] = ("full", "fresh")
COMMITS: tuple[Commit, ...] = ("scaled", "convex")


class BalanceDiagnostics(NamedTuple):
  """What the last refresh saw, cheap enough to log every step.

  Attributes:
    raw_weights: ``(K,)`` the weighting's weights before scaling.
    cosines: ``(K, K)`` cosines between the balanced vectors over the shared leaves (the
      Gram matrix normalised by its diagonal; 0 where a vector is zero).
    history_share: ``(K,)`` at update level with ``diagnostics=True`` or
      ``lookahead="fresh"``: ``‖h‖² / ‖d_k‖²`` over the shared leaves, where
      ``h = inner(0, s)`` is the look-ahead of a zero gradient — the part of every task's
      look-ahead ``d_k = inner(g_k, s)`` that the committed state alone would produce.
      Zeros otherwise.
  """

  raw_weights: Array
  cosines: Array
  history_share: Array


class BalanceState(NamedTuple):
  """State of :func:`scale_by_balance` (inside ``pub``, ``pub_adam`` and every registry method).

  Find it inside any wrapped or chained state with :func:`pub_optax.balance_state`.

  Attributes:
    count: int32 number of updates taken.
    inner: the inner optimizer's state; with ``per_task_state=True`` every leaf
      has a leading task axis.
    weights: ``(K,)`` task weights α̂ applied at the last step (after scaling).
    weighting: the weighting's own state (the previous raw weights for Nash).
    residual: solver diagnostic of the last refresh (relative residual of the
      weighting's defining conditions; 0 for closed-form weightings).
    params: zero-size ``(0, *param_shape)`` arrays recording the shapes and dtypes
      of the params the state was initialised with (they hold no data), so that
      gradients without a task axis are refused even when ``params`` is not passed.
    diagnostics: :class:`BalanceDiagnostics` of the last refresh.
  """

  count: Array
  inner: optax.OptState
  weights: Array
  weighting: Any
  residual: Array
  params: Any
  diagnostics: BalanceDiagnostics


def scale_weights(weights: Array, scaling: Scaling, num_shared: int) -> Array:
  """Applies a scaling rule to the raw weights.

  * ``"raw"``: unchanged.
  * ``"convex"``: ``α / Σα`` (identical task vectors then give back the inner step).
  * ``"rms"``: ``α · sqrt(P / K)`` with P the number of shared coordinates. Exact
    Nash weights give a joint vector of norm √K, so this sets its RMS per shared
    coordinate to 1 (an Adam-sized step) while keeping the Nash direction, and a
    joint vector that shrinks because the tasks cancel (a Pareto-stationary
    point, no Nash solution) keeps shrinking instead of being blown up. It is
    meant for Nash weights; for weightings on the simplex use ``"convex"``.

  Example:
    >>> import jax.numpy as jnp, pub_optax
    >>> pub_optax.scale_weights(jnp.array([1.0, 3.0]), "convex", num_shared=10).tolist()
    [0.25, 0.75]
  """
  if scaling == "raw":
    return weights
  if scaling == "convex":
    total = jnp.sum(weights)
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), weights)
  return weights * jnp.sqrt(num_shared / weights.shape[0]).astype(weights.dtype)


def _weights_dtype(params) -> Any:
  dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
  return jnp.promote_types(jnp.result_type(*dtypes) if dtypes else jnp.float32, jnp.float32)


def _check_options(level, scaling, per_task_state, num_tasks, refresh_every, weighting,
                   lookahead, commit) -> None:  # fmt: skip
  if level not in LEVELS:
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
  if lookahead not in LOOKAHEADS:
    raise ValueError(f"lookahead must be one of {LOOKAHEADS}, got {lookahead!r}")
  if commit not in COMMITS:
    raise ValueError(f"commit must be one of {COMMITS}, got {commit!r}")
  if lookahead == "fresh" and level != "update":
    raise ValueError("lookahead='fresh' needs level='update' (it splits the inner look-ahead)")
  if scaling not in SCALINGS:
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
  if per_task_state and level != "update":
    raise ValueError("per_task_state=True needs level='update' (its per-task updates are real)")
  if not isinstance(weighting, Weighting):
    raise TypeError(f"weighting must be a pub_optax.weightings.Weighting, got {type(weighting)}")
  for name, value in (("num_tasks", num_tasks), ("refresh_every", refresh_every)):
    if not isinstance(value, jax.core.Tracer) and (int(value) != value or int(value) < 1):
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if weighting.kind == "coordinate":
    _check_coordinate_options(weighting.name, refresh_every, scaling, lookahead, commit)


def _check_coordinate_options(name, refresh_every, scaling, lookahead, commit) -> None:
  """A coordinate-kind rule produces the direction at every step: no reuse, no rescaling."""
  what = f"the {name!r} weighting combines the task vectors coordinate by coordinate at every step"
  if isinstance(refresh_every, jax.core.Tracer) or refresh_every != 1:
    raise ValueError(f"{what}, so refresh_every must be 1, got {refresh_every!r}")
  if scaling != "raw":
    raise ValueError(f"{what} (no weights to rescale), so scaling must be 'raw', got {scaling!r}")
  if lookahead != "full":
    raise ValueError(f"{what}, so lookahead must be 'full', got {lookahead!r}")
  if commit != "scaled":
    raise ValueError(f"{what}, so commit must be 'scaled' (the rule itself), got {commit!r}")


class _Solved(NamedTuple):
  weights: Array
  weighting: Any
  residual: Array
  diagnostics: BalanceDiagnostics
  direction: tuple = ()  # coordinate kind: the combined shared leaves


def _shared(tree, mask) -> tuple:
  """The leaves of ``tree`` where ``mask`` is True, in tree order."""
  return tuple(x for x, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask)) if m)


def _with_shared(tree, shared: tuple, mask):
  """``tree`` with its leaves where ``mask`` is True replaced, in order, by ``shared``
  (each cast to the dtype of the leaf it replaces)."""
  replacements = iter(shared)
  leaves = [
    next(replacements).astype(x.dtype) if m else x
    for x, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask))
  ]
  return jax.tree.unflatten(jax.tree.structure(tree), leaves)


def _sq_norms(vectors, mask) -> Array:
  """``(K,)`` squared norms of the K stacked vectors over the leaves where ``mask`` is True."""
  norms = [
    jnp.sum(jnp.square(v.astype(jnp.promote_types(v.dtype, jnp.float32))).reshape(v.shape[0], -1), 1)
    for v, m in zip(jax.tree.leaves(vectors), jax.tree.leaves(mask))
    if m
  ]  # fmt: skip
  return sum(norms[1:], norms[0])


def _cosines(gram: Array) -> Array:
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
  outer = norms[:, None] * norms[None, :]
  return jnp.where(outer > 0, gram / jnp.where(outer > 0, outer, 1.0), 0.0)


class _Step(NamedTuple):
  """The balancing step on dense (or compacted row-sparse) task gradients.

  Every method closes over the transformation's static options, so the code paths
  (gradient or update level, Gram or loss weighting, per-task state, refresh period,
  look-ahead split, committed weights) are fixed when the transformation is built.
  """

  inner: optax.GradientTransformationExtraArgs
  weighting: Weighting
  level: Level
  scaling: Scaling
  refresh_every: int
  per_task_state: bool
  lookahead: Lookahead
  commit: Commit
  diagnostics: bool

  @property
  def needs_history(self) -> bool:
    return self.level == "update" and (self.diagnostics or self.lookahead == "fresh")

  def vectors(self, grads, inner_state, params, extra):
    """The K vectors to balance and, with per-task state, the K advanced inner states."""
    if self.level == "gradient":
      return grads, None
    axis = 0 if self.per_task_state else None
    return jax.vmap(lambda g, s: self.inner.update(g, s, params, **extra), in_axes=(0, axis))(
      grads, inner_state
    )

  def history(self, grads, inner_state, params, extra):
    """``(K, ...)`` look-aheads of a zero gradient: what the committed state alone moves.

    One inner step with a shared state (broadcast over the task axis); K with per-task states.
    """
    zero = jax.tree.map(lambda g: jnp.zeros_like(g[0]), grads)
    if self.per_task_state:
      return jax.vmap(lambda s: self.inner.update(zero, s, params, **extra)[0])(inner_state)
    h, _ = self.inner.update(zero, inner_state, params, **extra)
    return jax.tree.map(lambda x, g: jnp.broadcast_to(x[None], g.shape), h, grads)

  def solve(self, vectors, history, mask, state, task_losses, num_shared, gram_offset):
    """Weights (scaled), weighting state, residual and diagnostics."""
    w = self.weighting
    losses = task_losses if w.needs_losses else None
    k = state.weights.shape[0]
    dtype = state.weights.dtype
    balanced, balanced_offset = vectors, gram_offset
    if self.lookahead == "fresh":  # rows outside a batch have no fresh part
      balanced, balanced_offset = jax.tree.map(jnp.subtract, vectors, history), 0.0
    direction = ()
    if w.kind == "gram":
      gram = gram_matrix(balanced, mask) + jnp.asarray(balanced_offset, jnp.float32)
      res = w.weigh(gram, state.weighting, losses)
      cosines = _cosines(gram).astype(dtype)
    elif w.kind == "coordinate":
      res = w.weigh(_shared(balanced, mask), state.weighting, losses)
      direction = res.direction
      cosines = _cosines(gram_matrix(balanced, mask)).astype(dtype)
    else:
      res = w.weigh(losses, state.weighting)
      cosines = jnp.zeros((k, k), dtype)
    share = jnp.zeros((k,), dtype)
    if history is not None:
      full = _sq_norms(vectors, mask) + gram_offset
      past = _sq_norms(history, mask) + gram_offset
      share = jnp.where(full > 0, past / jnp.where(full > 0, full, 1.0), 0.0).astype(dtype)
    raw = jnp.asarray(res.weights, dtype)
    return _Solved(
      scale_weights(raw, self.scaling, num_shared),
      res.state,
      jnp.asarray(res.residual, state.residual.dtype),
      BalanceDiagnostics(raw, cosines, share),
      direction,
    )

  def refreshed(self, solve, state) -> _Solved:
    """``solve()`` every ``refresh_every`` steps, the state's last weights in between."""
    if isinstance(self.refresh_every, int) and self.refresh_every == 1:
      return solve()
    keep = lambda: _Solved(state.weights, state.weighting, state.residual, state.diagnostics)
    return jax.lax.cond(state.count % self.refresh_every == 0, solve, keep)

  def combine(self, weights, vectors, grads, task_states, inner_state, params, mask, extra):
    """The balanced direction and the new inner state."""
    weigh_all = self.weighting.kind == "loss"

    def mix(stacked, w):  # in the gradients' dtype, so the inner state keeps its dtypes
      return jax.tree.map(
        lambda x, m: (weighted_sum(w, x) if (m or weigh_all) else task_sum(x)).astype(x.dtype),
        stacked,
        mask,
      )

    if self.per_task_state:
      return mix(vectors, weights), task_states
    commit = scale_weights(weights, "convex", 0) if self.commit == "convex" else weights
    committed, inner_state = self.inner.update(mix(grads, commit), inner_state, params, **extra)
    if self.level == "gradient":
      return committed, inner_state
    balanced = lambda v, c, m: weighted_sum(weights, v) if m else c
    return jax.tree.map(balanced, vectors, committed, mask), inner_state

  def combine_coordinates(self, solved, vectors, grads, task_states, inner_state, params, mask,
                          extra, state, task_losses):  # fmt: skip
    """:meth:`combine` for a coordinate-kind rule, whose ``solved.direction`` is the shared step.

    Gradient level: the rule's combined gradient on shared leaves (``Σ_k g_k`` elsewhere)
    feeds the inner optimizer. Update level: shared leaves take the rule's combination of the
    look-aheads, and the inner state advances with the rule applied to the gradients, from the
    same incoming rule state (whose second new state is dropped). Per-task states: shared
    leaves take the combined look-aheads, the others ``Σ_k d_k``.
    """
    summed = lambda stacked: jax.tree.map(lambda x: task_sum(x).astype(x.dtype), stacked)
    if self.per_task_state:
      return _with_shared(summed(vectors), solved.direction, mask), task_states
    combined = solved.direction
    if self.level == "update":
      losses = task_losses if self.weighting.needs_losses else None
      combined = self.weighting.weigh(_shared(grads, mask), state.weighting, losses).direction
    fed = _with_shared(summed(grads), combined, mask)
    committed, inner_state = self.inner.update(fed, inner_state, params, **extra)
    if self.level == "gradient":
      return committed, inner_state
    return _with_shared(committed, solved.direction, mask), inner_state

  def __call__(self, grads, inner_state, params, state, mask, num_shared, task_losses, extra,
               gram_offset=0.0, clean=lambda v: v):  # fmt: skip
    """One step: ``(direction, inner_state, solved)``."""
    vectors, task_states = self.vectors(grads, inner_state, params, extra)
    vectors = clean(vectors)
    history = None
    if self.needs_history:
      history = clean(self.history(grads, inner_state, params, extra))
    solve = lambda: self.solve(vectors, history, mask, state, task_losses, num_shared, gram_offset)
    solved = self.refreshed(solve, state)
    if self.weighting.kind == "coordinate":
      direction, inner_state = self.combine_coordinates(
        solved, vectors, grads, task_states, inner_state, params, mask, extra, state, task_losses
      )
    else:
      direction, inner_state = self.combine(
        solved.weights, vectors, grads, task_states, inner_state, params, mask, extra
      )
    return direction, inner_state, solved


def _row_sparse_step(step: _Step, tables: TableRows, state, params, mask, num_shared,
                     task_losses, extra):  # fmt: skip
  """The same step on the batch rows of every lookup table, expanded to the full tables.

  The rows outside the batch take one zero-gradient inner step, the same for every task:
  at update level it enters the Gram matrix as one shared term, and moves a balanced leaf
  by ``Σ_k α̂_k`` times that step (a task-summed one by the step itself).
  """
  if step.per_task_state:
    raise ValueError(
      "per_task_state=True does not take row-sparse task gradients (it keeps K dense "
      "inner states); pass dense gradients"
    )
  inner = step.inner
  base_direction, base_state = tables.zero_gradient_step(inner, state.inner, params, **extra)
  offset = tables.untouched_sq_norm(base_direction, mask) if step.level == "update" else 0.0
  direction, inner_state, solved = step(
    tables.compact_grads,
    tables.gather_state(inner, state.inner),
    None if params is None else tables.gather(params),
    state,
    mask,
    num_shared,
    task_losses,
    extra,
    gram_offset=offset,
    clean=tables.zero_padding,
  )
  total = jnp.sum(solved.weights)
  scale = jax.tree.map(lambda m: total if (m and step.level == "update") else 1.0, mask)
  direction = tables.expand(direction, base_direction, scale)
  inner_state = tables.merge_state(inner, base_state, inner_state)
  return direction, inner_state, solved


def scale_by_balance(
  inner: optax.GradientTransformation,
  weighting: Weighting,
  *,
  num_tasks: int,
  level: Level = "update",
  shared: SharedSpec = None,
  refresh_every: int = 1,
  scaling: Scaling = "raw",
  per_task_state: bool = False,
  lookahead: Lookahead = "full",
  commit: Commit = "scaled",
  diagnostics: bool = False,
  exact_on_rows: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Balances K tasks with ``weighting`` at gradient or update level (learning-rate free).

  For per-task gradients ``g_k`` (leaves ``(K, *param_shape)``) and inner state ``s``,
  the output direction ``u`` (params-shaped, in the params' dtype) is

  .. math::

    u_{\text{shared}} = \sum_k \hat\alpha_k\, v_k,\qquad
    v_k = \begin{cases} \text{inner}(g_k, s) & \text{update level (PUB)}\\
    g_k \text{ then one inner step of } \sum_k \hat\alpha_k g_k & \text{gradient level}
    \end{cases}

  with ``α̂ = scaling(weighting(V Vᵀ))`` over the shared leaves; task-specific leaves get
  the inner step of ``Σ_k g_k``. Follow it with ``optax.scale_by_learning_rate`` (as
  :func:`balance` does).

  A coordinate-kind weighting (``weighting.kind == "coordinate"``: GradDrop, trimmed
  mean, MoCo, ExcessMTL) replaces ``Σ_k α̂_k v_k`` on the shared leaves by its own
  combination ``rule(v_1, …, v_K)``. At gradient level that combined gradient feeds the
  inner optimizer; at update level the combined look-aheads move the shared leaves and
  the inner state advances with the same rule applied to the gradients (from the same
  incoming rule state, so a random rule draws the same numbers for both; a state kept in
  the vectors' units, such as MoCo's tracked vectors or ExcessMTL's accumulated squares,
  then follows the look-aheads, and the committed rule meets the gradients with it).
  Such a rule runs at every step (``refresh_every=1``, ``scaling="raw"``,
  ``lookahead="full"``, ``commit="scaled"``; others are refused) and does not take
  row-sparse table gradients. :attr:`BalanceState.weights` then holds what the rule reports (see
  :class:`~pub_optax.weightings.CoordinateResult`), and the cosines are those of the
  task vectors it combined.

  Args:
    inner: learning-rate-free inner direction, e.g. ``optax.scale_by_adam()``.
    weighting: a :class:`~pub_optax.weightings.Weighting`.
    num_tasks: K, the size of the leading task axis of the gradients (≥ 1).
    level: ``"update"`` (PUB: weigh the inner optimizer's per-task updates) or
      ``"gradient"`` (classic: weigh the per-task gradients).
    shared: which leaves are shared by the tasks and balanced: ``None`` (all), a bool,
      a pytree (or prefix) of bools, possibly Flax NNX-wrapped, or a callable on the
      params; see :func:`pub_optax.resolve_shared`. Other leaves get the inner update
      of the task-summed gradient.
    refresh_every: recompute the weights every this many steps (≥ 1) and reuse
      them in between (``jax.lax.cond``; the solver is warm-started).
    scaling: ``"raw"``, ``"rms"`` or ``"convex"``; see :func:`scale_weights`.
    per_task_state: keep one inner state per task (AdaTask-style); the per-task
      updates are then real updates (each task's state advances with its own
      gradient) and task-specific leaves receive ``Σ_k d_k``. Memory K× the inner
      state. Only with ``level="update"``.
    lookahead: ``"full"`` balances the look-aheads ``d_k``; ``"fresh"`` computes the
      weights from ``d_k − h``, the look-aheads minus the zero-gradient look-ahead
      ``h = inner(0, s)`` that the committed state gives every task alike, and still
      applies ``Σ_k α̂_k d_k``. Only with ``level="update"``; one more inner step.
    commit: which weights build the gradient ``Σ_k w_k g_k`` that advances the inner
      state: ``"scaled"`` (α̂, the applied weights) or ``"convex"`` (``α / Σα``, so the
      state stays in the units of one task's gradient whatever ``scaling`` does to the
      applied step).
    diagnostics: also record :attr:`BalanceDiagnostics.history_share` (one more inner
      step at update level); the raw weights and the cosines are always recorded.
    exact_on_rows: False for an ``inner`` that couples the coordinates of a tensor
      (per-tensor clipping, factored moments): row-sparse table gradients are then
      refused, since the step on the batch rows would not be the dense one.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`BalanceState`. Its
    ``update(task_grads, state, params=None, *, task_losses=None, **extra)`` passes
    ``extra`` on to ``inner``. A leaf of ``task_grads`` may be a
    :class:`~pub_optax.RowSparse` (a lookup table's gradients at the batch's rows):
    the step then runs on those rows plus one zero-gradient inner step for the rest,
    the dense result for a coordinate-wise ``inner``.

  Example:
    >>> import jax.numpy as jnp, optax, pub_optax
    >>> tx = pub_optax.scale_by_balance(optax.scale_by_adam(), pub_optax.weightings.nash(),
    ...                                 num_tasks=2, scaling="convex")
    >>> params = {"w": jnp.zeros(2)}
    >>> direction, state = tx.update({"w": jnp.array([[1.0, 0.0], [0.0, 3.0]])},
    ...                              tx.init(params))
    >>> [round(x, 4) for x in direction["w"].tolist()], state.weights.tolist()
    ([0.5, 0.5], [0.5, 0.5])
  """
  _check_options(
    level, scaling, per_task_state, num_tasks, refresh_every, weighting, lookahead, commit
  )
  inner = optax.with_extra_args_support(inner)
  step = _Step(
    inner, weighting, level, scaling, refresh_every, per_task_state, lookahead, commit, diagnostics
  )

  def init_fn(params):
    k = int(num_tasks)  # concrete at init, also under optax.inject_hyperparams
    dtype = _weights_dtype(params)
    inner_state = inner.init(params)
    if weighting.kind != "coordinate":
      weighting_state = weighting.init(k, dtype)
    elif jax.tree.leaves(params):
      weighting_state = weighting.init(k, dtype, _shared_shapes(params, shared))
    else:  # optax.tree.map_params initialises with a leafless placeholder: one leaf stands for
      # the rule's state (sized by the shared leaves), a field that is not params-shaped
      weighting_state = jnp.zeros((), dtype)
    if per_task_state:
      inner_state = jax.tree.map(lambda s: jnp.repeat(jnp.asarray(s)[None], k, 0), inner_state)
    return BalanceState(
      count=jnp.zeros((), jnp.int32),
      inner=inner_state,
      weights=jnp.ones((k,), dtype),
      weighting=weighting_state,
      residual=jnp.zeros((), dtype),
      params=shape_templates(params),
      diagnostics=BalanceDiagnostics(
        jnp.ones((k,), dtype), jnp.zeros((k, k), dtype), jnp.zeros((k,), dtype)
      ),
    )

  def update_fn(task_grads, state, params=None, *, task_losses=None, **extra):
    k = state.weights.shape[0]
    check_task_grads(task_grads, k, state.params)
    check_task_losses(task_losses, k, weighting.name, weighting.needs_losses)
    reference = jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype), state.params)
    mask = resolve_shared(shared, reference)
    num_shared = sum(math.prod(r.shape) for r, m in zip(jax.tree.leaves(reference), jax.tree.leaves(mask)) if m)  # fmt: skip
    if num_shared == 0 and weighting.kind in ("gram", "coordinate"):
      raise ValueError("the `shared` mask selects no leaf: nothing to balance")
    tables = TableRows.of(task_grads)
    if tables is not None and weighting.kind == "coordinate":
      raise ValueError(
        f"the {weighting.name!r} weighting combines the task vectors coordinate by coordinate "
        "(its state and the rows outside the batch would need every table row), so it does not "
        "take row-sparse (RowSparse) table gradients; pass dense task gradients"
      )
    if tables is not None and not exact_on_rows:
      raise ValueError(
        "this inner optimizer couples the coordinates of a tensor (exact_on_rows=False), so "
        "row-sparse (RowSparse) table gradients would not give the dense result; pass dense "
        "task gradients"
      )
    args = (mask, num_shared, task_losses, extra)
    if tables is None:
      out = step(task_grads, state.inner, params, state, *args)
    else:
      out = _row_sparse_step(step, tables, state, params, *args)
    direction, inner_state, solved = out
    direction = jax.tree.map(lambda d, r: d.astype(r.dtype), direction, reference)
    new_state = BalanceState(
      count=optax.safe_increment(state.count),
      inner=inner_state,
      weights=solved.weights,
      weighting=solved.weighting,
      residual=solved.residual,
      params=state.params,
      diagnostics=solved.diagnostics,
    )
    return direction, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _shared_shapes(params, shared: SharedSpec) -> tuple:
  """The shapes and dtypes of the shared leaves of ``params`` (for a coordinate rule's state)."""
  reference = jax.tree.map(lambda p: jax.ShapeDtypeStruct(jnp.shape(p), jnp.result_type(p)), params)
  return _shared(reference, resolve_shared(shared, reference))


def balance(
  inner: optax.GradientTransformation,
  weighting: Weighting,
  learning_rate: optax.ScalarOrSchedule,
  *,
  num_tasks: int,
  level: Level = "update",
  shared: SharedSpec = None,
  refresh_every: int = 1,
  scaling: Scaling = "raw",
  per_task_state: bool = False,
  lookahead: Lookahead = "full",
  commit: Commit = "scaled",
  diagnostics: bool = False,
  exact_on_rows: bool = True,
  weight_decay: chex.Numeric = 0.0,
  weight_decay_mask: SharedSpec = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Balancing with a learning rate: ``scale_by_balance``, weight decay once, then ``−η``.

  ``optax.chain(scale_by_balance(inner, weighting, ...), optax.add_decayed_weights(
  weight_decay, weight_decay_mask), optax.scale_by_learning_rate(learning_rate))``;
  the decay step is left out when ``weight_decay`` is the literal 0.

  Args:
    inner, weighting, num_tasks, level, shared, refresh_every, scaling, per_task_state, lookahead, commit, diagnostics, exact_on_rows:
      see :func:`scale_by_balance`.
    learning_rate: float or optax schedule (``η``).
    weight_decay: decoupled weight decay ``λ`` (``Δθ −= η·λ·θ``), applied once per
      step; needs ``params`` in ``update``.
    weight_decay_mask: which leaves decay (the forms ``shared`` takes).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a tuple holding a
    :class:`BalanceState` (find it with :func:`pub_optax.balance_state`).

  Non-finite gradients give non-finite updates and inner state, as in optax. To
  skip such steps with the whole state (weights included) left untouched, wrap
  the transformation in :func:`pub_optax.apply_if_finite`.

  Example:
    >>> import jax.numpy as jnp, optax, pub_optax
    >>> tx = pub_optax.balance(optax.scale_by_adam(), pub_optax.weightings.nash(),
    ...                        1e-3, num_tasks=2, scaling="rms")
    >>> params = {"w": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])}
    >>> updates, state = tx.update(grads, state, params)
    >>> updates["w"].shape, pub_optax.balance_state(state).weights.shape
    ((3,), (2,))
  """
  core = scale_by_balance(
    inner,
    weighting,
    num_tasks=num_tasks,
    level=level,
    shared=shared,
    refresh_every=refresh_every,
    scaling=scaling,
    per_task_state=per_task_state,
    lookahead=lookahead,
    commit=commit,
    diagnostics=diagnostics,
    exact_on_rows=exact_on_rows,
  )
  parts = [core]
  if not (isinstance(weight_decay, int | float) and weight_decay == 0):
    parts.append(_decay(weight_decay, weight_decay_mask))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)


def _decay(weight_decay, mask: SharedSpec) -> optax.GradientTransformation:
  """``optax.add_decayed_weights`` with a mask in any form :func:`resolve_shared` takes."""
  if mask is None:
    return optax.add_decayed_weights(weight_decay)
  return optax.add_decayed_weights(weight_decay, lambda params: resolve_shared(mask, params))


def balance_state(opt_state) -> BalanceState | None:
  """The :class:`BalanceState` inside any (chained, injected, wrapped) optimizer state.

  Searches tuples, lists, dicts and NamedTuples depth first, so it finds the balancing
  state under ``optax.chain``, ``optax.inject_hyperparams``,
  :func:`pub_optax.apply_if_finite`, :func:`pub_optax.multi_steps` or ``nnx.Optimizer``'s
  ``opt_state`` (after ``nnx.as_pure``). Its ``weights`` are the task weights of the last
  step, ``residual`` the solver's diagnostic.

  Returns:
    The first :class:`BalanceState` found, or ``None``.

  Example:
    >>> import jax.numpy as jnp, optax, pub_optax
    >>> tx = optax.chain(pub_optax.pub_adam(1e-3, num_tasks=2), optax.clip(1.0))
    >>> state = tx.init(jnp.zeros(2))
    >>> pub_optax.balance_state(state).weights.tolist()
    [1.0, 1.0]
  """
  return _find_balance_state(unwrap_variables(opt_state))


def _find_balance_state(opt_state) -> BalanceState | None:
  if isinstance(opt_state, BalanceState):
    return opt_state
  if isinstance(opt_state, dict):
    children = opt_state.values()
  elif isinstance(opt_state, tuple | list):
    children = opt_state
  else:
    children = ()
  for child in children:
    found = _find_balance_state(child)
    if found is not None:
      return found
  return None
