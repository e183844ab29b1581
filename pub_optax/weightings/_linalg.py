"""Small dense linear algebra without loops or library calls, and the non-finite Gram rule.

On accelerators a K×K factorisation inside a solver loop is a library call (cuSOLVER)
per step, and the loop itself waits on the host at every trip. For small static K
the helpers below write the factorisation out in full: K rank-one updates for the
Cholesky factor and K row (column) updates per triangular solve, each a handful of
element-wise operations that the compiler fuses.

Non-finite input, one rule for every Gram weighting: a Gram matrix with a NaN or
±Inf entry gives NaN weights and an infinite residual, returned promptly (the
solvers run on a zero matrix instead, so no iteration can stall on it). A
non-finite Gram comes from non-finite or overflowing task vectors; NaN weights
make the combined update non-finite, so :func:`pub_optax.apply_if_finite` rejects
the step instead of applying a meaningless one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def cholesky_unrolled(h: Array, floor: float = 0.0) -> Array:
  r"""Lower Cholesky factor of a symmetric ``(K, K)`` matrix, unrolled over the static K.

  Right-looking: column j is ``S[:, j]/√S_jj`` of the current Schur complement S,
  then ``S ← S − l lᵀ``. Each pivot is clamped to at least ``floor``: for
  ``H = I + M`` with M positive semi-definite every exact pivot is ≥ 1 (each Schur
  complement of ``H`` is ``⪰ I``), so ``floor=1`` only undoes rounding that would
  otherwise break the factorisation.

  Args:
    h: ``(K, K)`` symmetric matrix.
    floor: lower bound on the pivots; keep it positive for a finite factor.

  Returns:
    ``(K, K)`` lower-triangular L with ``L Lᵀ ≈ h``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings._linalg import cholesky_unrolled
    >>> cholesky_unrolled(jnp.array([[4.0, 2.0], [2.0, 5.0]])).tolist()
    [[2.0, 0.0], [1.0, 2.0]]

  References:
    Golub & Van Loan, "Matrix Computations", 4th ed., §4.2 (outer-product Cholesky).
  """
  k = h.shape[0]
  index = jnp.arange(k)
  s = h
  cols = []
  for j in range(k):
    pivot = jnp.maximum(s[j, j], floor)
    col = jnp.where(index >= j, s[:, j], 0.0) * jax.lax.rsqrt(pivot)
    col = col.at[j].set(jnp.sqrt(pivot))
    cols.append(col)
    s = s - jnp.outer(col, col)
  return jnp.stack(cols, axis=1)


def cho_solve_unrolled(l: Array, b: Array) -> Array:
  r"""Solves ``L Lᵀ x = b`` by forward and back substitution, unrolled over the static K.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings._linalg import cho_solve_unrolled
    >>> l = jnp.array([[2.0, 0.0], [1.0, 2.0]])  # L Lᵀ = [[4, 2], [2, 5]]
    >>> cho_solve_unrolled(l, jnp.array([6.0, 7.0])).tolist()
    [1.0, 1.0]
  """
  k = l.shape[0]
  y = jnp.zeros_like(b)
  for i in range(k):
    y = y.at[i].set((b[i] - l[i] @ y) / l[i, i])
  x = jnp.zeros_like(b)
  for i in reversed(range(k)):
    x = x.at[i].set((y[i] - l[:, i] @ x) / l[i, i])
  return x


def finite_gram(gram: Array) -> tuple[Array, Array]:
  """``(ok, safe)``: whether every entry is finite, and the Gram with a zero matrix in its place if not.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings._linalg import finite_gram
    >>> ok, safe = finite_gram(jnp.array([[1.0, jnp.inf], [jnp.inf, 1.0]]))
    >>> bool(ok), safe.tolist()
    (False, [[0.0, 0.0], [0.0, 0.0]])
  """
  ok = jnp.all(jnp.isfinite(gram))
  return ok, jnp.where(ok, gram, jnp.zeros_like(gram))


def flag_non_finite(ok: Array, weights: Array, residual: Array) -> tuple[Array, Array]:
  """NaN weights and an infinite residual where ``ok`` is False (see the module docstring)."""
  weights = jnp.where(ok, weights, jnp.full_like(weights, jnp.nan))
  return weights, jnp.where(ok, residual, jnp.full_like(residual, jnp.inf))
