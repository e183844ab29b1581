"""Nash-bargaining task weights: ``α_k (Gα)_k = 1, α > 0``, solved by damped Newton on device.

The Nash conditions are the stationarity conditions of the strictly convex potential

  φ(α) = ½ αᵀ G α − Σ_k log α_k,

so a few Newton steps solve them to machine precision with nothing but K×K linear
algebra: no cvxpy, no host round-trip, fixed iteration budget, jittable and vmappable.
Newton runs on the unit-scale Gram matrix (largest ``G_kk`` = 1; ``α(cG) = α(G)/√c``)
in the scaled variables ``α = a ∘ (1 + δ)``, where the Hessian is
``diag(a) G diag(a) + I`` (every eigenvalue ≥ 1).

How it runs depends on K and on the platform that executes the program (chosen with
:func:`jax.lax.platform_dependent`, so a program traced on one machine and run on
another takes the right path):

* **K ≤ 2**: the closed form ``α_k = 1/√(G_kk (1 + ρ + ridge))``, ρ the correlation
  of the two tasks: exact for the ridged G, no iteration anywhere.
* **3 ≤ K ≤ 16 on GPU/TPU**: a fixed budget of 16 Newton steps written out in full,
  each solve by unrolled Gauss–Jordan: no ``while``, no solver library call, nothing
  that waits on the host. Steps after convergence leave α unchanged, so the result
  is the loop's whenever Newton converges within the budget (well-conditioned
  problems need at most about 10 steps).
* **CPU, and K > 16 everywhere**: Newton in a ``while_loop`` with a library Cholesky
  factorisation, stopping as soon as the Newton decrement reaches machine precision
  (on CPU the written-out program is slower: ``benchmarks/solver.py --loop-free-only``).

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
from pub_optax.weightings._linalg import finite_gram, flag_non_finite, spd_solve_unrolled

Array = jax.Array


class NashResult(NamedTuple):
  """Result of :func:`nash_weights`.

  Attributes:
    weights: ``(K,)`` positive, finite task weights α.
    residual: ``‖Gα − 1/α‖ / ‖1/α‖`` over the non-zero tasks, measured on the given
      G (without the ridge). Around machine precision when a solution exists.
    iterations: number of Newton steps taken (0 for the K ≤ 2 closed form).
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
      decrement reaches machine precision. The unrolled path on accelerators
      takes at most ``min(max_iter, 16)`` steps.
    ridge: relative ridge for Gram matrices without a Nash solution (see module
      docstring); ``None`` uses ``10 · eps`` of the solve dtype.

  Returns:
    A :class:`NashResult`. A Gram matrix with a NaN or ±Inf entry gives NaN weights
    and an infinite residual.

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


# Largest K solved without a loop on accelerators, and the fixed Newton budget there.
LOOP_FREE_MAX_K = 16
LOOP_FREE_STEPS = 16


class _Problem(NamedTuple):
  """The Nash problem on the unit-scale Gram matrix (largest ``G_kk`` is 1)."""

  g_active: Array  # G restricted to the non-zero tasks
  g_solve: Array  # g_active plus the ridge; 1 on the diagonal of zero tasks
  active: Array  # (K,) bool, the non-zero tasks
  sq_norms: Array  # (K,) G_kk


def _problem(gn: Array, ridge: float) -> _Problem:
  eps = jnp.finfo(gn.dtype).eps
  sq_norms = jnp.maximum(jnp.diagonal(gn), 0.0)
  active = sq_norms > (eps**2) * jnp.max(sq_norms)
  both = active[:, None] & active[None, :]
  # Zero tasks get the decoupled equation α_k² = 1 and are overwritten at the end.
  g_active = jnp.where(both, gn, 0.0)
  g_solve = g_active + jnp.diag(jnp.where(active, ridge * sq_norms, 1.0))
  return _Problem(g_active, g_solve, active, sq_norms)


def _potential(p: _Problem, a: Array) -> Array:
  return 0.5 * a @ p.g_solve @ a - jnp.sum(jnp.log(a))


def _rescale(p: _Problem, v: Array) -> Array:
  """The best multiple of v: ``argmin_c φ(c v) = sqrt(K / vᵀGv)``."""
  return v * jnp.sqrt(v.shape[0] / (v @ p.g_solve @ v))


def _start(p: _Problem, init: Array | None) -> Array:
  """The cold start ``1/√G_kk`` rescaled, or the warm start's direction rescaled."""
  cold = _rescale(p, jax.lax.rsqrt(jnp.diagonal(p.g_solve)))
  if init is None:
    return cold
  v = jnp.asarray(init, p.g_solve.dtype)
  usable = jnp.all(jnp.isfinite(v) & (v > 0))
  v = jnp.where(usable, v, 1.0)
  warm = _rescale(p, v / jnp.max(v))  # only its direction counts: divide out its size
  usable = usable & jnp.all(jnp.isfinite(warm) & (warm > 0))
  return jnp.where(usable, warm, cold)


def _newton_step(p: _Problem, a: Array, solve) -> tuple[Array, Array]:
  """One damped Newton step in the scaled variables; returns ``(a, λ²)``, λ² = −1 on breakdown.

  The Hessian ``diag(a) G diag(a) + I`` has every eigenvalue ≥ 1 but can be too
  ill-conditioned to factor in floating point (cancelling tasks held by the ridge
  have large weights); a shift of ``K·eps`` times its largest diagonal entry keeps
  the factorisation finite. The step stays a descent direction, and the decrement
  it gives bounds the Hessian norm of the step, so the damped step is still safe.
  """
  k = a.shape[0]
  eps = jnp.finfo(a.dtype).eps
  eye = jnp.eye(k, dtype=a.dtype)
  residual = a * (p.g_solve @ a) - 1.0  # gradient in scaled variables
  hess = a[:, None] * p.g_solve * a[None, :] + eye
  hess = hess + (k * eps * jnp.max(jnp.diagonal(hess))) * eye
  delta = -solve(hess, residual)
  finite = jnp.all(jnp.isfinite(delta))
  delta = jnp.where(finite, delta, 0.0)
  lam2 = jnp.maximum(-(residual @ delta), 0.0)  # squared Newton decrement
  lam = jnp.sqrt(lam2)
  full = a * (1.0 + delta)
  decrease = _potential(p, jnp.where(full > 0, full, 1.0)) <= _potential(p, a) - 0.1 * lam2
  full_ok = (lam < 0.25) | (jnp.all(1.0 + delta > 0.0) & decrease)
  # Damped step 1/(1+λ) stays inside the Dikin ellipsoid: positive and decreasing.
  damped = a * (1.0 + delta / (1.0 + lam))
  return jnp.where(full_ok, full, damped), jnp.where(finite, lam2, -1.0)


def _lapack_solve(hess: Array, rhs: Array) -> Array:
  return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(hess, lower=True), rhs)


def _unrolled_solve(hess: Array, rhs: Array) -> Array:
  return spd_solve_unrolled(hess, rhs, floor=1.0)


def _newton_loop(p: _Problem, a0: Array, *, max_iter: int, tol: Array):
  """Newton under a ``while_loop`` with library Cholesky, until ``λ² ≤ tol``."""

  def step(carry):
    a, it, _ = carry
    a, lam2 = _newton_step(p, a, _lapack_solve)
    return a, it + 1, lam2

  def keep_going(carry):
    _, it, lam2 = carry
    return (it < max_iter) & (lam2 > tol)

  init = (a0, jnp.zeros((), jnp.int32), jnp.array(jnp.inf, a0.dtype))
  return jax.lax.while_loop(keep_going, step, init)


def _newton_unrolled(p: _Problem, a0: Array, *, max_iter: int, tol: Array):
  """The same iteration with a fixed budget, written out: no loop, no library call.

  A step is applied only while the loop above would still run, so both give the
  same iterates up to rounding whenever Newton converges within the budget.
  """

  def step(carry, _):
    a, it, lam2 = carry
    a_next, lam2_next = _newton_step(p, a, _unrolled_solve)
    going = lam2 > tol
    a = jnp.where(going, a_next, a)
    lam2 = jnp.where(going, lam2_next, lam2)
    return (a, it + going.astype(jnp.int32), lam2), None

  # unroll=True writes the steps out (no while in the program); the body is traced once.
  init = (a0, jnp.zeros((), jnp.int32), jnp.array(jnp.inf, a0.dtype))
  steps = min(max_iter, LOOP_FREE_STEPS)
  return jax.lax.scan(step, init, None, length=steps, unroll=True)[0]


def _closed_form(p: _Problem, ridge: float):
  """K ≤ 2: ``α_k = 1/√(G_kk (1 + ρ + ridge))``, ρ the correlation, exact for the ridged G."""
  rho = 0.0
  if p.active.shape[0] == 2:
    both = jnp.all(p.active)
    denom = jnp.sqrt(jnp.where(both, p.sq_norms[0] * p.sq_norms[1], 1.0))
    rho = jnp.where(both, p.g_active[0, 1] / denom, 0.0)
  sq = jnp.where(p.active, p.sq_norms, 1.0)
  # Opposite tasks without a ridge have no solution: the eps floor keeps α finite.
  shared = jnp.maximum(jnp.maximum(1.0 + rho, 0.0) + ridge, jnp.finfo(sq.dtype).eps)
  a = jnp.where(p.active, jax.lax.rsqrt(sq * shared), 1.0)
  return a, jnp.zeros((), jnp.int32), jnp.zeros((), a.dtype)


def _finish(p: _Problem, a, iterations, lam2, *, ridge, tol):
  """Weights on the unit scale, the residual on G and the exactness flag."""
  dtype = a.dtype
  eps = jnp.finfo(dtype).eps
  active = p.active
  inv = jnp.where(active, 1.0 / a, 0.0)
  resid_vec = jnp.where(active, p.g_active @ jnp.where(active, a, 0.0) - inv, 0.0)
  norm_inv = jnp.maximum(jnp.linalg.norm(inv), jnp.finfo(dtype).tiny)
  residual = jnp.linalg.norm(resid_vec) / norm_inv
  n_active = jnp.sum(active)
  total = jnp.sum(jnp.where(active, a, 0.0))
  fill = jnp.where(n_active > 0, total / jnp.maximum(n_active, 1), 1.0)
  weights = jnp.where(active, a, fill)
  # Exact: Newton converged, the conditions hold for G itself, and the ridge's share
  # α_k·ridge·G_kk·α_k of each condition α_k (Gα)_k = 1 is negligible.
  tol_exact = 8.0 * jnp.sqrt(eps)
  ridge_share = ridge * jnp.max(jnp.where(active, p.sq_norms * a * a, 0.0))
  converged = (lam2 >= 0.0) & (lam2 <= tol)
  exact = jnp.all(active) & converged & (residual <= tol_exact) & (ridge_share <= tol_exact)
  return weights, residual, iterations, exact


def _iterate(p: _Problem, a0: Array, *, max_iter: int, tol: Array, ridge: float, loop_free):
  """Picks the solve: the K ≤ 2 closed form; for K ≤ ``LOOP_FREE_MAX_K`` the loop on CPU and
  the unrolled budget elsewhere (decided by the platform the program runs on); else the loop.

  ``loop_free`` True or False forces the unrolled (with the closed form) or the loop path.
  """
  k = a0.shape[0]
  newton = dict(max_iter=max_iter, tol=tol)
  if loop_free is False:
    return _newton_loop(p, a0, **newton)
  if k <= 2:
    return _closed_form(p, ridge)
  if loop_free or k > LOOP_FREE_MAX_K:
    return (_newton_unrolled if loop_free else _newton_loop)(p, a0, **newton)
  return jax.lax.platform_dependent(
    p,
    a0,
    cpu=functools.partial(_newton_loop, **newton),
    default=functools.partial(_newton_unrolled, **newton),
  )


@functools.partial(jax.jit, static_argnames=("max_iter", "ridge", "loop_free"))
def _solve(gram, init, *, max_iter, ridge, loop_free=None):
  dtype = solve_dtype(gram)
  eps = jnp.finfo(dtype).eps
  ridge = 10.0 * eps if ridge is None else ridge
  ok, safe = finite_gram(jnp.asarray(gram, dtype))
  # Solve on the unit-scale G: α(cG) = α(G)/√c, and nothing over- or underflows.
  g = symmetric_gram(safe)
  scale = jnp.max(jnp.maximum(jnp.diagonal(g), 0.0))
  nonzero = scale > jnp.finfo(dtype).tiny
  p = _problem(jnp.where(nonzero, g / jnp.where(nonzero, scale, 1.0), 0.0), ridge)
  a0 = _start(p, init)
  tol = jnp.asarray(eps, dtype)
  a, iterations, lam2 = _iterate(
    p, a0, max_iter=max_iter, tol=tol, ridge=ridge, loop_free=loop_free
  )
  weights, residual, iterations, exact = _finish(p, a, iterations, lam2, ridge=ridge, tol=tol)
  weights = jnp.where(nonzero, weights * jax.lax.rsqrt(jnp.where(nonzero, scale, 1.0)), weights)
  weights, residual = flag_non_finite(ok, weights, residual)
  return NashResult(weights, residual, iterations, exact & ok)


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
