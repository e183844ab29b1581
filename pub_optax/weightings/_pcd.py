r"""PCD: follow the first (primary) task's gradient, bent just enough for every other task to progress.

Priority-constrained descent (Varam & AlHajri, 2026) is for a primary objective with
secondary ones. With ``g̃_i = s_i g_i`` the task gradients normalised by the bias-corrected
exponential moving average ``v̂_i`` of their squared norms, ``s_i = 1/√(v̂_i + ε)``, it takes
the direction closest to the primary gradient that gives every secondary task at least a
fraction ``τ`` of the first-order progress of a step along its own normalised gradient:

.. math::

  \tilde d = \arg\min_d \tfrac12 \|d - \tilde g_1\|^2 \quad\text{s.t.}\quad
  \tilde g_j^\top d \ge \tau_j \|\tilde g_j\|^2,\ j = 2, \dots, K,

then rescales it to the primary gradient's norm, ``d = ‖g_1‖ d̃ / ‖d̃‖``. By the KKT
conditions ``d̃ = g̃_1 + Σ_j μ_j g̃_j`` with multipliers ``μ ≥ 0`` that solve the dual,
a non-negative quadratic program on the normalised Gram matrix ``G̃ = S G S``:

.. math::

  \mu = \arg\min_{\mu \ge 0} \tfrac12 \mu^\top \tilde G_{ss}\, \mu - b^\top \mu, \qquad
  b_j = \tau_j \tilde G_{jj} - \tilde G_{j1},

solved exactly by :func:`~pub_optax.weightings.nonneg_qp`. So the task weights are
``w = (1, μ) ∘ s · ‖g_1‖ / ‖d̃‖``, from the Gram matrix alone. As in TorchJD 0.18's ``PCD``:
a zero primary gradient gives zero weights; constraints that cannot all hold (possible
from K = 3, e.g. two opposite secondary gradients) are dropped, giving ``w = (1, 0, …, 0)``;
a ``d̃`` that is zero up to the rounding of the Gram matrix gives zero weights; and the moving
average advances at every call with a finite Gram matrix (a non-finite one gives NaN weights
and leaves it unchanged). TorchJD solves the dual with Goldfarb and Idnani's active-set
method; the reference implementation enumerates the working sets. All three give the same
minimiser.

PCD is not symmetric in the tasks: the first row of the task axis is the primary task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax.weightings._base import (
  Weighting,
  WeightingResult,
  check_gram,
  solve_dtype,
  symmetric_gram,
)
from pub_optax.weightings._linalg import finite_gram
from pub_optax.weightings._qp import nonneg_qp

Array = jax.Array


class PCDState(NamedTuple):
  """State of :func:`pcd`: the moving average of the squared task-gradient norms and its step count."""

  sq_norm_ema: Array
  count: Array


class PCDResult(NamedTuple):
  """Result of :func:`pcd_weights`.

  Attributes:
    weights: ``(K,)`` weights of the task gradients, ``(1, μ) ∘ s · ‖g_1‖ / ‖d̃‖``.
    state: the advanced :class:`PCDState`.
    multipliers: ``(K − 1,)`` the constraints' multipliers μ (0 where dropped).
    feasible: whether the constraints could all hold (False: they were dropped).
    residual: relative KKT residual of the dual problem (0 when it was not solved).
  """

  weights: Array
  state: PCDState
  multipliers: Array
  feasible: Array
  residual: Array


def _taus(tau, k: int, dtype) -> Array:
  if isinstance(tau, Sequence):
    if len(tau) != k - 1:
      raise ValueError(
        f"pcd: tau has {len(tau)} values, one per secondary task is needed ({k - 1} for K = {k})"
      )
    return jnp.asarray([float(t) for t in tau], dtype)
  return jnp.full((k - 1,), float(tau), dtype)


def pcd_weights(
  gram: Array,
  state: PCDState,
  *,
  tau: float | Sequence[float] = 0.02,
  beta: float = 0.999,
  eps: float = 1e-8,
) -> PCDResult:
  r"""PCD's task weights for one Gram matrix, advancing the moving average of the norms.

  Args:
    gram: ``(K, K)`` Gram matrix of the task gradients; task 0 is the primary one.
    state: the :class:`PCDState` of the previous call (zeros at first).
    tau: τ ∈ [0, 1], the fraction of normalised progress guaranteed to every
      secondary task, or a sequence of K − 1 such fractions (0.02).
    beta: β ∈ [0, 1), the decay of the moving average of the squared norms (0.999).
    eps: ε ≥ 0 added to the averaged squared norms (1e-8).

  Returns:
    A :class:`PCDResult`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import PCDState, pcd_weights
    >>> state = PCDState(jnp.zeros(2), jnp.zeros((), jnp.int32))
    >>> res = pcd_weights(jnp.array([[1.0, 0.0], [0.0, 1.0]]), state, tau=0.5, eps=0.0)
    >>> [round(float(w), 4) for w in res.weights]  # d̃ = g1 + g2 / 2, rescaled to ‖g1‖ = 1
    [0.8944, 0.4472]
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  taus = _taus(tau, k, dtype)
  ok, g = finite_gram(symmetric_gram(gram))
  sq_norms = jnp.maximum(jnp.diagonal(g), 0.0)
  count = optax.safe_increment(state.count)
  ema = beta * state.sq_norm_ema.astype(dtype) + (1.0 - beta) * sq_norms
  debiased = ema / (1.0 - jnp.power(jnp.asarray(beta, dtype), count.astype(dtype)))
  denominators = jnp.sqrt(debiased + eps)
  scales = jnp.where(denominators > 0, 1.0 / jnp.where(denominators > 0, denominators, 1.0), 0.0)
  normalised = g * scales[:, None] * scales[None, :]
  precision = 10.0 * jnp.finfo(jnp.asarray(gram).dtype).eps

  secondary = normalised[1:, 1:]
  b = taus * jnp.diagonal(secondary) - normalised[1:, 0]
  if k > 1:
    qp = nonneg_qp(secondary, -b)
    mu, residual = qp.x, qp.residual
    # The constraints hold at d̃ = g̃_1 + Σ μ_j g̃_j up to rounding, relative to their terms;
    # an infeasible problem (an unbounded dual) leaves some of them clearly violated.
    slack = secondary @ mu - b
    terms = jnp.abs(b) + jnp.abs(secondary) @ jnp.abs(mu) + jnp.finfo(dtype).tiny
    tolerance = jnp.sqrt(jnp.finfo(dtype).eps)
    feasible = jnp.all(jnp.isfinite(mu)) & jnp.all(-slack <= tolerance * terms)
    mu = jnp.where(feasible, mu, 0.0)
    residual = jnp.where(feasible, residual, 0.0)
  else:
    mu, residual, feasible = jnp.zeros((0,), dtype), jnp.zeros((), dtype), jnp.array(True)
  w = jnp.concatenate([jnp.ones((1,), dtype), mu])
  direction_sq = w @ normalised @ w
  magnitude = (jnp.abs(w) @ jnp.sqrt(jnp.maximum(jnp.diagonal(normalised), 0.0))) ** 2
  moving = (sq_norms[0] > 0) & (direction_sq > precision * magnitude)
  factor = jnp.sqrt(sq_norms[0] / jnp.where(moving, direction_sq, 1.0))
  weights = jnp.where(moving, w * scales * factor, 0.0)
  residual = jnp.where(sq_norms[0] > 0, residual, 0.0)

  new_state = PCDState(
    jnp.where(ok, ema, state.sq_norm_ema).astype(state.sq_norm_ema.dtype),
    jnp.where(ok, count, state.count),
  )
  weights = jnp.where(ok, weights, jnp.nan)
  residual = jnp.where(ok, residual, jnp.inf).astype(dtype)
  return PCDResult(weights, new_state, mu, feasible & ok, residual)


def pcd(tau: float | Sequence[float] = 0.02, beta: float = 0.999, eps: float = 1e-8) -> Weighting:
  r"""PCD as a :class:`~pub_optax.weightings.Weighting` named ``"pcd"``; task 0 is the primary task.

  Args:
    tau, beta, eps: see :func:`pcd_weights` (TorchJD 0.18's defaults).

  Returns:
    A Weighting with state :class:`PCDState`; its residual is the dual problem's.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import pcd
    >>> w = pcd(tau=0.5, eps=0.0)
    >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])  # conflicting: g2 · g1 = -1/2
    >>> res = w.weigh(gram, w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # d̃ = g1 + g2, with g2 · d̃ = 1/2
    [1.0, 1.0]

  References:
    Varam & AlHajri, "Not All Objectives Are Born Equal: Priority-Constrained Descent
    for Hierarchical Multi-Objective Optimization", TMLR 2026 (arXiv 2606.29521).
  """
  taus = list(tau) if isinstance(tau, Sequence) else [tau]
  if not all(0.0 <= float(t) <= 1.0 for t in taus):
    raise ValueError(f"tau must be in [0, 1], got {tau!r}")
  if not 0.0 <= float(beta) < 1.0:
    raise ValueError(f"beta must be in [0, 1), got {beta!r}")
  if not float(eps) >= 0.0:
    raise ValueError(f"eps must be non-negative, got {eps!r}")

  def init(num_tasks, dtype):
    if isinstance(tau, Sequence):
      _taus(tau, num_tasks, jnp.float32)
    dtype = jnp.promote_types(dtype, jnp.float32)
    return PCDState(jnp.zeros((num_tasks,), dtype), jnp.zeros((), jnp.int32))

  def weigh(gram, state, task_losses=None):
    del task_losses
    res = pcd_weights(gram, state, tau=tau, beta=beta, eps=eps)
    return WeightingResult(res.weights.astype(state.sq_norm_ema.dtype), res.state, res.residual)

  return Weighting(init=init, weigh=weigh, name="pcd")
