"""pub_optax: Parameter Update Balancing and multi-task optimisation as jitted optax transformations."""

from pub_optax import weightings
from pub_optax.balance import BalanceState, balance, gram_matrix, scale_weights
from pub_optax.finite import apply_if_finite
from pub_optax.grads import value_and_task_grads
from pub_optax.losses import FAMOState, UncertaintyState, famo, uncertainty
from pub_optax.manipulation import adatask, clippy_adam, scale_by_clippy_adam
from pub_optax.methods import METHODS, MethodInfo, make_method, method_names
from pub_optax.pub import pub, pub_adam
from pub_optax.sparse import Lookup, RowSparse, lookup_rows
from pub_optax.weightings.nash import NashResult, nash_weights

__version__ = "0.1.0"

__all__ = [
    "BalanceState",
    "FAMOState",
    "Lookup",
    "METHODS",
    "MethodInfo",
    "NashResult",
    "RowSparse",
    "UncertaintyState",
    "adatask",
    "apply_if_finite",
    "balance",
    "clippy_adam",
    "famo",
    "gram_matrix",
    "lookup_rows",
    "make_method",
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
