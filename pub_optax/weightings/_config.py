"""ConFIG: the direction with equal cosine to every task, scaled by the tasks' total projection.

ConFIG (Liu et al. 2025) stacks the unit task vectors ``û_k = g_k / ‖g_k‖`` as the
rows of ``J_u`` and takes the direction

  u = J_u⁺ p   (p = 1 by default),   d = (Σ_k g_kᵀ û) û,   û = u / ‖u‖,

so that, when the task vectors are linearly independent, ``û_kᵀ u = p_k``: the
update has the same cosine with every task (for ``p = 1``), and its length is the
sum of the tasks' projections on it. On the Gram matrix, with ``D = diag(‖g_k‖)``
and ``G_u = D⁻¹ G D⁻¹`` the Gram matrix of the unit vectors, ``J_u⁺ = J_uᵀ G_u⁺``
gives ``u = Jᵀa`` with

  a = D⁻¹ G_u⁺ p,   w = a · (1ᵀ G a) / (aᵀ G a),   d = Jᵀ w.

The pseudo-inverse comes from the eigendecomposition of ``G_u``, dropping
eigenvalues below ``10 K eps`` times the largest (singular values of ``J_u`` below
``sqrt(10 K eps)`` of the largest, where TorchJD's ``torch.linalg.pinv`` drops
those below ``K eps``: the eigenvalues of a Gram matrix are only known to
``eps`` of the largest). Zero tasks (``G_kk ≤ eps² max_j G_jj``) have a zero unit
vector, as in TorchJD's ``nan_to_num``, and weight 0; a zero G gives ``1/K``.
The weights are invariant to scaling G.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import (
  Weighting,
  check_gram,
  solve_dtype,
  stateless_solver,
  unit_gram,
)
from pub_optax.weightings._linalg import finite_gram, flag_non_finite

Array = jax.Array


def _pinv_psd(g: Array) -> Array:
  """Pseudo-inverse of a symmetric PSD matrix, eigenvalues below ``10 K eps`` of the top dropped."""
  k = g.shape[0]
  vals, vecs = jnp.linalg.eigh(g)
  cutoff = 10.0 * k * jnp.finfo(g.dtype).eps * jnp.max(jnp.abs(vals))
  keep = vals > cutoff
  inv = jnp.where(keep, 1.0 / jnp.where(keep, vals, 1.0), 0.0)
  return (vecs * inv[None, :]) @ vecs.T


def config_weights(gram: Array, pref: Array | None = None) -> tuple[Array, Array]:
  r"""ConFIG weights ``w`` with ``Σ_k w_k g_k = (Σ_k g_kᵀû) û``, ``û ∝ J_u⁺ p``.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    pref: ``(K,)`` target cosines ``p`` up to a common factor (TorchJD's
      ``pref_vector``); ``None`` uses ones (equal cosines).

  Returns:
    ``(weights, residual)``: ``(K,)`` weights, invariant to scaling G, and the
    least-squares residual ``max_k |û_kᵀu − p_k| / max_k |p_k|`` of ``J_u u = p``
    over the non-zero tasks (0 up to rounding for linearly independent tasks;
    positive when ``p`` is not reachable, e.g. for dependent tasks). NaN weights
    and an infinite residual when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import config_weights
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal, norms 2 and 1
    >>> w, _ = config_weights(gram)  # d = (2 + 1)/√2 · (e1 + e2)/√2
    >>> [round(float(x), 4) for x in w], [round(float(x), 4) for x in gram @ w]
    ([0.75, 1.5], [3.0, 1.5])

  References:
    Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025 (Equation 2).
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  ok, safe = finite_gram(gram)
  g, _, nonzero = unit_gram(safe)
  p = jnp.ones((k,), dtype) if pref is None else jnp.asarray(pref, dtype)
  if p.shape != (k,):
    raise ValueError(f"pref must have shape ({k},) to match gram, got {p.shape}")
  sq = jnp.maximum(jnp.diagonal(g), 0.0)
  live = sq > jnp.finfo(dtype).eps ** 2
  inv_norm = jnp.where(live, jax.lax.rsqrt(jnp.where(live, sq, 1.0)), 0.0)
  g_unit = inv_norm[:, None] * g * inv_norm[None, :]
  coef = _pinv_psd(g_unit) @ jnp.where(live, p, 0.0)  # u = J_uᵀ coef
  a = inv_norm * coef  # u = Jᵀ a
  norm2 = a @ g @ a
  usable = nonzero & (norm2 > jnp.finfo(dtype).tiny) & jnp.all(jnp.isfinite(a))
  length = jnp.sum(g @ a)  # Σ_k g_kᵀ u
  weights = jnp.where(usable, a * length / jnp.where(usable, norm2, 1.0), 1.0 / k)
  reached = jnp.where(live, g_unit @ coef - p, 0.0)
  residual = jnp.where(usable, jnp.max(jnp.abs(reached)) / jnp.max(jnp.abs(p)), 0.0)
  return flag_non_finite(ok, weights, residual)


def config(pref: Array | None = None) -> Weighting:
  """ConFIG as a stateless :class:`~pub_optax.weightings.Weighting` named ``"config"``.

  Args:
    pref: see :func:`config_weights`.

  Returns:
    A Weighting; its residual is the least-squares residual of :func:`config_weights`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import config
    >>> w = config()
    >>> res = w.weigh(jnp.array([[1.0, -0.5], [-0.5, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # symmetric conflict: the sum
    [1.0, 1.0]

  References:
    Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025.
  """
  return stateless_solver("config", lambda gram: tuple(config_weights(gram, pref)))
