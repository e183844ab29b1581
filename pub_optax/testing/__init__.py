"""Test-only references for pub_optax (they need the ``test`` extra, e.g. cvxpy).

Nothing here is imported by :mod:`pub_optax` itself, and importing this package does not
import cvxpy: the references load it when they are constructed.
"""

from pub_optax.testing.nash_ccp import (
  NASH_MTL_MAX_ITER,
  NASH_MTL_RESIDUAL_TOL,
  NASH_MTL_SOLVER_MAX_ITERS,
  NASH_MTL_STEP_TOL,
  CCPResult,
  NashCCP,
  nash_weights_ccp,
)

__all__ = [
  "CCPResult",
  "NashCCP",
  "NASH_MTL_MAX_ITER",
  "NASH_MTL_RESIDUAL_TOL",
  "NASH_MTL_SOLVER_MAX_ITERS",
  "NASH_MTL_STEP_TOL",
  "nash_weights_ccp",
]
