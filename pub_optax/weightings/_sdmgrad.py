"""SDMGrad: MGDA's min-norm problem regularised towards the average direction, by projected SGD.

SDMGrad (Xiao et al. 2023) looks for a direction close to the average gradient
``g0 = (1/K) Σ_k g_k`` that still improves every task. Its weights solve

  w* = argmin_{w ∈ Δ}  ½ ‖Σ_k w_k g_k‖² + λ (Σ_k w_k g_k)ᵀ g0,

and the update is ``d = (Σ_k w_k g_k + λ g0) / (1 + λ)``: task weights
``(w + λ/K) / (1 + λ)`` on the task vectors. As in the official code (and
LibMTL), ``w`` is found by a fixed number of projected momentum-SGD steps on the
simplex, warm-started from the previous step's ``w`` (state; ``1/K`` at first):
each step forms the gradient ``G̃ w + λ G̃ 1/K``, with ``G̃`` the Gram matrix
divided by the squared mean task norm, takes a heavy-ball step (torch SGD: the
momentum buffer starts at the first gradient, ``lr = 5``, momentum 0.5, reset
at every call) and projects onto the simplex (Duchi et al.'s sort-based
projection).

Differences from the official code: it builds ``G̃`` from two independent
mini-batches and the direction from a third (unbiased estimates for the
analysis); a Gram weighting sees one set of task vectors, so the same G serves
both. It divides by ``mean_k ‖g_k‖² + 1e-8``; here a zero G is left as zero
instead, so the weights are exactly invariant to scaling G.

Convergence of the inner loop: the official step size 5 exceeds ``2 / ‖G̃‖`` on
the differences of the weights when the task vectors are far from aligned
(e.g. orthogonal vectors of similar norms), and the iterate then bounces around
the simplex within the 20 steps, as in the official code; the residual reports
it, and a smaller ``learning_rate`` (e.g. 0.5 with ``niter=50``) converges.
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
  symmetric_gram,
)
from pub_optax.weightings._linalg import finite_gram

Array = jax.Array


class SDMGradResult(NamedTuple):
  """Result of :func:`sdmgrad_weights`.

  Attributes:
    weights: ``(K,)`` task weights ``(w + λ/K)/(1 + λ)`` (they sum to 1).
    simplex: ``(K,)`` the inner iterate ``w`` on the simplex (the next warm start).
    residual: projected-gradient residual ``‖w − Π_Δ(w − ∇)‖_∞`` of the inner
      problem at ``w`` (0 at its exact minimiser; the fixed budget stops earlier).
  """

  weights: Array
  simplex: Array
  residual: Array


def project_to_simplex(v: Array) -> Array:
  """Euclidean projection onto ``{w ≥ 0, Σ w = 1}`` (sort-based, exact).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import project_to_simplex
    >>> project_to_simplex(jnp.array([0.5, 1.5, -1.0])).tolist()
    [0.0, 1.0, 0.0]
  """
  k = v.shape[0]
  u = jnp.sort(v)[::-1]
  css = jnp.cumsum(u)
  index = jnp.arange(1, k + 1, dtype=v.dtype)
  rho = jnp.max(jnp.where(u * index > css - 1.0, jnp.arange(k), 0))
  theta = (css[rho] - 1.0) / (rho + 1.0)
  return jnp.maximum(v - theta, 0.0)


def _normalised(gram: Array) -> Array:
  g = symmetric_gram(gram)
  scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))) ** 2
  nonzero = scale > jnp.finfo(g.dtype).tiny
  return jnp.where(nonzero, g / jnp.where(nonzero, scale, 1.0), 0.0)


def sdmgrad_weights(
  gram: Array,
  start: Array | None = None,
  *,
  lamda: float = 0.3,
  niter: int = 20,
  learning_rate: float = 5.0,
  momentum: float = 0.5,
) -> SDMGradResult:
  r"""SDMGrad weights from ``niter`` projected momentum-SGD steps on the simplex.

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    start: ``(K,)`` inner starting point on the simplex (the previous ``simplex``);
      ``None`` uses ``1/K``.
    lamda: λ, the pull towards the average gradient (``SDMGrad_lamda``, 0.3).
    niter: inner steps (``SDMGrad_niter``, 20), static.
    learning_rate, momentum: the inner SGD's (5 and 0.5 in the official code).

  Returns:
    An :class:`SDMGradResult`; invariant to scaling G. NaN weights when G has a
    non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import sdmgrad_weights
    >>> res = sdmgrad_weights(jnp.array([[1.0, 0.0], [0.0, 1.0]]))  # symmetric: stays 1/2
    >>> [round(float(x), 4) for x in res.weights]
    [0.5, 0.5]
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # inner optimum w = (0.11, 0.89)
    >>> res = sdmgrad_weights(gram, learning_rate=0.5, niter=50)
    >>> [round(float(x), 3) for x in res.weights], float(res.residual) < 1e-6
    ([0.2, 0.8], True)

  References:
    Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023 (Algorithm 1; LibMTL's SDMGrad).
  """
  check_gram(gram)
  if lamda < 0.0:
    raise ValueError(f"lamda must be non-negative, got {lamda}")
  if int(niter) < 1:
    raise ValueError(f"niter must be at least 1, got {niter}")
  dtype = solve_dtype(gram)
  k = gram.shape[0]
  ok, safe = finite_gram(jnp.asarray(gram, dtype))
  g = _normalised(safe)
  pull = lamda * jnp.mean(g, axis=1)  # λ G̃ 1/K
  w = jnp.full((k,), 1.0 / k, dtype) if start is None else jnp.asarray(start, dtype)
  if w.shape != (k,):
    raise ValueError(f"start must have shape ({k},) to match gram, got {w.shape}")

  def step(t, carry):
    w, buf = carry
    grad = g @ w + pull
    buf = jnp.where(t == 0, grad, momentum * buf + grad)
    return project_to_simplex(w - learning_rate * buf), buf

  w, _ = jax.lax.fori_loop(0, int(niter), step, (w, jnp.zeros((k,), dtype)))
  grad = g @ w + pull
  residual = jnp.max(jnp.abs(w - project_to_simplex(w - grad)))
  weights = (w + lamda / k) / (1.0 + lamda)
  return SDMGradResult(
    jnp.where(ok, weights, jnp.nan), w, jnp.where(ok, residual, jnp.inf).astype(dtype)
  )


def sdmgrad(
  lamda: float = 0.3, niter: int = 20, *, learning_rate: float = 5.0, momentum: float = 0.5
) -> Weighting:
  """SDMGrad as a :class:`~pub_optax.weightings.Weighting` named ``"sdmgrad"``, warm-started.

  Args:
    lamda, niter, learning_rate, momentum: see :func:`sdmgrad_weights`.

  Returns:
    A Weighting whose state is the inner simplex iterate (``1/K`` at first); its
    residual is :attr:`SDMGradResult.residual`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import sdmgrad
    >>> w = sdmgrad()
    >>> res = w.weigh(jnp.array([[1.0, 0.9], [0.9, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]
    [0.5, 0.5]

  References:
    Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023.
  """
  lamda = float(lamda)
  if lamda < 0.0:
    raise ValueError(f"lamda must be non-negative, got {lamda}")
  if int(niter) < 1:
    raise ValueError(f"niter must be at least 1, got {niter}")

  def init(num_tasks, dtype):
    return jnp.full((num_tasks,), 1.0 / num_tasks, jnp.promote_types(dtype, jnp.float32))

  def weigh(gram, state, task_losses=None):
    del task_losses
    res = sdmgrad_weights(
      gram, state, lamda=lamda, niter=niter, learning_rate=learning_rate, momentum=momentum
    )
    ok = jnp.all(jnp.isfinite(res.weights))
    new_state = jnp.where(ok, res.simplex, state).astype(state.dtype)
    return WeightingResult(res.weights.astype(state.dtype), new_state, res.residual)

  return Weighting(init=init, weigh=weigh, name="sdmgrad", needs_losses=False)
