"""Aligned-MTL: align the task vectors to an orthogonal, equally-scaled system (Senushkin et al. 2023).

Aligned-MTL removes both conflict and dominance by replacing the matrix of task
vectors ``J`` (K×P) with the closest matrix whose rows are orthogonal and of
equal norm ``σ_min``, the smallest non-zero singular value of J, and then sums
the aligned rows with pre-defined task weights ``p``. With the eigendecomposition
``G = J Jᵀ = V Λ Vᵀ`` (keeping the R eigenvalues above ``max λ · K · eps``),

  Ĵ = σ_min V Λ^{-1/2} Vᵀ J,   and   Ĵᵀ p = Jᵀ w  with  w = σ_min V Λ^{-1/2} Vᵀ p.

So the weights come from one K×K ``eigh``. ``p`` defaults to ones (the original
code and LibMTL sum the aligned task gradients; TorchJD uses ``1/K``). A zero
Gram matrix gives ``w = p``. Scaling G leaves w unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import (
  Weighting,
  check_gram,
  solve_dtype,
  stateless_solver,
  symmetric_gram,
)
from pub_optax.weightings._linalg import finite_gram, flag_non_finite

Array = jax.Array


def aligned_mtl_weights(gram: Array, pref: Array | None = None) -> Array:
  r"""Aligned-MTL weights ``w = sqrt(λ_min) V Λ^{-1/2} Vᵀ p`` on the range of G.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    pref: ``(K,)`` task weights applied to the aligned vectors; ``None`` uses ones.

  Returns:
    ``(K,)`` weights. The aligned system ``σ_min V Λ^{-1/2} Vᵀ J`` has orthogonal
    rows of norm ``σ_min`` on the range of J. NaN when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import aligned_mtl_weights
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal, norms 2 and 1
    >>> [round(float(w), 4) for w in aligned_mtl_weights(gram)]  # both rescaled to norm 1
    [0.5, 1.0]

  References:
    Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment
    for Multi-Task Learning", CVPR 2023 (Algorithm 1).
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  finite, gram = finite_gram(gram)  # eigh does not return on non-finite input
  g = symmetric_gram(gram)
  scale = jnp.max(jnp.abs(jnp.diagonal(g)))
  nonzero = scale > jnp.finfo(dtype).tiny
  gn = jnp.where(nonzero, g / jnp.where(nonzero, scale, 1.0), 0.0)
  p = jnp.ones((k,), dtype) if pref is None else jnp.asarray(pref, dtype)
  if p.shape != (k,):
    raise ValueError(f"pref must have shape ({k},) to match gram, got {p.shape}")
  lam, vecs = jnp.linalg.eigh(gn)
  tol = jnp.max(lam) * k * jnp.finfo(dtype).eps
  keep = lam > tol
  lam_min = jnp.min(jnp.where(keep, lam, jnp.inf))
  inv_sqrt = jnp.where(keep, jnp.sqrt(lam_min / jnp.where(keep, lam, 1.0)), 0.0)
  weights = vecs @ (inv_sqrt * (vecs.T @ p))
  return jnp.where(finite, jnp.where(jnp.any(keep), weights, p), jnp.nan)


def aligned_mtl(pref: Array | None = None) -> Weighting:
  """Aligned-MTL as a stateless :class:`~pub_optax.weightings.Weighting` named ``"aligned_mtl"``.

  Args:
    pref: see :func:`aligned_mtl_weights`.

  Returns:
    A Weighting; its residual is 0 (a closed form), inf when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import aligned_mtl
    >>> w = aligned_mtl()
    >>> res = w.weigh(jnp.array([[1.0, 0.0], [0.0, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]
    [1.0, 1.0]

  References:
    Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023.
  """

  def weights_and_residual(gram):
    weights = aligned_mtl_weights(gram, pref)
    ok = jnp.all(jnp.isfinite(gram))
    return flag_non_finite(ok, weights, jnp.zeros((), weights.dtype))

  return stateless_solver("aligned_mtl", weights_and_residual)
