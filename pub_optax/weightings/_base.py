"""The weighting protocol: a K×K Gram matrix (and optional task losses) in, K task weights out.

Every balancing method in pub_optax is a :class:`Weighting`. The same weighting can
be applied to per-task *gradients* (the classic methods: MGDA, Nash-MTL, ...) or to
the inner optimizer's per-task *updates* (PUB) by :func:`pub_optax.balance`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class WeightingResult(NamedTuple):
  """What one call of a weighting returns.

  Attributes:
    weights: ``(K,)`` task weights, finite.
    state: the weighting's new state (warm start, PRNG key, loss history, ...).
    residual: scalar diagnostic of the solve, ``0`` for closed-form methods. For
      iterative solvers it is the relative residual of the method's defining
      conditions, so a user can log it.
  """

  weights: Array
  state: Any
  residual: Array


class Weighting(NamedTuple):
  """A pure, jittable map from a Gram matrix to task weights.

  Attributes:
    init: ``init(num_tasks, dtype) -> state``.
    weigh: ``weigh(gram, state, task_losses) -> WeightingResult``; ``gram`` is
      ``(K, K)`` and ``task_losses`` is ``(K,)`` or ``None``.
    name: short name used in registries and error messages.
    needs_gram: False for loss-level methods, so the Gram matrix is not built.
    needs_losses: True when ``task_losses`` must be passed to ``update``.
  """

  init: Callable[[int, Any], Any]
  weigh: Callable[[Array, Any, Array | None], WeightingResult]
  name: str
  needs_gram: bool = True
  needs_losses: bool = False


def stateless(name: str, fn: Callable[[Array], Any]) -> Weighting:
  """Wraps a stateless ``fn(gram)`` as a :class:`Weighting`.

  ``fn`` returns the weights, or a plain ``(weights, residual)`` tuple when it has a
  solver diagnostic to report (the residual is 0 otherwise).
  """

  def init(num_tasks, dtype):
    del num_tasks, dtype
    return ()

  def weigh(gram, state, task_losses=None):
    del task_losses
    out = fn(gram)
    weights, residual = out if type(out) is tuple else (out, jnp.zeros((), out.dtype))
    return WeightingResult(weights, state, residual)

  return Weighting(init=init, weigh=weigh, name=name)


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
