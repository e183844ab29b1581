"""PCGrad: project away conflicting components, task by task in random order, on the Gram matrix.

PCGrad (Yu et al. 2020) builds, for every task i, a projected vector ``g_i^PC``:
start from ``g_i`` and, for the other tasks j in a random order, whenever
``g_i^PCᵀ g_j < 0`` subtract the conflicting component
``(g_i^PCᵀ g_j / ‖g_j‖²) g_j``. The joint vector is ``Σ_i g_i^PC``.

Every ``g_i^PC`` stays a combination ``Jᵀ c^(i)`` of the original task vectors, and
the inner products it needs are ``g_jᵀ Jᵀ c = (G c)_j``; so PCGrad runs on the
Gram matrix alone: ``c^(i)`` starts at ``e_i`` and each projection does
``c_j ← c_j − (G c)_j / G_jj``. The weights are ``w = Σ_i c^(i)``, so that
``Σ_k w_k g_k`` equals the PCGrad vector exactly (as TorchJD does; j = i is
skipped, tasks with ``G_jj = 0`` never project).

The random orders come from a JAX PRNG key kept in the weighting's state: one
independent permutation per task per step, as in the original code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import (
  Weighting,
  WeightingResult,
  check_gram,
  solve_dtype,
  symmetric_gram,
)
from pub_optax.weightings._linalg import finite_gram, flag_non_finite

Array = jax.Array


def random_orders(key: Array, num_tasks: int) -> Array:
  """``(K, K)`` int32: row i is the random order in which task i visits the tasks.

  Example:
    >>> import jax
    >>> from pub_optax.weightings import random_orders
    >>> orders = random_orders(jax.random.PRNGKey(0), 3)
    >>> orders.shape, sorted(orders[0].tolist())
    ((3, 3), [0, 1, 2])
  """
  keys = jax.random.split(key, num_tasks)
  return jax.vmap(lambda kk: jax.random.permutation(kk, num_tasks))(keys).astype(jnp.int32)


def pcgrad_weights(gram: Array, orders: Array) -> Array:
  r"""Weights w with ``Σ_k w_k g_k = Σ_i g_i^PC`` for the given projection orders.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors.
    orders: ``(K, K)`` integers; row i is a permutation of ``0..K-1``, the order
      in which task i is projected against the others (see :func:`random_orders`).

  Returns:
    ``(K,)`` weights (1 for every task when no pair conflicts), each at least 1; NaN
    when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import pcgrad_weights
    >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])
    >>> orders = jnp.array([[0, 1], [1, 0]])
    >>> [round(float(w), 4) for w in pcgrad_weights(gram, orders)]
    [1.5, 1.5]

  References:
    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  finite, gram = finite_gram(gram)
  g = symmetric_gram(gram)
  orders = jnp.asarray(orders, jnp.int32)
  if orders.shape != (k, k):
    raise ValueError(f"orders must have shape ({k}, {k}), got {orders.shape}")
  diag = jnp.diagonal(g)

  def one_task(i, order):
    def visit(t, c):
      j = order[t]
      inner = g[j] @ c
      project = (j != i) & (inner < 0.0) & (diag[j] > 0.0)
      coef = jnp.where(project, inner / jnp.where(project, diag[j], 1.0), 0.0)
      return c.at[j].add(-coef)

    return jax.lax.fori_loop(0, k, visit, jnp.zeros((k,), dtype).at[i].set(1.0))

  weights = jnp.sum(jax.vmap(one_task)(jnp.arange(k), orders), axis=0)
  return jnp.where(finite, weights, jnp.nan)


def pcgrad(seed: int = 0) -> Weighting:
  """PCGrad as a :class:`~pub_optax.weightings.Weighting` named ``"pcgrad"``.

  Args:
    seed: seed of the PRNG key in the state; each call splits it, draws K
      permutations with :func:`random_orders` and keeps the new key.

  Returns:
    A Weighting whose state is a ``uint32`` PRNG key.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import pcgrad
    >>> w = pcgrad()
    >>> res = w.weigh(jnp.array([[1.0, -0.5], [-0.5, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]
    [1.5, 1.5]

  References:
    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
  """

  def init(num_tasks, dtype):
    del num_tasks, dtype
    return jax.random.PRNGKey(seed)

  def weigh(gram, state, task_losses=None):
    del task_losses
    key, sub = jax.random.split(state)
    weights = pcgrad_weights(gram, random_orders(sub, gram.shape[0]))
    ok = jnp.all(jnp.isfinite(gram))
    weights, residual = flag_non_finite(ok, weights, jnp.zeros((), weights.dtype))
    return WeightingResult(weights, key, residual)

  return Weighting(init=init, weigh=weigh, name="pcgrad")
