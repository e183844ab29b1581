"""Small dense linear algebra without loops or library calls, and the non-finite Gram rule.

On accelerators a K×K factorisation inside a solver loop is a library call (cuSOLVER)
per step, and the loop itself waits on the host at every trip. For small static K
:func:`spd_solve_unrolled` writes a linear solve out in full: K rank-one updates,
each a handful of element-wise operations that the compiler fuses into one.

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


def spd_solve_unrolled(h: Array, b: Array, floor: float = 0.0) -> Array:
  r"""Solves ``H x = b`` for symmetric positive definite H by Gauss–Jordan, unrolled over K.

  Step j divides row j of ``[H | b]`` by its pivot and eliminates column j from every
  other row: one rank-one update of a ``K × (K+1)`` array, a single fused
  element-wise operation, so the solve is K of them (a Cholesky factorisation and
  two triangular solves take 3K). Without row exchanges the pivots are those of the
  Cholesky factorisation (the Schur complements' leading entries); each is clamped
  to at least ``floor``. For ``H = I + M`` with M positive semi-definite every exact
  pivot is ≥ 1 (each Schur complement of H is ``⪰ I``), so ``floor=1`` only undoes
  rounding that would otherwise break the elimination.

  Args:
    h: ``(K, K)`` symmetric positive definite matrix.
    b: ``(K,)`` right-hand side.
    floor: lower bound on the pivots.

  Returns:
    ``(K,)`` solution x.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings._linalg import spd_solve_unrolled
    >>> spd_solve_unrolled(jnp.array([[4.0, 2.0], [2.0, 5.0]]), jnp.array([6.0, 7.0])).tolist()
    [1.0, 1.0]

  References:
    Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §14.4 (Gauss–Jordan).
  """
  k = h.shape[0]
  rows = jnp.arange(k)[:, None]
  a = jnp.concatenate([h, b[:, None]], axis=1)
  for j in range(k):
    row = a[j] / jnp.maximum(a[j, j], floor)
    col = a[:, j : j + 1]
    a = jnp.where(rows == j, row[None, :], a - col * row[None, :])
  return a[:, k]


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
