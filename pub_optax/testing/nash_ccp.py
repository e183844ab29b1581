r"""Reference Nash weights from the Nash-MTL concave-convex procedure (CCP), solved with cvxpy.

This is an *independent* check of :func:`pub_optax.nash_weights` (damped Newton on the
convex potential ``½αᵀGα − Σ log α``): it solves the same conditions ``α_k (Gα)_k = 1``,
``α > 0`` by a different route, the one of Navon et al. (ICML 2022) that the PUB public
code reuses. It is slow (each iteration is a conic solve on the host) and is meant for
tests and benchmarks only.

The procedure
-------------
With ``φ_k(α) = log α_k + log (Gα)_k`` the Nash conditions read ``φ_k(α) = 0`` for all k.
Nash-MTL writes them as the non-convex problem

  minimise  Φ(α) = Σ_k φ_k(α)   subject to  φ_k(α) ≥ 0 (each a convex set),  α ≥ 0,

whose minimum value 0 is reached exactly at the Nash point. Φ is concave, so CCP replaces
it by its tangent at the current iterate ``α_t`` and solves the convex problem

  minimise  ∇Φ(α_t)·α   subject to  log α_k + log (Gα)_k ≥ 0,

with ``∇Φ(α) = 1/α + G (1/(Gα))``. Every CCP iterate is feasible, Φ decreases, and the
Nash point is a fixed point (its KKT multipliers are all 1).

Two settings are provided:

* **Tight reference** (``NashCCP(K)``, the default): the objective above, G normalised by
  its Frobenius norm ``c = ‖G‖_F`` as Nash-MTL does and the result un-normalised
  (``α = β/√c`` for the solution β of the normalised problem, since ``G → cG`` maps
  ``α → α/√c``), a multiplicative trust region ``α_t/ρ ≤ α ≤ ρ α_t`` (ρ = 4; inactive at
  the fixed point, it keeps the linear subproblem bounded when ∇Φ has negative entries,
  which happens with conflicting tasks), solver tolerances 1e-10, and the stop rule
  ``max_k |α_k (Gα)_k − 1| ≤ tol`` (default 1e-8). It typically converges in 1–4 conic
  solves and agrees with the Newton solver to ~1e-9 relative in float64.
* **Original Nash-MTL settings** (``NashCCP.nash_mtl(K)``), reproducing
  ``methods/weight_methods.py::NashMTL`` of AvivNavon/nash-mtl (the PUB code,
  ``mto_methods/parameter_balancing/pub.py``, copies it):

  - ``G_n = G/‖G‖_F``, but ``c = ‖G‖_F`` is passed into the problem: the constraints
    are ``log(c α_k) + log (G_n α)_k ≥ 0``, i.e. the original-scale conditions
    ``α_k (Gα)_k ≥ 1``, so the returned α already refers to the un-normalised G (no
    rescale needed).
  - Objective ``Σ_k (G_n α)_k + ∇Φ(α_t)·(α − α_t)/c``: the paper's linearised Φ plus
    ``Σ_k (Gα)_k / c``. Both terms carry ``1/c``, but the added one grows like ``√s``
    when G is scaled by s while Φ only shifts, so the fixed point depends on the scale
    of G: it is the Nash point only while the KKT multipliers stay non-negative, i.e.
    ``(J⁻¹ G 1)_k ≥ −1`` with ``J = diag(1/α) + G diag(α)``. Without a trust region
    the linear subproblem can also be unbounded when the tangent has negative entries.
    Both happen with strongly conflicting tasks: on random K = 12..64 problems with
    pairwise cosines down to about −0.5 (Clarabel) we saw unbounded first subproblems,
    after which the original silently keeps its start (ones), and runs that stopped
    by the step test or the 20-iteration budget with ``max_k |α_k (Gα)_k − 1|``
    between 1 and 150. On the milder conflict of
    ``benchmarks/solver.py`` it agrees with the Nash point to a few 1e-6.
  - At most ``NASH_MTL_MAX_ITER = 20`` CCP iterations, each one ECOS solve with
    ``max_iters = 100`` (``NASH_MTL_SOLVER_MAX_ITERS``) and default tolerances (1e-8),
    warm-started from the previous call's α (ones at the first call).
  - Stop after a solve when the solver failed (a bare ``except`` swallows the error),
    or ``‖G_n α_t − 1/(α_t + 1e-10)‖₂ < 1e-3`` (``NASH_MTL_RESIDUAL_TOL``; evaluated
    at the iterate *before* the solve, with the normalised G but the original-scale α,
    so near the Nash point it only fires when ``‖G‖_F ≈ 1``), or
    ``‖α_{t+1} − α_t‖₂ < 1e-6`` (``NASH_MTL_STEP_TOL``, absolute). On stopping it
    returns ``α_t``, the iterate before the last solve.
  - **Not DPP.** The original builds one ``cp.Problem`` with ``cp.Parameter``s, but the
    parameters enter non-affinely (``1/α_t``, ``G α_t``, division by c), so cvxpy
    re-canonicalises the whole problem at every solve: in cost it is rebuilt every CCP
    iteration. ``parameterized=False`` reproduces that problem term for term (one
    constraint per task, as written there); ``parameterized=True`` is the same
    mathematics in DPP form (the tangent and ``Σ (G_n α)`` folded into one parameter
    vector ``w``, ``−log c`` as a parameter), canonicalised once per K.

  ECOS is no longer installed with cvxpy (≥ 1.6); when it is missing Clarabel (cvxpy's
  default exponential-cone solver, same default tolerances) is used with
  ``max_iter = 100``. The solver actually used is in :attr:`NashCCP.solver`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

# Settings of the original Nash-MTL solver (AvivNavon/nash-mtl, NashMTL.__init__ /
# _stop_criteria / solve_optimization).
NASH_MTL_MAX_ITER = 20
NASH_MTL_SOLVER_MAX_ITERS = 100
NASH_MTL_RESIDUAL_TOL = 1e-3
NASH_MTL_STEP_TOL = 1e-6

_TIGHT_SOLVER_TOL = 1e-10
_OBJECTIVES = ("nash", "nash_mtl")
_STOP_RULES = ("residual", "nash_mtl")
_MAX_ITER_KEY = {"ECOS": "max_iters", "CLARABEL": "max_iter", "SCS": "max_iters"}
_TIGHT_OPTIONS = {
  "CLARABEL": dict(
    tol_gap_abs=_TIGHT_SOLVER_TOL,
    tol_gap_rel=_TIGHT_SOLVER_TOL,
    tol_feas=_TIGHT_SOLVER_TOL,
    tol_ktratio=1e-8,
    max_iter=200,
  ),
  "ECOS": dict(
    abstol=_TIGHT_SOLVER_TOL, reltol=_TIGHT_SOLVER_TOL, feastol=_TIGHT_SOLVER_TOL, max_iters=200
  ),
}
# Phase I (only when the start makes ∇Φ undefined): the box is opened this wide.
_PHASE1_WIDTH = 1e6


class CCPResult(NamedTuple):
  """Result of :meth:`NashCCP.solve`.

  Attributes:
    weights: ``(K,)`` float64 weights α for the given (un-normalised) G.
    iterations: number of conic solves (CCP iterations) run.
    residual: ``max_k |α_k (Gα)_k − 1|`` on the given G (scale-free; 0 at the Nash point).
    converged: ``residual ≤ tol`` for the tight rule; for the Nash-MTL rule, that one of
      its stop tests fired (before the iteration budget ran out, without solver failure).
    status: cvxpy status of the last conic solve (or ``"solver_error"``).
  """

  weights: np.ndarray
  iterations: int
  residual: float
  converged: bool
  status: str


def _import_cvxpy():
  try:
    import cvxpy  # pylint: disable=import-outside-toplevel
  except ImportError as err:  # pragma: no cover - exercised with cvxpy hidden
    raise ImportError(
      'pub_optax.testing.NashCCP needs cvxpy; install the test extra: pip install "pub_optax[test]"'
    ) from err
  return cvxpy


def _nash_residual(gram: np.ndarray, alpha: np.ndarray) -> float:
  return float(np.max(np.abs(alpha * (gram @ alpha) - 1.0)))


def _grad_phi(gram_n: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """∇Φ for Φ(α) = Σ_k log α_k + log (G α)_k (invariant to the scale of G)."""
  return 1.0 / alpha + gram_n.T @ (1.0 / (gram_n @ alpha))


class NashCCP:
  """Nash weights by the Nash-MTL concave-convex procedure, one cvxpy problem per K.

  Args:
    num_tasks: K; the problem is built once for this size.
    objective: ``"nash"`` (the paper's linearised Φ, whose fixed point is the Nash point)
      or ``"nash_mtl"`` (the original code's objective, with ``Σ (G_n α)`` added).
    parameterized: True builds a DPP problem (canonicalised once, parameters refilled
      per solve). False reproduces the original's non-DPP problem, re-canonicalised at
      every solve; only available with ``objective="nash_mtl"``.
    max_iter: CCP iteration (conic solve) budget.
    tol: stop when ``max_k |α_k (Gα)_k − 1| ≤ tol`` (``stop_rule="residual"``).
    stop_rule: ``"residual"`` or ``"nash_mtl"`` (the original's tests, see module doc).
    trust_region: ρ > 1 for the box ``α_t/ρ ≤ α ≤ ρ α_t``, or None for no box (the
      original has none).
    solver: cvxpy solver name; None picks ``"CLARABEL"``.
    solver_options: keyword arguments for ``Problem.solve``; None picks tolerances 1e-10
      for the residual rule and the solver's defaults otherwise.

  Raises:
    ImportError: if cvxpy is not installed.

  Example:
    >>> import numpy as np
    >>> from pub_optax.testing import NashCCP
    >>> res = NashCCP(2).solve(np.array([[4.0, 0.0], [0.0, 1.0]]))
    >>> [round(float(w), 6) for w in res.weights], res.converged
    ([0.5, 1.0], True)
  """

  def __init__(
    self,
    num_tasks: int,
    *,
    objective: str = "nash",
    parameterized: bool = True,
    max_iter: int = 100,
    tol: float = 1e-8,
    stop_rule: str = "residual",
    trust_region: float | None = 4.0,
    solver: str | None = None,
    solver_options: Mapping[str, Any] | None = None,
  ):
    cp = _import_cvxpy()
    if int(num_tasks) < 1:
      raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    if objective not in _OBJECTIVES:
      raise ValueError(f"objective must be one of {_OBJECTIVES}, got {objective!r}")
    if stop_rule not in _STOP_RULES:
      raise ValueError(f"stop_rule must be one of {_STOP_RULES}, got {stop_rule!r}")
    if not parameterized and (objective != "nash_mtl" or trust_region is not None):
      raise ValueError(
        "parameterized=False reproduces the original (non-DPP) Nash-MTL problem: it needs "
        "objective='nash_mtl' and trust_region=None"
      )
    if trust_region is not None and not trust_region > 1.0:
      raise ValueError(f"trust_region must be > 1 or None, got {trust_region}")
    if max_iter < 1:
      raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    self._cp = cp
    self.num_tasks = int(num_tasks)
    self.objective = objective
    self.parameterized = bool(parameterized)
    self.max_iter = int(max_iter)
    self.tol = float(tol)
    self.stop_rule = stop_rule
    self.trust_region = trust_region
    self.solver = (solver or "CLARABEL").upper()
    if solver_options is None:
      solver_options = _TIGHT_OPTIONS.get(self.solver, {}) if stop_rule == "residual" else {}
    self.solver_options = dict(solver_options)
    if self.parameterized:
      self._build_dpp()
    else:
      self._build_nash_mtl_literal()

  @classmethod
  def nash_mtl(
    cls, num_tasks: int, *, parameterized: bool = False, solver: str | None = None
  ) -> NashCCP:
    """The original Nash-MTL settings (module doc): 20 CCP iterations, its stop rule,
    ECOS (Clarabel if ECOS is missing) with 100 iterations per solve, no trust region.

    ``parameterized=False`` (default) also reproduces its cost: a non-DPP problem that
    cvxpy re-canonicalises at every solve.
    """
    cp = _import_cvxpy()
    if solver is None:
      solver = "ECOS" if "ECOS" in cp.installed_solvers() else "CLARABEL"
    solver = solver.upper()
    options = {_MAX_ITER_KEY[solver]: NASH_MTL_SOLVER_MAX_ITERS} if solver in _MAX_ITER_KEY else {}
    return cls(
      num_tasks,
      objective="nash_mtl",
      parameterized=parameterized,
      max_iter=NASH_MTL_MAX_ITER,
      stop_rule="nash_mtl",
      trust_region=None,
      solver=solver,
      solver_options=options,
    )

  # -- problem construction -------------------------------------------------------------

  def _build_dpp(self):
    """min w·x  s.t.  log x + log(G_n x) ≥ b  [, lo ≤ x ≤ hi]; every parameter enters DPP."""
    cp, k = self._cp, self.num_tasks
    self._x = cp.Variable(k, nonneg=True)
    self._g = cp.Parameter((k, k))
    self._w = cp.Parameter(k)
    self._b = cp.Parameter()
    constraints = [cp.log(self._x) + cp.log(self._g @ self._x) >= self._b]
    if self.trust_region is not None:
      self._lo = cp.Parameter(k, nonneg=True)
      self._hi = cp.Parameter(k, nonneg=True)
      constraints += [self._x >= self._lo, self._x <= self._hi]
    self._problem = cp.Problem(cp.Minimize(self._w @ self._x), constraints)

  def _build_nash_mtl_literal(self):
    """The original's problem, term for term: parameters enter non-affinely (not DPP)."""
    cp, k = self._cp, self.num_tasks
    self._x = cp.Variable(k, nonneg=True)
    self._prev = cp.Parameter(k)
    self._g = cp.Parameter((k, k))
    self._c = cp.Parameter(1)
    tangent = 1 / self._prev + (1 / (self._g @ self._prev)) @ self._g
    linearised_phi = tangent @ (self._x - self._prev)
    g_x = self._g @ self._x
    constraints = [-cp.log(self._x[i] * self._c) - cp.log(g_x[i]) <= 0 for i in range(k)]
    self._problem = cp.Problem(cp.Minimize(cp.sum(g_x) + linearised_phi / self._c), constraints)

  @property
  def is_dpp(self) -> bool:
    """Whether cvxpy can reuse the canonicalisation across solves."""
    return bool(self._problem.is_dpp())

  # -- one conic solve ----------------------------------------------------------------

  def _conic_solve(self, gram_n, c, prev, *, phase1=False):
    """One CCP subproblem at ``prev``; returns (x or None, status)."""
    cp = self._cp
    if self.parameterized:
      self._g.value = gram_n
      if self.objective == "nash_mtl":
        w = gram_n.sum(axis=0) + _grad_phi(gram_n, prev) / c
        self._b.value = -np.log(c)
      else:
        w = 1.0 / prev if phase1 else _grad_phi(gram_n, prev)
        self._b.value = 0.0
      self._w.value = w / np.linalg.norm(w)  # a positive rescale leaves the argmin alone
      if self.trust_region is not None:
        width = _PHASE1_WIDTH if phase1 else self.trust_region
        self._lo.value = 0.0 * prev if phase1 else prev / width
        self._hi.value = prev * width
    else:
      self._g.value = gram_n
      self._c.value = np.array([c])
      self._prev.value = prev
    self._x.value = prev  # warm start, as the original (ignored by Clarabel)
    try:
      with warnings.catch_warnings():
        # A non-DPP parametrised problem warns on every solve; that is the point here.
        warnings.simplefilter("ignore", UserWarning)
        self._problem.solve(solver=self.solver, warm_start=True, **self.solver_options)
    except cp.error.SolverError:
      return None, "solver_error"
    x = self._x.value
    status = str(self._problem.status)
    if x is None or not np.all(np.isfinite(x)):
      return None, status
    return np.array(x, dtype=np.float64), status

  # -- the procedure ------------------------------------------------------------------

  def solve(self, gram, init=None) -> CCPResult:
    """Runs the CCP on one Gram matrix.

    Args:
      gram: ``(K, K)`` symmetric PSD matrix (any scale; numpy or JAX array).
      init: optional ``(K,)`` positive start, in the scale of ``gram`` (the original warm
        starts from the previous call's α). None: ones for the Nash-MTL objective (its
        first call), ``1/√diag(G)`` moved along its ray onto the feasible set otherwise.

    Returns:
      A :class:`CCPResult` with the weights for ``gram`` itself.
    """
    g = np.asarray(gram, dtype=np.float64)
    k = self.num_tasks
    if g.shape != (k, k):
      raise ValueError(f"gram must have shape ({k}, {k}), got {g.shape}")
    if not np.all(np.isfinite(g)):
      raise ValueError("gram must be finite")
    g = 0.5 * (g + g.T)
    c = float(np.linalg.norm(g))  # Frobenius norm, as torch.norm(GTG) in Nash-MTL
    if not c > 0.0 or np.any(np.diagonal(g) <= 0.0):
      raise ValueError("every task needs a non-zero vector (positive diagonal of gram)")
    gram_n = g / c
    if init is not None:
      init = np.asarray(init, dtype=np.float64)
      if init.shape != (k,) or not np.all(np.isfinite(init) & (init > 0)):
        raise ValueError(f"init must be a finite positive ({k},) vector")

    if self.objective == "nash_mtl":
      # The original works in the original scale (c enters the constraints).
      x0 = np.ones(k) if init is None else init
      x, iterations, converged, status = self._run(gram_n, c, x0)
      alpha = x
    else:
      # Normalised problem in β = α √c, un-normalised at the end.
      if init is None:
        x0 = 1.0 / np.sqrt(np.diagonal(gram_n))
      else:
        x0 = init * np.sqrt(c)
      x, iterations, converged, status = self._run(gram_n, c, x0)
      alpha = x / np.sqrt(c)
    residual = _nash_residual(g, alpha)
    if self.stop_rule == "residual":
      converged = residual <= self.tol
    return CCPResult(alpha, iterations, residual, bool(converged), status)

  def _run(self, gram_n, c, x):
    if self.stop_rule == "nash_mtl":
      return self._run_nash_mtl_rule(gram_n, c, x)
    return self._run_residual_rule(gram_n, c, x)

  def _run_nash_mtl_rule(self, gram_n, c, x):
    """The original loop: stop tests on the iterate before the solve, return that iterate."""
    status = ""
    for it in range(1, self.max_iter + 1):
      new, status = self._conic_solve(gram_n, c, x)
      if new is None:
        return x, it, False, status  # the original's bare except / None value: keep α_t
      stale = np.linalg.norm(gram_n @ x - 1.0 / (x + 1e-10)) < NASH_MTL_RESIDUAL_TOL
      if stale or np.linalg.norm(new - x) < NASH_MTL_STEP_TOL:
        return x, it, True, status
      x = new
    return x, self.max_iter, False, status

  def _run_residual_rule(self, gram_n, c, x):
    scale = c if self.objective == "nash_mtl" else 1.0  # x is α for nash_mtl, β = α√c else
    gx = gram_n @ x
    phase1 = self.objective == "nash" and bool(np.any(gx <= 0.0))
    if self.objective == "nash" and not phase1:
      # Move the start along its ray onto the feasible set, so the trust box meets it.
      x = x * np.max(1.0 / np.sqrt(x * gx))
    status = ""
    for it in range(1, self.max_iter + 1):
      new, status = self._conic_solve(gram_n, c, x, phase1=phase1)
      phase1 = False
      if new is None or np.any(new <= 0.0):
        return x, it, False, status
      step = float(np.max(np.abs(new - x) / x))
      x = new
      if _nash_residual(gram_n * scale, x) <= self.tol:
        return x, it, True, status
      if step <= 1e-15:  # stalled at the solver's precision
        return x, it, False, status
    return x, self.max_iter, False, status


_CACHE: dict = {}


def nash_weights_ccp(gram, init=None, **settings) -> CCPResult:
  """Solves one Gram matrix with a cached :class:`NashCCP` (one problem per K and settings).

  Args:
    gram: ``(K, K)`` symmetric PSD matrix.
    init: optional positive start (see :meth:`NashCCP.solve`).
    **settings: keyword arguments of :class:`NashCCP` (hashable values;
      ``solver_options`` as a dict is accepted).

  Returns:
    A :class:`CCPResult`.

  Example:
    >>> import numpy as np
    >>> from pub_optax.testing import nash_weights_ccp
    >>> res = nash_weights_ccp(np.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> [round(float(w), 6) for w in res.weights]
    [0.57735, 0.57735]
  """
  k = np.shape(gram)[0]
  key_items = []
  for name, value in sorted(settings.items()):
    if isinstance(value, Mapping):
      value = tuple(sorted(value.items()))
    key_items.append((name, value))
  key = (k, tuple(key_items))
  solver = _CACHE.get(key)
  if solver is None:
    solver = _CACHE[key] = NashCCP(k, **settings)
  return solver.solve(gram, init)
