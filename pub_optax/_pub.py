"""PUB — Parameter Update Balancing: Nash bargaining over the inner optimizer's per-task updates."""

from __future__ import annotations

import chex
import optax

from pub_optax._balance import Commit, Lookahead, SharedSpec, balance
from pub_optax.weightings._base import Weighting
from pub_optax.weightings._nash import nash

# Convex weights keep the inner optimizer's step size (identical tasks give exactly the inner
# step), so learning rates tuned for equal weighting carry over; the ranking study in
# benchmarks/ranking.py compares the three scalings.
DEFAULT_SCALING = "convex"


def pub(
  direction: optax.GradientTransformation,
  learning_rate: optax.ScalarOrSchedule,
  *,
  num_tasks: int,
  shared: SharedSpec = None,
  refresh_every: int = 1,
  scaling: str | None = None,
  per_task_state: bool = False,
  weighting: Weighting | None = None,
  weight_decay: chex.Numeric = 0.0,
  weight_decay_mask: SharedSpec = None,
  lookahead: Lookahead = "full",
  commit: Commit = "scaled",
  diagnostics: bool = False,
  exact_on_rows: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Parameter Update Balancing around any learning-rate-free optax direction.

  For per-task gradients ``g_k`` (leaves ``(K, *param_shape)``) PUB computes what
  the inner optimizer would do for each task alone, ``d_k = direction(g_k, s)``,
  solves the Nash bargaining weights ``α_k (Mα)_k = 1`` on the Gram matrix
  ``M = D Dᵀ`` of those updates over the shared leaves, and moves the shared leaves
  by ``−η Σ_k α̂_k d_k``, where ``α̂`` is α after ``scaling``. Task-specific leaves
  receive the inner step of ``Σ_k g_k``; the inner state advances once with the
  α̂-weighted gradient. See :func:`pub_optax.balance` for every argument.

  The default ``scaling="convex"`` normalises ``Σ α̂ = 1``: the Nash direction with
  Adam's step size (identical tasks give exactly Adam; a learning rate tuned for
  equal weighting carries over). ``"rms"`` sets the RMS of the direction to 1 per
  shared coordinate; ``"raw"`` is the published scaling (``‖Σ α_k d_k‖ = √K``
  whatever the model size, which freezes models with many shared parameters).
  Only ``"rms"`` and ``"raw"`` (equal on the toy) reproduce the paper's toy figure.

  Args:
    direction: learning-rate-free inner transformation, e.g. ``optax.scale_by_adam()``.
    learning_rate: float or schedule.
    num_tasks: K.
    shared, refresh_every, scaling, per_task_state, weight_decay, weight_decay_mask, lookahead, commit, diagnostics, exact_on_rows:
      see :func:`pub_optax.balance`.
    weighting: defaults to :func:`pub_optax.weightings.nash`; any other
      weighting gives update-level balancing with that rule.
    scaling: ``None`` picks ``"convex"`` (:data:`DEFAULT_SCALING`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`~pub_optax.BalanceState`
    (``pub_optax.balance_state(state).weights`` are the applied weights).

  Example:
    >>> import jax.numpy as jnp, optax, pub_optax
    >>> tx = pub_optax.pub(optax.scale_by_adam(), 0.1, num_tasks=2)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> task_grads = jnp.array([[1.0, 0.0], [0.0, 3.0]])
    >>> updates, state = tx.update(task_grads, state, params)
    >>> [round(float(u), 4) for u in updates]  # α = (1, 1) on orthogonal updates, convex: ½ each
    [-0.05, -0.05]

  References:
    Yuan, Cai & Dong, "A Parameter Update Balancing Algorithm for Multi-task
    Ranking Models in Recommendation Systems", arXiv 2410.05806.
  """
  if scaling is None:
    scaling = DEFAULT_SCALING
  return balance(
    direction,
    nash() if weighting is None else weighting,
    learning_rate,
    num_tasks=num_tasks,
    level="update",
    shared=shared,
    refresh_every=refresh_every,
    scaling=scaling,
    per_task_state=per_task_state,
    lookahead=lookahead,
    commit=commit,
    diagnostics=diagnostics,
    exact_on_rows=exact_on_rows,
    weight_decay=weight_decay,
    weight_decay_mask=weight_decay_mask,
  )


def pub_adam(
  learning_rate: optax.ScalarOrSchedule,
  b1: chex.Numeric = 0.9,
  b2: chex.Numeric = 0.999,
  eps: chex.Numeric = 1e-8,
  weight_decay: chex.Numeric = 0.0,
  *,
  num_tasks: int,
  shared: SharedSpec = None,
  refresh_every: int = 1,
  scaling: str | None = None,
  per_task_state: bool = False,
  weighting: Weighting | None = None,
  weight_decay_mask: SharedSpec = None,
  lookahead: Lookahead = "full",
  commit: Commit = "scaled",
  diagnostics: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""PUB with Adam directions and decoupled weight decay applied once per step.

  ``pub(optax.scale_by_adam(b1, b2, eps), learning_rate, weight_decay=...)``: the
  per-task look-ahead uses the new step count for bias correction, and weight
  decay is added once to the balanced update (not once per task).

  Args:
    learning_rate: float or schedule.
    b1, b2, eps: Adam's hyper-parameters.
    weight_decay: decoupled (AdamW-style) weight decay.
    num_tasks: K.
    shared, refresh_every, scaling, per_task_state, weighting, weight_decay_mask, lookahead, commit, diagnostics:
      see :func:`pub` (spelled out rather than ``**kwargs`` so that
      ``optax.inject_hyperparams(pub_adam)`` can bind them).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, pub_optax
    >>> def losses(w):
    ...   return jnp.stack([jnp.sum((w - 1.0) ** 2), jnp.sum((w + 1.0) ** 2)])
    >>> tx = pub_optax.pub_adam(optax.linear_schedule(0.1, 0.0, 300), num_tasks=2)
    >>> @jax.jit
    ... def step(w, state):
    ...   _, g = pub_optax.value_and_task_grads(losses)(w)
    ...   u, state = tx.update(g, state, w)
    ...   return w + u, state
    >>> w = jnp.array([3.0, -2.0]); state = tx.init(w)
    >>> for _ in range(300):
    ...   w, state = step(w, state)
    >>> # On the Pareto set: the segment between the optima (1, 1) and (-1, -1).
    >>> bool(abs(w[0] - w[1]) < 0.1 and abs(w[0]) < 1.0)
    True
  """
  return pub(
    optax.scale_by_adam(b1, b2, eps),
    learning_rate,
    num_tasks=num_tasks,
    shared=shared,
    refresh_every=refresh_every,
    scaling=scaling,
    per_task_state=per_task_state,
    weighting=weighting,
    weight_decay=weight_decay,
    weight_decay_mask=weight_decay_mask,
    lookahead=lookahead,
    commit=commit,
    diagnostics=diagnostics,
  )
