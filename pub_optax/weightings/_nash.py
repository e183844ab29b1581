"""Nash-bargaining task weights: ``α_k (Gα)_k = 1, α > 0``, solved by damped Newton on device.

The Nash conditions are the stationarity conditions of the strictly convex potential

  φ(α) = ½ αᵀ G α − Σ_k log α_k,

so a few Newton steps solve them to machine precision with nothing but K×K linear
algebra: no cvxpy, no host round-trip, fixed iteration budget, jittable and vmappable.
Newton runs in the scaled variables ``α = a ∘ (1 + δ)``, where the Hessian is
``diag(a) G diag(a) + I`` (every eigenvalue ≥ 1), so the linear solves are well
conditioned whatever the scale of G.

When no Nash solution exists the solver still returns finite positive weights, by
this rule, and reports it with ``exact = False``:

* **Zero tasks.** A task whose squared norm ``G_kk`` is at most ``eps² · max_j G_jj``
  carries no update. It is left out of the bargaining and given the mean weight of
  the other tasks (weight 1 for every task when G is zero).
* **Cancelling tasks.** If a positive combination of the task vectors is zero (the
  point is Pareto-stationary), φ is unbounded below. A relative ridge
  ``G + ridge · diag(G)`` (``ridge`` defaults to ``10 · eps`` of the dtype) makes the
  problem well posed; for solvable G its effect is below the solver's tolerance.
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
  symmetric_gram,
)

Array = jax.Array


class NashResult(NamedTuple):
  """Result of :func:`nash_weights`.

  Attributes:
    weights: ``(K,)`` positive, finite task weights α.
    residual: ``‖Gα − 1/α‖ / ‖1/α‖`` over the non-zero tasks, measured on the given
      G (without the ridge). Around machine precision when a solution exists.
    iterations: number of Newton steps taken.
    exact: True when α solves the Nash conditions for the given G: no zero task,
      Newton converged, ``residual ≤ 8·sqrt(eps)`` and the ridge's share of every
      condition is below that too. False means the fallback rule above applied.
  """

  weights: Array
  residual: Array
  iterations: Array
  exact: Array


def nash_weights(
  gram: Array,
  init: Array | None = None,
  *,
  max_iter: int = 64,
  ridge: float | None = None,
) -> NashResult:
  r"""Solves ``α_k (Gα)_k = 1`` for ``α > 0`` (Nash bargaining over task vectors).

  ``G = D Dᵀ`` is the Gram matrix of the task vectors (gradients or updates). At the
  solution ``‖Σ_k α_k d_k‖² = αᵀGα = K``, and scaling ``G → cG`` gives ``α → α/√c``;
  no normalisation of G is needed by the caller.

  Args:
    gram: ``(K, K)`` symmetric positive semi-definite matrix, any scale.
    init: optional ``(K,)`` warm start (e.g. the previous step's weights). It is
      rescaled along its ray to the optimal size before Newton starts; a
      non-positive or non-finite warm start is ignored.
    max_iter: iteration budget (static). Newton stops earlier once the Newton
      decrement reaches machine precision.
    ridge: relative ridge for Gram matrices without a Nash solution (see module
      docstring); ``None`` uses ``10 · eps`` of the solve dtype.

  Returns:
    A :class:`NashResult`.

  Example:
    >>> import jax.numpy as jnp
    >>> import pub_optax
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal updates, norms 2 and 1
    >>> res = pub_optax.nash_weights(gram)
    >>> [round(float(w), 4) for w in res.weights], bool(res.exact)
    ([0.5, 1.0], True)

  References:
    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.
    Yuan, Cai & Dong, "A Parameter Update Balancing Algorithm for Multi-task
    Ranking Models in Recommendation Systems", arXiv 2410.05806.
  """
  check_gram(gram)
  if init is not None and jnp.shape(init) != (gram.shape[0],):
    raise ValueError(
      f"init must have shape ({gram.shape[0]},) to match gram, got {jnp.shape(init)}"
    )
  # One compiled solver per (shape, dtype, budget): eager calls reuse it instead of
  # retracing the while_loop every time; under an outer jit it is simply inlined.
  return _solve(gram, init, max_iter=max_iter, ridge=ridge)


@functools.partial(jax.jit, static_argnames=("max_iter", "ridge"))
def _solve(gram, init, *, max_iter, ridge):
  dtype = solve_dtype(gram)
  eps = jnp.finfo(dtype).eps
  ridge = 10.0 * eps if ridge is None else ridge
  k = gram.shape[0]
  g = symmetric_gram(gram)

  sq_norms = jnp.maximum(jnp.diagonal(g), 0.0)
  active = sq_norms > (eps**2) * jnp.max(sq_norms)
  both = active[:, None] & active[None, :]
  eye = jnp.eye(k, dtype=dtype)
  # Zero tasks get the decoupled equation α_k² = 1 and are overwritten at the end.
  g_active = jnp.where(both, g, 0.0)
  g_solve = g_active + jnp.diag(jnp.where(active, ridge * sq_norms, 1.0))

  def potential(a):
    return 0.5 * a @ g_solve @ a - jnp.sum(jnp.log(a))

  def rescale(v):
    # The best multiple of v: argmin_c φ(c v) = sqrt(K / vᵀGv).
    return v * jnp.sqrt(k / (v @ g_solve @ v))

  cold = rescale(1.0 / jnp.sqrt(jnp.diagonal(g_solve)))
  if init is None:
    a0 = cold
  else:
    v = jnp.asarray(init, dtype)
    usable = jnp.all(jnp.isfinite(v) & (v > 0))
    a0 = jnp.where(usable, rescale(jnp.where(usable, v, 1.0)), cold)

  tol = eps

  def step(carry):
    a, it, _ = carry
    residual = a * (g_solve @ a) - 1.0  # gradient in scaled variables
    hess = a[:, None] * g_solve * a[None, :] + eye  # eigenvalues >= 1
    chol = jax.scipy.linalg.cho_factor(hess, lower=True)
    delta = -jax.scipy.linalg.cho_solve(chol, residual)
    lam2 = jnp.maximum(-(residual @ delta), 0.0)  # squared Newton decrement
    lam = jnp.sqrt(lam2)
    full = a * (1.0 + delta)
    full_ok = (lam < 0.25) | (
      jnp.all(1.0 + delta > 0.0)
      & (potential(jnp.where(full > 0, full, 1.0)) <= potential(a) - 0.1 * lam2)
    )
    # Damped step 1/(1+λ) stays inside the Dikin ellipsoid: positive and decreasing.
    damped = a * (1.0 + delta / (1.0 + lam))
    a_next = jnp.where(full_ok, full, damped)
    return a_next, it + 1, lam2

  def keep_going(carry):
    _, it, lam2 = carry
    return (it < max_iter) & (lam2 > tol)

  a, iterations, last_lam2 = jax.lax.while_loop(
    keep_going, step, (a0, jnp.zeros((), jnp.int32), jnp.array(jnp.inf, dtype))
  )

  inv = jnp.where(active, 1.0 / a, 0.0)
  resid_vec = jnp.where(active, g_active @ jnp.where(active, a, 0.0) - inv, 0.0)
  residual = jnp.linalg.norm(resid_vec) / jnp.maximum(jnp.linalg.norm(inv), jnp.finfo(dtype).tiny)
  n_active = jnp.sum(active)
  fill = jnp.where(n_active > 0, jnp.sum(jnp.where(active, a, 0.0)) / jnp.maximum(n_active, 1), 1.0)
  weights = jnp.where(active, a, fill)
  # Exact: Newton converged, the conditions hold for G itself, and the ridge's share
  # α_k·ridge·G_kk·α_k of each condition α_k (Gα)_k = 1 is negligible.
  tol_exact = 8.0 * jnp.sqrt(eps)
  ridge_share = ridge * jnp.max(jnp.where(active, sq_norms * a * a, 0.0))
  exact = (
    jnp.all(active) & (last_lam2 <= tol) & (residual <= tol_exact) & (ridge_share <= tol_exact)
  )
  return NashResult(weights, residual, iterations, exact)


def nash(max_iter: int = 64, ridge: float | None = None) -> Weighting:
  """Nash-bargaining weighting (PUB's solver, Nash-MTL at gradient level), warm-started.

  Args:
    max_iter: Newton iteration budget per solve.
    ridge: relative ridge, see :func:`nash_weights`.

  Returns:
    A :class:`~pub_optax.weightings.Weighting` whose state is the previous
    weights (zeros before the first solve, meaning a cold start).

  Example:
    >>> import jax.numpy as jnp
    >>> import pub_optax
    >>> w = pub_optax.weightings.nash()
    >>> state = w.init(2, jnp.float32)
    >>> res = w.weigh(jnp.array([[4.0, 0.0], [0.0, 1.0]]), state, None)
    >>> [round(float(x), 4) for x in res.weights]
    [0.5, 1.0]
  """

  def init(num_tasks, dtype):
    return jnp.zeros((num_tasks,), jnp.promote_types(dtype, jnp.float32))

  def weigh(gram, state, task_losses=None):
    del task_losses
    res = nash_weights(gram, init=state, max_iter=max_iter, ridge=ridge)
    weights = res.weights.astype(state.dtype)
    return WeightingResult(weights, weights, res.residual.astype(state.dtype))

  return Weighting(init=init, weigh=weigh, name="nash")
