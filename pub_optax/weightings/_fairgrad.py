"""FairGrad: α-fair task weights ``w > 0`` with ``G w = w^(−1/α)``, solved by damped Newton on device.

FairGrad (Ban & Ji 2024) treats the decrease of every task loss as a resource and
maximises the α-fair utility ``Σ_k u_k^(1−α)/(1−α)`` of the decreases ``u_k = g_kᵀd``
(``Σ_k log u_k`` for α = 1). Its optimality conditions on ``d = Σ_k w_k g_k`` are

  (G w)_k = w_k^(−1/α),   w > 0,

and α = 1 is exactly Nash-MTL's ``w_k (G w)_k = 1``; α → 0 tends to linear
scalarisation and α → ∞ to max-min fairness. For α > 0 these are the stationarity
conditions of the strictly convex potential

  φ(w) = ½ wᵀ G w − Σ_k h(w_k),   h'(w) = w^(−1/α)
  (h = log w for α = 1, h = w^(1−1/α) / (1 − 1/α) otherwise),

minimised here by damped Newton with K×K linear algebra only, in the scaled
variables ``w + s∘y`` with ``s_k = (α w_k^(1+1/α))^½`` where the Hessian is
``diag(s) G diag(s) + I`` (every eigenvalue ≥ 1), a backtracking line search that
keeps ``w > 0``, and a fixed iteration budget: no scipy (the published code calls
``scipy.optimize.least_squares``), no host round-trip, jittable and vmappable.

Scale: ``G → cG`` gives ``w → c^(−α/(1+α)) w`` (``c^(−1/2)`` for α = 1); the solve
runs on G divided by its largest diagonal entry and rescales at the end.

Degenerate inputs follow the rule of :func:`~pub_optax.weightings.nash_weights`:

* **Zero tasks** (``G_kk ≤ eps² · max_j G_jj``) are left out of the solve and given
  the mean weight of the others (1 for every task when G is zero).
* **Cancelling tasks** (a positive combination of the task vectors is zero): φ is
  unbounded below; a relative ridge ``G + ridge · diag(G)`` (``ridge`` defaults to
  ``10 · eps``) makes it well posed, with an effect below the solver's tolerance
  for solvable G. ``exact`` is False then.
"""

from __future__ import annotations

import functools
import math
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
from pub_optax.weightings._linalg import finite_gram, flag_non_finite

Array = jax.Array

_LINE_SEARCH_STEPS = 40  # step sizes 1, 1/2, ..., 2^-39
_QUADRATIC_REGION = 1e-3  # squared Newton decrement below which a full positive step is taken


class FairGradResult(NamedTuple):
  """Result of :func:`fairgrad_weights`.

  Attributes:
    weights: ``(K,)`` positive, finite task weights.
    residual: ``‖Gw − w^(−1/α)‖ / ‖w^(−1/α)‖`` over the non-zero tasks, on the given
      G (without the ridge); around machine precision when a solution exists.
    iterations: Newton steps taken.
    exact: True when w solves the conditions for the given G: no zero task, Newton
      converged, ``residual ≤ 8·sqrt(eps)`` and the ridge's share is below that too.
  """

  weights: Array
  residual: Array
  iterations: Array
  exact: Array


def check_alpha(alpha: float) -> float:
  """``alpha`` as a float; ValueError unless it is positive and finite."""
  alpha = float(alpha)
  if not (math.isfinite(alpha) and alpha > 0.0):
    raise ValueError(f"alpha must be a positive finite number, got {alpha}")
  return alpha


class _Problem(NamedTuple):
  g_active: Array  # unit-scale G restricted to the non-zero tasks
  g_solve: Array  # g_active plus the ridge; 1 on the diagonal of zero tasks
  active: Array  # (K,) bool
  sq_norms: Array  # (K,) unit-scale G_kk


def _problem(gn: Array, ridge: float) -> _Problem:
  eps = jnp.finfo(gn.dtype).eps
  sq_norms = jnp.maximum(jnp.diagonal(gn), 0.0)
  active = sq_norms > (eps**2) * jnp.max(sq_norms)
  g_active = jnp.where(active[:, None] & active[None, :], gn, 0.0)
  g_solve = g_active + jnp.diag(jnp.where(active, ridge * sq_norms, 1.0))
  return _Problem(g_active, g_solve, active, sq_norms)


def _h(w: Array, alpha: float) -> Array:
  """The concave utility with ``h'(w) = w^(−1/α)``."""
  if alpha == 1.0:
    return jnp.log(w)
  p = 1.0 - 1.0 / alpha
  return w**p / p


def _potential(g: Array, w: Array, alpha: float) -> Array:
  return 0.5 * jnp.einsum("...i,ij,...j->...", w, g, w) - jnp.sum(_h(w, alpha), axis=-1)


def _rescale(g: Array, v: Array, alpha: float) -> Array:
  """The best multiple ``t v`` of a positive v: ``t^(1+1/α) = Σ v^(1−1/α) / vᵀGv``."""
  ratio = jnp.sum(v ** (1.0 - 1.0 / alpha)) / (v @ g @ v)
  return v * ratio ** (alpha / (1.0 + alpha))


def _start(p: _Problem, init: Array | None, alpha: float) -> Array:
  """The exact solution for diagonal G, ``G_kk^(−α/(1+α))``, or the warm start, rescaled."""
  cold = _rescale(p.g_solve, jnp.diagonal(p.g_solve) ** (-alpha / (1.0 + alpha)), alpha)
  if init is None:
    return cold
  v = jnp.asarray(init, p.g_solve.dtype)
  usable = jnp.all(jnp.isfinite(v) & (v > 0))
  v = jnp.where(usable, v, 1.0)
  warm = _rescale(p.g_solve, v / jnp.max(v), alpha)
  usable = usable & jnp.all(jnp.isfinite(warm) & (warm > 0))
  return jnp.where(usable, warm, cold)


def _newton_step(g: Array, w: Array, alpha: float) -> tuple[Array, Array]:
  """One damped Newton step on φ; returns ``(w, λ²)`` with λ² the squared decrement at w."""
  k = w.shape[0]
  eps = jnp.finfo(w.dtype).eps
  eye = jnp.eye(k, dtype=w.dtype)
  grad = g @ w - w ** (-1.0 / alpha)
  s = jnp.sqrt(alpha * w ** (1.0 + 1.0 / alpha))  # 1/sqrt of the barrier's curvature
  hess = s[:, None] * g * s[None, :] + eye
  hess = hess + (k * eps * jnp.max(jnp.diagonal(hess))) * eye
  y = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(hess, lower=True), s * grad)
  finite = jnp.all(jnp.isfinite(y))
  delta = jnp.where(finite, s * y, 0.0)
  lam2 = jnp.maximum(-(grad @ delta), 0.0)
  steps = 0.5 ** jnp.arange(_LINE_SEARCH_STEPS, dtype=w.dtype)
  trial = w[None, :] + steps[:, None] * delta[None, :]
  positive = jnp.all(trial > 0.0, axis=1)
  values = _potential(g, jnp.where(trial > 0.0, trial, 1.0), alpha)
  armijo = values <= _potential(g, w, alpha) - 0.25 * steps * lam2
  accept = positive & (armijo | (lam2 <= _QUADRATIC_REGION))
  first = jnp.argmax(accept)
  t = jnp.where(jnp.any(accept), steps[first], 0.0)
  return w + t * delta, jnp.where(finite, lam2, -1.0)


def _newton(p: _Problem, w0: Array, alpha: float, *, max_iter: int, tol: Array):
  def step(carry):
    w, it, _ = carry
    w, lam2 = _newton_step(p.g_solve, w, alpha)
    return w, it + 1, lam2

  def keep_going(carry):
    _, it, lam2 = carry
    return (it < max_iter) & (lam2 > tol)

  init = (w0, jnp.zeros((), jnp.int32), jnp.array(jnp.inf, w0.dtype))
  return jax.lax.while_loop(keep_going, step, init)


@functools.partial(jax.jit, static_argnames=("alpha", "max_iter", "ridge"))
def _solve(gram, init, *, alpha, max_iter, ridge):
  dtype = solve_dtype(gram)
  eps = jnp.finfo(dtype).eps
  ridge = 10.0 * eps if ridge is None else ridge
  ok, safe = finite_gram(jnp.asarray(gram, dtype))
  g = symmetric_gram(safe)
  scale = jnp.max(jnp.maximum(jnp.diagonal(g), 0.0))
  nonzero = scale > jnp.finfo(dtype).tiny
  p = _problem(jnp.where(nonzero, g / jnp.where(nonzero, scale, 1.0), 0.0), ridge)
  tol = jnp.asarray(eps, dtype)
  w, iterations, lam2 = _newton(p, _start(p, init, alpha), alpha, max_iter=max_iter, tol=tol)
  active = p.active
  inner = jnp.where(active, w, 1.0)
  target = jnp.where(active, inner ** (-1.0 / alpha), 0.0)
  resid = jnp.where(active, p.g_active @ jnp.where(active, w, 0.0) - target, 0.0)
  residual = jnp.linalg.norm(resid) / jnp.maximum(jnp.linalg.norm(target), jnp.finfo(dtype).tiny)
  n_active = jnp.sum(active)
  fill = jnp.where(n_active > 0, jnp.sum(jnp.where(active, w, 0.0)) / jnp.maximum(n_active, 1), 1.0)
  weights = jnp.where(active, w, fill)
  tol_exact = 8.0 * jnp.sqrt(eps)
  ridge_share = ridge * jnp.max(jnp.where(active, p.sq_norms * inner ** (1.0 + 1.0 / alpha), 0.0))
  converged = (lam2 >= 0.0) & (lam2 <= tol)
  exact = jnp.all(active) & converged & (residual <= tol_exact) & (ridge_share <= tol_exact)
  # w(cG) = c^(−α/(1+α)) w(G): undo the unit scaling.
  factor = jnp.where(nonzero, jnp.where(nonzero, scale, 1.0) ** (-alpha / (1.0 + alpha)), 1.0)
  weights, residual = flag_non_finite(ok, weights * factor, residual)
  return FairGradResult(weights, residual, iterations, exact & ok)


def fairgrad_weights(
  gram: Array,
  alpha: float = 1.0,
  init: Array | None = None,
  *,
  max_iter: int = 64,
  ridge: float | None = None,
) -> FairGradResult:
  r"""Solves ``(G w)_k = w_k^(−1/α)`` for ``w > 0`` (FairGrad's α-fair weights).

  Args:
    gram: ``(K, K)`` Gram matrix of the task vectors, any scale.
    alpha: fairness level α > 0 (static). 1 is Nash-MTL (proportional fairness);
      larger values favour the worst-off task more. The paper sweeps
      α ∈ {0.5, 1, 2, ...} per benchmark and has no single default; 1 here.
    init: optional ``(K,)`` warm start, rescaled along its ray before Newton
      starts; ignored when non-positive or non-finite.
    max_iter: Newton iteration budget (static); Newton stops once the squared
      Newton decrement reaches machine precision.
    ridge: relative ridge for cancelling tasks (module docstring); ``None`` uses
      ``10 · eps``.

  Returns:
    A :class:`FairGradResult`. Scaling ``G → cG`` scales the weights by
    ``c^(−α/(1+α))``. NaN weights and an infinite residual when G has a
    non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import fairgrad_weights
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal, norms 2 and 1
    >>> res = fairgrad_weights(gram, alpha=0.5)  # G_kk w_k = w_k^(-2): w_k = G_kk^(-1/3)
    >>> [round(float(w), 4) for w in res.weights], bool(res.exact)
    ([0.63, 1.0], True)

  References:
    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.
  """
  check_gram(gram)
  alpha = check_alpha(alpha)
  if init is not None and jnp.shape(init) != (gram.shape[0],):
    raise ValueError(
      f"init must have shape ({gram.shape[0]},) to match gram, got {jnp.shape(init)}"
    )
  return _solve(gram, init, alpha=alpha, max_iter=int(max_iter), ridge=ridge)


def fairgrad(alpha: float = 1.0, *, max_iter: int = 64, ridge: float | None = None) -> Weighting:
  """FairGrad as a :class:`~pub_optax.weightings.Weighting` named ``"fairgrad"``, warm-started.

  Args:
    alpha, max_iter, ridge: see :func:`fairgrad_weights`.

  Returns:
    A Weighting whose state is the previous weights (zeros before the first solve:
    a cold start); its residual is :attr:`FairGradResult.residual`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import fairgrad
    >>> w = fairgrad(alpha=1.0)  # Nash-MTL's weights
    >>> res = w.weigh(jnp.array([[4.0, 0.0], [0.0, 1.0]]), w.init(2, jnp.float32), None)
    >>> [round(float(x), 4) for x in res.weights]
    [0.5, 1.0]

  References:
    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.
  """
  alpha = check_alpha(alpha)

  def init(num_tasks, dtype):
    return jnp.zeros((num_tasks,), jnp.promote_types(dtype, jnp.float32))

  def weigh(gram, state, task_losses=None):
    del task_losses
    res = fairgrad_weights(gram, alpha, init=state, max_iter=max_iter, ridge=ridge)
    weights = res.weights.astype(state.dtype)
    return WeightingResult(weights, weights, res.residual.astype(state.dtype))

  return Weighting(init=init, weigh=weigh, name="fairgrad")
