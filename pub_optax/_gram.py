"""The Gram matrix of K task vectors over the shared leaves, and their sums over the task axis.

The reductions accumulate in float32 or wider whatever the vectors' dtype, so bf16
parameters give a float32 Gram matrix and weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST

# XLA:CPU runs the skinny (K x n)(n x K) product of a large leaf far below its speed on small
# blocks. Two CPU reductions do better, each where it is measured faster: for K <= 3, cutting
# the long axis into independent lanes and reducing elementwise products (K^2 products per
# coordinate, which vectorise); for K >= 4, a loop over column blocks that fit in cache, one
# small (K x b)(b x K) product each. GPUs and TPUs run the one matmul well (and a loop there
# would return to the host every trip), so "auto" keeps it everywhere but on CPU. The choice
# is made by the platform the program is lowered for (lax.platform_dependent), not by the
# host that traces it, so a step exported or compiled ahead of time for a GPU on a CPU host
# carries the matmul.
_LANES = 1024
_LANES_FROM = 1 << 15
_BLOCK = 8192
_LANES_UP_TO_TASKS = 3
_REDUCTIONS = ("auto", "matmul", "lanes", "blocks")


def _matmul_gram(flat: Array, acc) -> Array:
  return jnp.matmul(flat, flat.T, precision=_HIGHEST, preferred_element_type=acc).astype(acc)


def _lanes_gram(flat: Array, acc, lanes: int) -> Array:
  k, n = flat.shape
  v = flat.astype(acc).reshape(k, n // lanes, lanes)
  return jnp.sum(jnp.sum(v[:, None] * v[None, :], axis=2), axis=-1)


def _blocks_gram(flat: Array, acc) -> Array:
  k, n = flat.shape
  count = n // _BLOCK

  def add_block(i, total):
    block = jax.lax.dynamic_slice_in_dim(flat, i * _BLOCK, _BLOCK, axis=1)
    return total + _matmul_gram(block, acc)

  total = jax.lax.fori_loop(0, count, add_block, jnp.zeros((k, k), acc))
  if n == count * _BLOCK:
    return total
  return total + _matmul_gram(flat[:, count * _BLOCK :], acc)


def _cpu_gram(flat: Array, acc, lanes: int) -> Array:
  if flat.shape[0] <= _LANES_UP_TO_TASKS and lanes >= 16:
    return _lanes_gram(flat, acc, lanes)
  return _blocks_gram(flat, acc)


def leaf_gram(flat: Array, reduction: str = "auto") -> Array:
  r"""``flat @ flat.T`` for one ``(K, n)`` leaf, accumulated in float32 or wider.

  .. math:: M_{ij} = \sum_{c=1}^{n} x_{ic}\, x_{jc}

  The reductions give the same matrix up to rounding:

  * ``"matmul"``: one ``(K, n) @ (n, K)`` product (``stablehlo.dot_general``).
  * ``"lanes"``: the long axis cut into ``L`` lanes (``L = gcd(n, 1024)``), the
    elementwise products ``x_i * x_j`` summed over the ``n / L`` rows of each lane,
    then over the lanes. Needs 16 or more lanes; otherwise the matmul.
  * ``"blocks"``: a ``jax.lax.fori_loop`` over blocks of 8,192 columns, adding one
    ``(K, b) @ (b, K)`` product per block (the remainder in one more product).
  * ``"auto"``: on CPU, lanes for K ≤ 3 and blocks for K ≥ 4; the matmul on every
    other platform, chosen with :func:`jax.lax.platform_dependent` when the program is
    lowered, so a step traced on a CPU host for a GPU (export, ahead-of-time
    compilation) carries the matmul.

  Leaves shorter than 2^15 coordinates always take the matmul.

  Args:
    flat: ``(K, n)`` array, one task per row.
    reduction: ``"auto"``, ``"matmul"``, ``"lanes"`` or ``"blocks"``.

  Returns:
    ``(K, K)`` matrix in the wider of ``flat.dtype`` and float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax._gram import leaf_gram
    >>> leaf_gram(jnp.array([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[5.0, 11.0], [11.0, 25.0]]
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
  acc = jnp.promote_types(flat.dtype, jnp.float32)
  k, n = flat.shape
  lanes = math.gcd(n, _LANES)
  if reduction == "matmul" or n < _LANES_FROM or (reduction == "lanes" and lanes < 16):
    return _matmul_gram(flat, acc)
  if reduction == "lanes":
    return _lanes_gram(flat, acc, lanes)
  if reduction == "blocks":
    return _blocks_gram(flat, acc)
  return jax.lax.platform_dependent(
    flat,
    cpu=lambda x: _cpu_gram(x, acc, lanes),
    default=lambda x: _matmul_gram(x, acc),
  )


def gram_matrix(vectors, mask, reduction: str = "auto") -> Array:
  r"""``M = D Dᵀ`` over the leaves where ``mask`` is True, accumulated in float32 or wider.

  .. math:: M_{ij} = \sum_{\text{leaf } \ell,\ \text{mask}_\ell} \langle d_i^\ell, d_j^\ell \rangle

  Args:
    vectors: pytree whose leaves are ``(K, ...)``.
    mask: pytree of Python bools with the structure of ``vectors``.
    reduction: per-leaf reduction, see :func:`leaf_gram` (``"auto"`` chooses by the
      platform the program is lowered for).

  Returns:
    ``(K, K)`` Gram matrix (float32, or float64 for float64 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax._gram import gram_matrix
    >>> d = {"a": jnp.array([[1.0, 0.0], [1.0, 1.0]]), "b": jnp.array([[2.0], [0.0]])}
    >>> gram_matrix(d, {"a": True, "b": False}).tolist()
    [[1.0, 1.0], [1.0, 2.0]]
  """
  grams = [
    leaf_gram(v.reshape(v.shape[0], -1), reduction)
    for v, m in zip(jax.tree.leaves(vectors), jax.tree.leaves(mask))
    if m
  ]
  if not grams:
    raise ValueError("the `shared` mask selects no leaf: nothing to balance")
  return sum(grams[1:], grams[0])


def task_sum(stacked: Array) -> Array:
  r"""``Σ_k x_k`` over the leading axis as ``K − 1`` elementwise additions, in float32 or wider.

  XLA:CPU reduces a leading axis far slower than it adds K slices, which fuse into one
  pass over the coordinates (and into the producers of the slices); every platform gets
  the same additions.

  Args:
    stacked: ``(K, ...)`` array.

  Returns:
    ``stacked.shape[1:]`` array in the wider of ``stacked.dtype`` and float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax._gram import task_sum
    >>> task_sum(jnp.array([[2.0, 4.0], [1.0, 1.0]])).tolist()
    [3.0, 5.0]
  """
  acc = jnp.promote_types(stacked.dtype, jnp.float32)
  total = stacked[0].astype(acc)
  for k in range(1, stacked.shape[0]):
    total = total + stacked[k].astype(acc)
  return total


def weighted_sum(weights: Array, stacked: Array) -> Array:
  r"""``Σ_k w_k x_k`` over the leading axis, accumulated in the wider of both dtypes.

  Args:
    weights: ``(K,)`` weights.
    stacked: ``(K, ...)`` array.

  Returns:
    ``stacked.shape[1:]`` array in the wider of both dtypes.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax._gram import weighted_sum
    >>> weighted_sum(jnp.array([0.5, 2.0]), jnp.array([[2.0, 4.0], [1.0, 1.0]])).tolist()
    [3.0, 4.0]
  """
  acc = jnp.promote_types(weights.dtype, stacked.dtype)
  return jnp.tensordot(weights.astype(acc), stacked.astype(acc), axes=1, precision=_HIGHEST)
