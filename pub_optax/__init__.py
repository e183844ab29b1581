"""pub_optax: Parameter Update Balancing and multi-task optimisation as jitted optax transformations.

The public API is listed here and nowhere else; modules whose names start with an underscore
are implementation details. Subpackages: :mod:`pub_optax.weightings` (Gram matrix -> task
weights), :mod:`pub_optax.ranking` (Flax NNX ranking models, data, the ``pub-optax`` command),
:mod:`pub_optax.vision` (Multi-Fashion), :mod:`pub_optax.toy` (the paper's toy problem) and
:mod:`pub_optax.testing` (test-only references).
"""

from pub_optax import weightings
from pub_optax._balance import (
  BalanceDiagnostics,
  BalanceState,
  Commit,
  Level,
  Lookahead,
  Scaling,
  balance,
  balance_state,
  scale_by_balance,
  scale_weights,
)
from pub_optax._finite import apply_if_finite
from pub_optax._grads import value_and_task_grads
from pub_optax._gram import gram_matrix
from pub_optax._losses import FAMOState, UncertaintyState, famo, uncertainty
from pub_optax._manipulation import adatask, clip_factors, clippy_adam, scale_by_clippy_adam
from pub_optax._masks import resolve_shared
from pub_optax._methods import METHODS, MethodInfo, make_method, method_names
from pub_optax._per_task import MultiStepsState, multi_steps, per_task
from pub_optax._pub import pub, pub_adam
from pub_optax._sparse import Lookup, RowSparse, lookup_rows
from pub_optax._training import StepOutput, make_train_step
from pub_optax.weightings._nash import NashResult, nash_weights

__version__ = "0.2.0.dev0"

__all__ = [
  "BalanceDiagnostics",
  "Commit",
  "Lookahead",
  "per_task",
  "multi_steps",
  "MultiStepsState",
  "resolve_shared",
  "scale_by_balance",
  "balance_state",
  "Scaling",
  "Level",
  "METHODS",
  "BalanceState",
  "FAMOState",
  "Lookup",
  "MethodInfo",
  "NashResult",
  "RowSparse",
  "StepOutput",
  "UncertaintyState",
  "adatask",
  "apply_if_finite",
  "balance",
  "clip_factors",
  "clippy_adam",
  "famo",
  "gram_matrix",
  "lookup_rows",
  "make_method",
  "make_train_step",
  "method_names",
  "nash_weights",
  "pub",
  "pub_adam",
  "scale_by_clippy_adam",
  "scale_weights",
  "uncertainty",
  "value_and_task_grads",
  "weightings",
]
