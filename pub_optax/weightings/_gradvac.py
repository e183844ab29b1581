"""GradVac: raise each pair's cosine to an adaptive target, task by task in random order, on the Gram matrix.

Gradient Vaccine (Wang et al. 2021) generalises PCGrad: for every task i, start
from ``g_i' = g_i`` and, for the other tasks j in a random order, compute the
cosine ``φ_ij = cos(g_i', g_j)``; when it is below the target ``φ̂_ij``, add

  ‖g_i'‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²)) / (‖g_j‖ √(1 − φ̂_ij²)) · g_j

to ``g_i'``, which makes ``cos(g_i', g_j) = φ̂_ij`` exactly (Equation 2 of the
paper). The targets are exponential moving averages of the observed cosines,
``φ̂_ij ← (1 − β) φ̂_ij + β φ_ij`` (Equation 3), updated for every visited pair
after the comparison, as in the paper's Algorithm 1 (LibMTL updates a target
only when the pair was adjusted). Targets start at 0, so the first step is
PCGrad. The joint vector is ``Σ_i g_i'``.

As for PCGrad, every ``g_i'`` stays a combination ``Jᵀc^(i)`` of the original
vectors, with ``‖g_i'‖² = c^(i)ᵀGc^(i)`` and ``g_i'ᵀg_j = (Gc^(i))_j``, so the
method runs on the Gram matrix and returns ``w = Σ_i c^(i)``. Pairs involving a
zero vector have no cosine: they are neither adjusted nor averaged. The
weights are invariant to scaling G (given the targets and orders).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import (
  Weighting,
  WeightingResult,
  check_gram,
  solve_dtype,
  unit_gram,
)
from pub_optax.weightings._linalg import finite_gram
from pub_optax.weightings._pcgrad import random_orders

Array = jax.Array


class GradVacState(NamedTuple):
  """State of :func:`gradvac`: the ``(K, K)`` cosine targets ``φ̂`` and a PRNG key."""

  targets: Array
  key: Array


def vaccine_coefficient(norm_i: Array, norm_j: Array, cos: Array, target: Array) -> Array:
  """The multiple of ``g_j`` that turns ``cos(g_i, g_j)`` from ``cos`` into ``target`` (Eq. 2).

  Example:
    >>> from pub_optax.weightings import vaccine_coefficient
    >>> round(float(vaccine_coefficient(1.0, 1.0, 0.0, 0.6)), 4)  # (0.6 - 0) / 0.8
    0.75
  """
  sin = jnp.sqrt(jnp.maximum(1.0 - cos**2, 0.0))
  sin_target = jnp.sqrt(jnp.maximum(1.0 - target**2, jnp.finfo(jnp.result_type(target)).eps))
  return norm_i * (target * sin - cos * sin_target) / (norm_j * sin_target)


def gradvac_weights(
  gram: Array, targets: Array, orders: Array, beta: float = 0.01
) -> tuple[Array, Array]:
  r"""GradVac weights for given targets and visiting orders, and the updated targets.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    targets: ``(K, K)`` cosine targets ``φ̂_ij`` (row i: task i's targets).
    orders: ``(K, K)`` integers; row i is a permutation of ``0..K-1``, the order in
      which task i visits the others (see :func:`~pub_optax.weightings.random_orders`).
    beta: EMA rate β of the targets.

  Returns:
    ``(weights, new_targets)``: ``Σ_k w_k g_k = Σ_i g_i'``; NaN weights (targets
    unchanged) when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import gradvac_weights
    >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])
    >>> w, t = gradvac_weights(gram, jnp.zeros((2, 2)), jnp.array([[0, 1], [1, 0]]))
    >>> [round(float(x), 4) for x in w], round(float(t[0, 1]), 4)  # PCGrad, then EMA
    ([1.5, 1.5], -0.005)

  References:
    Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models", ICLR 2021.
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  ok, safe = finite_gram(gram)
  g, _, _ = unit_gram(safe)
  targets = jnp.asarray(targets, dtype)
  orders = jnp.asarray(orders, jnp.int32)
  if targets.shape != (k, k) or orders.shape != (k, k):
    raise ValueError(
      f"targets and orders must have shape ({k}, {k}), got {targets.shape} and {orders.shape}"
    )
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
  live = norms > jnp.finfo(dtype).eps * jnp.max(norms)

  def one_task(i, order, row):
    def visit(t, carry):
      c, row = carry
      j = order[t]
      norm_i = jnp.sqrt(jnp.maximum(c @ g @ c, 0.0))
      defined = (j != i) & live[j] & (norm_i > jnp.finfo(dtype).eps * norms[i])
      safe_den = jnp.where(defined, norm_i * norms[j], 1.0)
      cos = jnp.clip(jnp.where(defined, (g[j] @ c) / safe_den, 0.0), -1.0, 1.0)
      target = row[j]
      adjust = defined & (cos < target)
      coef = vaccine_coefficient(norm_i, jnp.where(defined, norms[j], 1.0), cos, target)
      c = c.at[j].add(jnp.where(adjust, coef, 0.0))
      row = row.at[j].set(jnp.where(defined, (1.0 - beta) * target + beta * cos, target))
      return c, row

    start = (jnp.zeros((k,), dtype).at[i].set(1.0), row)
    return jax.lax.fori_loop(0, k, visit, start)

  coefs, new_targets = jax.vmap(one_task)(jnp.arange(k), orders, targets)
  weights = jnp.where(ok, jnp.sum(coefs, axis=0), jnp.nan)
  return weights, jnp.where(ok, new_targets, targets)


def gradvac(beta: float = 0.01, seed: int = 0) -> Weighting:
  """GradVac as a :class:`~pub_optax.weightings.Weighting` named ``"gradvac"``.

  Args:
    beta: EMA rate β of the cosine targets; 0.01 as in the paper and TorchJD
      (LibMTL's default ``GradVac_beta`` is 0.5).
    seed: seed of the PRNG key in the state; each call draws K visiting orders.

  Returns:
    A Weighting with state :class:`GradVacState` (targets start at 0: the first
    step is PCGrad). Residual 0.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import gradvac
    >>> w = gradvac()
    >>> res = w.weigh(jnp.array([[1.0, -0.5], [-0.5, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]
    [1.5, 1.5]

  References:
    Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021.
  """
  beta = float(beta)
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")

  def init(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    return GradVacState(jnp.zeros((num_tasks, num_tasks), dt), jax.random.PRNGKey(seed))

  def weigh(gram, state, task_losses=None):
    del task_losses
    key, sub = jax.random.split(state.key)
    orders = random_orders(sub, gram.shape[0])
    weights, targets = gradvac_weights(gram, state.targets, orders, beta)
    weights = weights.astype(state.targets.dtype)
    residual = jnp.where(jnp.all(jnp.isfinite(weights)), 0.0, jnp.inf).astype(weights.dtype)
    new_state = GradVacState(targets.astype(state.targets.dtype), key)
    return WeightingResult(weights, new_state, residual)

  return Weighting(init=init, weigh=weigh, name="gradvac")
