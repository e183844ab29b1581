"""CAGrad: the best worst-task improvement within a ball around the average gradient, on device.

CAGrad (Liu et al. 2021) looks for ``d`` maximising ``min_k g_kᵀ d`` subject to
``‖d − g0‖ ≤ r``, with ``g0 = (1/K) Σ_k g_k`` and ``r = c ‖g0‖``. Its dual is

  w* = argmin_{w ∈ Δ}  F(w) = g_wᵀ g0 + r ‖g_w‖,   g_w = Σ_k w_k g_k,

and ``d = g0 + λ g_w`` with ``λ = r / ‖g_w‖``; the published code then divides
by ``1 + c²`` (``rescale=True``). On the Gram matrix the task weights are

  α = (1/K + λ w*) / (1 + c²).

Exact solve without an SQP solver: the KKT conditions of F say that ``w*``
minimises ``g_wᵀg0 + (λ/2)‖g_w‖²`` over the simplex, which is MGDA on the shifted
vectors ``g_k + g0/λ`` (Gram ``G + (b1ᵀ + 1bᵀ)/λ + ‖g0‖²11ᵀ/λ²``, ``b = G1/K``),
solved exactly by :func:`~pub_optax.weightings.mgda_weights`; and λ is the
root of ``q(λ²) = λ²‖g_{w(λ)}‖² = r²``. ``q`` is increasing and piecewise affine
in ``t = λ²`` (affine while the support of ``w`` does not change), so a bracketed
root search (geometric bisection while the bracket is wide, then Illinois
regula falsi, exact within one piece) finds it in a few dozen steps at most.
The bracket is ``[0, r²/‖m‖²]`` with ``m`` MGDA's min-norm point.

Degenerate case, by rule: when ``g0 = 0`` or ``c = 0`` (``r = 0``), or when no root
exists below ``t = r²/eps`` (the optimal ``g_w`` vanishes, e.g. a zero task
vector), ``λ = 0`` and ``α = 1/(K(1 + c²))``: the direction is the (rescaled)
average gradient. The residual then reports 1 in the no-root case.
"""

from __future__ import annotations

import functools
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
from pub_optax.weightings._linalg import finite_gram, flag_non_finite
from pub_optax.weightings._mgda import mgda_weights

Array = jax.Array


class CAGradResult(NamedTuple):
  """Result of :func:`cagrad_weights`.

  Attributes:
    weights: ``(K,)`` task weights α (``Σ_k α_k g_k`` is CAGrad's direction).
    simplex: ``(K,)`` the dual solution ``w*`` on the simplex (in the degenerate
      cases, the last MGDA iterate).
    radius_multiplier: λ ≥ 0 (``d = g0 + λ g_w`` before rescaling).
    residual: ``|λ²‖g_w‖² − r²| / r²`` at the returned point (0 when r = 0, 1 when
      no root exists).
    iterations: root-search steps taken (each one MGDA solve; two more set up
      the bracket).
  """

  weights: Array
  simplex: Array
  radius_multiplier: Array
  residual: Array
  iterations: Array


def cagrad_objective(gram: Array, w: Array, c: float) -> Array:
  """``F(w) = g_wᵀg0 + c‖g0‖‖g_w‖`` computed from the Gram matrix."""
  k = gram.shape[0]
  b = jnp.sum(gram, axis=1) / k
  g0 = jnp.sqrt(jnp.maximum(jnp.sum(b) / k, 0.0))
  return w @ b + c * g0 * jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))


def _search_step(carry, gn, b, g0sq, r2, live, t_floor, eps, qp_max_iter):
  """One step of the root search for λ (the comments in :func:`cagrad_weights` give the plan)."""
  ones = jnp.ones_like(b)
  it, t_lo, f_lo, t_hi, f_hi, last, _, _, has_root, _ = carry
  wide = t_hi > 4.0 * jnp.maximum(t_lo, t_floor)
  t_geo = jnp.sqrt(jnp.maximum(t_lo, t_floor) * t_hi)
  span = f_hi - f_lo  # ≥ 0
  t_sec = t_lo + f_lo * (t_lo - t_hi) / jnp.where(span > 0, span, 1.0)
  t = jnp.clip(jnp.where(wide, t_geo, t_sec), t_lo, t_hi)
  t = jnp.where(it == 1, t_hi, t)
  mu = jnp.where(it == 0, 0.0, jax.lax.rsqrt(jnp.where(it == 0, 1.0, t)))
  shifted = gn + mu * (b[:, None] + b[None, :]) + (mu * mu * g0sq) * jnp.outer(ones, ones)
  w = mgda_weights(shifted, max_iter=qp_max_iter).weights
  gw2 = jnp.maximum(w @ gn @ w, 0.0)
  f = t * gw2 - r2
  low = f <= 0.0
  # Illinois: halve the value of an end that is kept twice in a row.
  search = (
    jnp.where(low, t, t_lo),
    jnp.where(low, f, jnp.where(last == -1, 0.5 * f_lo, f_lo)),
    jnp.where(low, t_hi, t),
    jnp.where(low, jnp.where(last == 1, 0.5 * f_hi, f_hi), f),
    jnp.where(low, 1, -1).astype(jnp.int32),
  )
  done = (jnp.abs(f) <= 8.0 * eps * r2) | (search[2] - search[0] <= 4.0 * eps * search[2])
  first = (t_lo, f_lo, jnp.where(live, r2 / jnp.maximum(gw2, eps), 1.0), f_hi, last)
  second = (t_lo, f_lo, t_hi, f, last)
  state = jax.tree.map(
    lambda a, b_, c_: jnp.where(it == 0, a, jnp.where(it == 1, b_, c_)), first, second, search
  )
  has_root = jnp.where(it == 1, live & ((r2 / t_hi > eps) | (f >= 0.0)), has_root)
  done = jnp.where(it == 0, ~live, jnp.where(it == 1, ~has_root, done))
  return (it + 1,) + state + (t, w, has_root, done)


def cagrad_weights(
  gram: Array,
  c: float = 0.4,
  *,
  rescale: bool = True,
  max_iter: int = 64,
  qp_max_iter: int | None = None,
) -> CAGradResult:
  r"""CAGrad task weights ``α = (1/K + λ w*)/(1 + c²)`` from the Gram matrix.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    c: radius of the ball relative to ``‖g0‖`` (``0 ≤ c < 1`` in the paper; 0.4 is
      the published default).
    rescale: divide by ``1 + c²`` as the official code does (``rescale=1``).
    max_iter: static budget of root-search steps (each one MGDA solve).
    qp_max_iter: active-set budget of each MGDA solve.

  Returns:
    A :class:`CAGradResult`. The weights are invariant to scaling G; NaN, with an
    infinite residual, when G has a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import cagrad_weights
    >>> gram = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # orthogonal unit vectors
    >>> res = cagrad_weights(gram, c=0.4, rescale=False)
    >>> [round(float(a), 4) for a in res.weights]  # symmetric: d = (1 + c) g0
    [0.7, 0.7]

  References:
    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021.
  """
  check_gram(gram)
  if c < 0:
    raise ValueError(f"c must be non-negative, got {c}")
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  eps = jnp.finfo(dtype).eps
  finite, gram = finite_gram(gram)
  gn, scale, nonzero = unit_gram(gram)
  b = jnp.sum(gn, axis=1) / k  # J g0
  g0sq = jnp.maximum(jnp.sum(b) / k, 0.0)  # ‖g0‖²
  r2 = c * c * g0sq

  live = nonzero & (r2 > jnp.finfo(dtype).tiny)
  # Known lower end: q(0) = 0; geometric steps start from t = r² (q(r²) ≤ r² since max G_kk = 1).
  t_floor = jnp.where(live, r2, 1.0)

  # One loop, one MGDA call site (it keeps the compiled program small):
  #   step 0: MGDA on G itself (μ = 1/λ = 0) gives ‖m‖² and the upper end t_hi = r²/‖m‖²;
  #   step 1: q(t_hi), which brackets the root (‖g_w‖ ≥ ‖m‖ on the simplex) unless ‖m‖² hit
  #           the eps floor, in which case it is checked;
  #   steps 2+: the bracketed root search.
  step = functools.partial(
    _search_step, gn=gn, b=b, g0sq=g0sq, r2=r2, live=live, t_floor=t_floor, eps=eps,
    qp_max_iter=qp_max_iter,
  )  # fmt: skip

  def keep_going(carry):
    return (carry[0] < max_iter + 2) & ~carry[9]

  zero = jnp.zeros((), dtype)
  init = (
    jnp.zeros((), jnp.int32),
    zero,
    -r2,
    jnp.ones((), dtype),
    zero,
    jnp.zeros((), jnp.int32),
    jnp.ones((), dtype),
    jnp.full((k,), 1.0 / k, dtype),
    jnp.array(False),
    jnp.array(False),
  )
  it, _, _, _, _, _, t, w, has_root, _ = jax.lax.while_loop(keep_going, step, init)

  q = t * jnp.maximum(w @ gn @ w, 0.0)
  lam = jnp.where(has_root, jnp.sqrt(t), 0.0)
  alpha = 1.0 / k + lam * w
  if rescale:
    alpha = alpha / (1.0 + c * c)
  residual = jnp.where(
    has_root, jnp.abs(q - r2) / jnp.where(has_root, r2, 1.0), jnp.where(live, 1.0, 0.0)
  )
  alpha, residual = flag_non_finite(finite, alpha, residual.astype(dtype))
  return CAGradResult(alpha, w, lam, residual, jnp.maximum(it - 2, 0))


def cagrad(
  c: float = 0.4, *, rescale: bool = True, max_iter: int = 64, qp_max_iter: int | None = None
) -> Weighting:
  """CAGrad as a stateless :class:`~pub_optax.weightings.Weighting` named ``"cagrad"``.

  Args:
    c, rescale, max_iter, qp_max_iter: see :func:`cagrad_weights`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import cagrad
    >>> w = cagrad(c=0.4)
    >>> res = w.weigh(jnp.eye(2), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]  # 0.7 / (1 + 0.16)
    [0.6034, 0.6034]

  References:
    Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021.
  """
  if c < 0:
    raise ValueError(f"c must be non-negative, got {c}")

  def init(num_tasks, dtype):
    del num_tasks, dtype
    return ()

  def weigh(gram, state, task_losses=None):
    del task_losses
    res = cagrad_weights(gram, c, rescale=rescale, max_iter=max_iter, qp_max_iter=qp_max_iter)
    return WeightingResult(res.weights, state, res.residual)

  return Weighting(init=init, weigh=weigh, name="cagrad")
