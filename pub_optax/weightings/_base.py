"""The weighting protocol: a K×K Gram matrix (and optional task losses) in, K task weights out.

Every balancing method in pub_optax is a :class:`Weighting`. The same weighting can
be applied to per-task *gradients* (the classic methods: MGDA, Nash-MTL, ...) or to
the inner optimizer's per-task *updates* (PUB) by :func:`pub_optax.balance`. Rules
that combine the K task vectors coordinate by coordinate (GradDrop, a trimmed mean)
or keep per-coordinate state (MoCo, ExcessMTL) are weightings of a third kind,
``"coordinate"``, that return the combined direction itself.
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


class CoordinateResult(NamedTuple):
  """What one call of a coordinate-kind weighting returns.

  Attributes:
    direction: tuple of the combined shared leaves, one params-shaped array per
      shared leaf (in the order of the ``vectors`` it was given), each in its
      leaf's dtype: NaN when a task vector has a NaN or Inf entry.
    weights: ``(K,)`` what the rule did, as each rule documents it: the weights it
      applied (MoCo, ExcessMTL) or, for rules that pick entries coordinate by
      coordinate (GradDrop, trimmed mean), the mean coefficient with which each
      task's entries enter the direction. NaN for non-finite task vectors.
    state: the rule's new state (unchanged for non-finite task vectors).
    residual: scalar diagnostic, ``0`` for closed-form rules, ``inf`` for
      non-finite task vectors.
  """

  direction: tuple
  weights: Array
  state: Any
  residual: Array


Kind = Literal["gram", "loss", "coordinate"]
"""What a weighting reads: the Gram matrix of the task vectors, only the task losses, or
the task vectors themselves, coordinate by coordinate."""


class Weighting(NamedTuple):
  """A pure, jittable rule that gives K task weights, of one of three kinds.

  * ``kind="gram"``: ``weigh(gram, state, task_losses) -> WeightingResult``, with
    ``gram`` the ``(K, K)`` Gram matrix of the task vectors (gradients or updates)
    and ``task_losses`` the ``(K,)`` losses when ``needs_losses`` (else ``None``).
  * ``kind="loss"``: ``weigh(task_losses, state) -> WeightingResult``; the weights
    define the loss ``Σ_k w_k L_k``, so :func:`pub_optax.balance` builds no Gram
    matrix and applies them to every leaf. ``task_losses`` is ``None`` unless
    ``needs_losses`` (constant and random weightings read only their state).
  * ``kind="coordinate"``: ``weigh(vectors, state, task_losses) -> CoordinateResult``,
    with ``vectors`` the tuple of the shared leaves of the task vectors, each
    ``(K, *leaf_shape)``; the rule returns the combined shared direction itself
    (see :class:`CoordinateResult`). Its ``init(num_tasks, dtype, shared)`` also
    receives the shared leaves' shapes and dtypes (a tuple of
    ``jax.ShapeDtypeStruct`` without the task axis), for per-coordinate state.

  Attributes:
    init: ``init(num_tasks, dtype) -> state`` (``init(num_tasks, dtype, shared)``
      for the coordinate kind).
    weigh: see above.
    name: short name used in registries and error messages.
    kind: ``"gram"``, ``"loss"`` or ``"coordinate"``.
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


def coordinatewise(
  name: str,
  init: Callable[[int, Any, tuple], Any],
  rule: Callable[..., CoordinateResult],
  *,
  needs_losses: bool = False,
) -> Weighting:
  """A coordinate-kind :class:`Weighting` from ``rule(vectors, state, task_losses)``.

  The wrapper adds the package's rule for non-finite input: when a task vector
  has a NaN or Inf entry, the direction and the weights are NaN, the residual is
  infinite and the state is returned unchanged, so that
  :func:`pub_optax.apply_if_finite` rejects the step and no state is corrupted.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import CoordinateResult, coordinatewise
    >>> def median(vectors, state, task_losses=None):
    ...   out = tuple(jnp.median(v, axis=0) for v in vectors)
    ...   return CoordinateResult(out, jnp.ones(vectors[0].shape[0]), state, jnp.zeros(()))
    >>> w = coordinatewise("median", lambda k, dtype, shared: (), median)
    >>> vectors = (jnp.array([[1.0, 5.0], [2.0, -1.0], [9.0, 0.0]]),)
    >>> w.weigh(vectors, w.init(3, jnp.float32, ()), None).direction[0].tolist()
    [2.0, 0.0]
  """

  def weigh(vectors, state, task_losses=None):
    vectors = tuple(vectors)
    if not vectors:
      raise ValueError(f"{name}: no shared leaf to combine")
    k = vectors[0].shape[0]
    if k < 1 or any(v.ndim < 1 or v.shape[0] != k for v in vectors):
      raise ValueError(
        f"{name}: every shared leaf must be (K, ...) with the same K >= 1, got shapes "
        f"{[v.shape for v in vectors]}"
      )
    res = rule(vectors, state, task_losses)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in vectors]))
    direction = tuple(jnp.where(ok, d, jnp.full_like(d, jnp.nan)) for d in res.direction)
    weights = jnp.where(ok, res.weights, jnp.full_like(res.weights, jnp.nan))
    residual = jnp.where(ok, res.residual, jnp.full_like(res.residual, jnp.inf))
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), res.state, state)
    return CoordinateResult(direction, weights, new_state, residual)

  return Weighting(init=init, weigh=weigh, name=name, kind="coordinate", needs_losses=needs_losses)


def task_axis_zeros(num_tasks: int, shared: tuple) -> tuple:
  """Zeros ``(K, *leaf_shape)`` per shared leaf (at least float32): per-task, per-coordinate
  state of a coordinate-kind rule, from the ``shared`` shapes its ``init`` receives."""
  return tuple(
    jnp.zeros((num_tasks, *s.shape), jnp.promote_types(s.dtype, jnp.float32)) for s in shared
  )


def check_task_axis_state(what: str, state: tuple, vectors: tuple) -> None:
  """Raises a ValueError at trace time unless ``state`` has one leaf of each vector's shape."""
  if len(state) != len(vectors) or any(s.shape != v.shape for s, v in zip(state, vectors)):
    raise ValueError(
      f"{what} were initialised for shared leaves of shapes "
      f"{[s.shape for s in state]}, got {[v.shape for v in vectors]}"
    )
