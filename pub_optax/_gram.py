"""The Gram matrix of K task vectors over the shared leaves, and their weighted sum.

Both reductions accumulate in float32 or wider whatever the vectors' dtype, so bf16
parameters give a float32 Gram matrix and weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST

# XLA:CPU runs the skinny (K x n)(n x K) product of a large leaf far below memory speed;
# cutting the long axis into independent lanes and reducing elementwise products vectorises
# (10x faster at K=2 on the 28M embedding coordinates of the paper-size MMoE: the gram columns
# of benchmarks/step.py). On an H200 it was not faster at K=8, so other backends keep the matmul.
_LANES = 1024
_LANES_FROM = 1 << 15


def leaf_gram(flat: Array, reduction: str = "auto") -> Array:
  """``flat @ flat.T`` for one ``(K, n)`` leaf, accumulated in float32 or wider.

  ``reduction`` is ``"matmul"``, ``"lanes"`` (elementwise products summed over
  lanes of the long axis, for leaves of at least 2^15 coordinates that split
  into 16 or more lanes; smaller leaves take the matmul) or ``"auto"``: lanes on
  CPU, the matmul elsewhere. Both give the same matrix up to rounding.
  """
  if reduction not in ("auto", "matmul", "lanes"):
    raise ValueError(f"reduction must be 'auto', 'matmul' or 'lanes', got {reduction!r}")
  if reduction == "auto":
    reduction = "lanes" if jax.default_backend() == "cpu" else "matmul"
  acc = jnp.promote_types(flat.dtype, jnp.float32)
  k, n = flat.shape
  lanes = math.gcd(n, _LANES)
  if reduction == "lanes" and n >= _LANES_FROM and lanes >= 16:
    v = flat.astype(acc).reshape(k, n // lanes, lanes)
    return jnp.sum(jnp.sum(v[:, None] * v[None, :], axis=2), axis=-1)
  return jnp.matmul(flat, flat.T, precision=_HIGHEST, preferred_element_type=acc).astype(acc)


def gram_matrix(vectors, mask) -> Array:
  """``M = D Dᵀ`` over the leaves where ``mask`` is True, accumulated in float32 or wider.

  Args:
    vectors: pytree whose leaves are ``(K, ...)``.
    mask: pytree of Python bools with the structure of ``vectors``.

  Returns:
    ``(K, K)`` Gram matrix (float32, or float64 for float64 inputs).
  """
  grams = [
    leaf_gram(v.reshape(v.shape[0], -1))
    for v, m in zip(jax.tree.leaves(vectors), jax.tree.leaves(mask))
    if m
  ]
  if not grams:
    raise ValueError("the `shared` mask selects no leaf: nothing to balance")
  return sum(grams[1:], grams[0])


def weighted_sum(weights: Array, stacked: Array) -> Array:
  """``Σ_k w_k x_k`` over the leading axis, accumulated in the wider of both dtypes."""
  acc = jnp.promote_types(weights.dtype, stacked.dtype)
  return jnp.tensordot(weights.astype(acc), stacked.astype(acc), axes=1, precision=_HIGHEST)
