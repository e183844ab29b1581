"""The weighting protocol: a K×K Gram matrix (and optional task losses) in, K task weights out.

Every balancing method in pub_optax is a :class:`Weighting`. The same weighting can
be applied to per-task *gradients* (the classic methods: MGDA, Nash-MTL, ...) or to
the inner optimizer's per-task *updates* (PUB) by :func:`pub_optax.balance`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class WeightingResult(NamedTuple):
  """What one call of a weighting returns.

  Attributes:
    weights: ``(K,)`` task weights: finite for a finite Gram matrix; NaN (with an
      infinite residual) when the Gram matrix has a NaN or Inf entry, so that
      :func:`pub_optax.apply_if_finite` rejects the step.
    state: the weighting's new state (warm start, PRNG key, loss history, ...).
    residual: scalar diagnostic of the solve, ``0`` for closed-form methods. For
      iterative solvers it is the relative residual of the method's defining
      conditions, so a user can log it.
  """

  weights: Array
  state: Any
  residual: Array


Kind = Literal["gram", "loss"]
"""What a weighting reads: the Gram matrix of the task vectors, or only the task losses."""


class Weighting(NamedTuple):
  """A pure, jittable rule that gives K task weights, of one of two kinds.

  * ``kind="gram"``: ``weigh(gram, state, task_losses) -> WeightingResult``, with
    ``gram`` the ``(K, K)`` Gram matrix of the task vectors (gradients or updates)
    and ``task_losses`` the ``(K,)`` losses when ``needs_losses`` (else ``None``).
  * ``kind="loss"``: ``weigh(task_losses, state) -> WeightingResult``; the weights
    define the loss ``Σ_k w_k L_k``, so :func:`pub_optax.balance` builds no Gram
    matrix and applies them to every leaf. ``task_losses`` is ``None`` unless
    ``needs_losses`` (constant and random weightings read only their state).

  Attributes:
    init: ``init(num_tasks, dtype) -> state``.
    weigh: see above.
    name: short name used in registries and error messages.
    kind: ``"gram"`` or ``"loss"``.
    needs_losses: True when ``task_losses`` must be passed to ``update``.
  """

  init: Callable[[int, Any], Any]
  weigh: Callable[..., WeightingResult]
  name: str
  kind: Kind = "gram"
  needs_losses: bool = False


def _no_state(num_tasks, dtype):
  del num_tasks, dtype
  return ()


def stateless(name: str, fn: Callable[[Array], Array]) -> Weighting:
  """A Gram weighting from a closed form ``fn(gram) -> weights`` (residual 0).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import stateless
    >>> w = stateless("inverse_norm", lambda g: 1.0 / jnp.sqrt(jnp.diagonal(g)))
    >>> w.weigh(jnp.diag(jnp.array([4.0, 1.0])), w.init(2, jnp.float32), None).weights.tolist()
    [0.5, 1.0]
  """

  def weigh(gram, state, task_losses=None):
    del task_losses
    weights = fn(gram)
    return WeightingResult(weights, state, jnp.zeros((), weights.dtype))

  return Weighting(init=_no_state, weigh=weigh, name=name)


def stateless_solver(name: str, solve: Callable[[Array], tuple[Array, Array]]) -> Weighting:
  """A Gram weighting from an iterative ``solve(gram) -> (weights, residual)``."""

  def weigh(gram, state, task_losses=None):
    del task_losses
    weights, residual = solve(gram)
    return WeightingResult(weights, state, residual)

  return Weighting(init=_no_state, weigh=weigh, name=name)


def solve_dtype(x: Array):
  """The dtype the solvers compute in: the input's, but at least float32."""
  return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def symmetric_gram(gram: Array) -> Array:
  """``(G + Gᵀ)/2`` in the solve dtype: solvers see an exactly symmetric matrix."""
  g = jnp.asarray(gram, solve_dtype(gram))
  return 0.5 * (g + g.T)


def unit_gram(gram: Array) -> tuple[Array, Array, Array]:
  """The symmetric Gram divided by its largest diagonal entry, for scale-free solvers.

  Returns:
    ``(normalised, scale, nonzero)``; a zero (or all-negligible) Gram stays zero
    and ``nonzero`` is False.
  """
  g = symmetric_gram(gram)
  scale = jnp.max(jnp.diagonal(g))
  nonzero = scale > jnp.finfo(g.dtype).tiny
  return jnp.where(nonzero, g / jnp.where(nonzero, scale, 1.0), 0.0), scale, nonzero


def check_gram(gram: Array) -> None:
  """Raises a ValueError at trace time unless ``gram`` is a square matrix."""
  if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
    raise ValueError(f"gram must be a square (K, K) matrix, got shape {gram.shape}")
  if gram.shape[0] < 1:
    raise ValueError("gram must describe at least one task (K >= 1), got K = 0")
